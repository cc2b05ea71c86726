//! `keel demo`: keel's main job on temporary files, and what it proved.
//!
//! Every capability adds a chapter; each chapter checks what it claims and
//! fails the demo (non-zero exit) if the check fails.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use keel_disk::sim::CrashMode;
use keel_disk::{BlockDevice, SimDisk, SimRng, SECTOR_SIZE};
use keel_raid::{CreateSpec, Layout, Level, Volume, VolumeOptions, VolumeState, BLOCK_SIZE};

use crate::util::mib_per_sec;

#[derive(Args)]
pub struct DemoArgs {
    /// Work in this directory instead of a temporary one (kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed for the random data, bit flips and crashes (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

const VOLUME_MIB: u64 = 64;
const DATA_MIB: u64 = 48;

fn options() -> VolumeOptions {
    VolumeOptions {
        background_rebuild: false,
        ..VolumeOptions::default()
    }
}

fn read_all(volume: &Volume, blocks: u64) -> anyhow::Result<Vec<u8>> {
    let mut out = vec![0u8; blocks as usize * BLOCK_SIZE];
    for (i, piece) in out.chunks_mut(256 * BLOCK_SIZE).enumerate() {
        volume.read(i as u64 * 256, piece)?;
    }
    Ok(out)
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let temp;
    let dir: PathBuf = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("cannot make a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let started = Instant::now();
    println!(
        "keel demo (seed {seed}; replay with --seed {seed}) in {}",
        dir.display()
    );
    raid_chapter(&dir.join("raid5"), seed)?;
    crash_chapter(seed)?;
    cache_chapter(seed)?;
    journal_chapter(seed)?;
    println!(
        "\nall checks passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn raid_chapter(dir: &Path, seed: u64) -> anyhow::Result<()> {
    println!("\n== RAID-5 survives bit rot and a lost disk ==");
    let spec = CreateSpec {
        level: Level::Raid5,
        layout: Layout::LeftSymmetric,
        size_bytes: VOLUME_MIB << 20,
        chunk_bytes: 64 << 10,
    };
    let volume = Volume::create_dir(dir, &spec, 4, 1, &[], options())?;
    let data_start = volume.member_geometry().data_start();
    let member_blocks = volume.member_geometry().data_blocks;
    let blocks = (DATA_MIB << 20) / BLOCK_SIZE as u64;
    let mut rng = SimRng::new(seed);
    let mut data = vec![0u8; blocks as usize * BLOCK_SIZE];
    rng.fill(&mut data);
    let t = Instant::now();
    for (i, piece) in data.chunks(256 * BLOCK_SIZE).enumerate() {
        volume.write(i as u64 * 256, piece)?;
    }
    volume.close()?;
    println!(
        "created raid5 on 4 disks + 1 spare ({VOLUME_MIB} MiB usable), wrote {DATA_MIB} MiB of random data at {:.0} MiB/s, flushed",
        mib_per_sec(DATA_MIB << 20, t.elapsed())
    );

    // Bit rot: flip bits directly in two member image files.
    // Rot on two disks, never in the same stripe row: one lost copy per row
    // is what RAID-5 can repair (two in one row is a double fault, reported).
    let mut flipped = 0;
    for (parity, disk) in ["disk1.img", "disk3.img"].into_iter().enumerate() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(disk))?;
        for _ in 0..32 {
            let block = data_start + rng.below(member_blocks / 2) * 2 + parity as u64;
            let byte = block * BLOCK_SIZE as u64 + rng.below(BLOCK_SIZE as u64);
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, byte)?;
            b[0] ^= 1 << rng.below(8);
            file.write_all_at(&b, byte)?;
            flipped += 1;
        }
        file.sync_all()?;
    }
    let volume = Volume::open_dir(dir, options())?;
    let back = read_all(&volume, blocks)?;
    ensure!(back == data, "data read back after bit rot differs");
    let repaired_on_read = volume.status().repaired_blocks;
    let report = volume.scrub(|_, _| {})?;
    ensure!(
        report.unrepairable_blocks == 0,
        "scrub left unrepairable blocks: {report:?}"
    );
    println!(
        "flipped {flipped} bits in disk1.img and disk3.img: read back identical ({} blocks repaired on read), scrub repaired {} more and found {} parity mismatches",
        repaired_on_read,
        report.repaired_blocks,
        report.parity_mismatches
    );
    volume.close()?;

    // A lost disk.
    std::fs::remove_file(dir.join("disk2.img"))?;
    let volume = Volume::open_dir(dir, options())?;
    let state = volume.status().state;
    let back = read_all(&volume, blocks)?;
    ensure!(
        back == data,
        "data read back from the degraded volume differs"
    );
    println!("deleted disk2.img: assembled {state:?} (spare took its place), read back identical by reconstruction");
    let t = Instant::now();
    volume.rebuild(|_, _| {})?;
    let rebuilt = member_blocks * BLOCK_SIZE as u64;
    ensure!(
        volume.status().state == VolumeState::Healthy,
        "not healthy after rebuild"
    );
    let back = read_all(&volume, blocks)?;
    ensure!(back == data, "data read back after rebuild differs");
    println!(
        "rebuilt the spare ({} MiB) at {:.0} MiB/s: volume Healthy, read back identical",
        rebuilt >> 20,
        mib_per_sec(rebuilt, t.elapsed())
    );
    volume.close()?;
    Ok(())
}

/// Crashes a RAID-5 volume on simulated disks in the middle of partial-stripe
/// writes, many times, then loses a disk and checks every block.
fn crash_chapter(seed: u64) -> anyhow::Result<()> {
    println!("\n== RAID-5 crashes mid-write, then loses a disk (simulated power failures) ==");
    let rounds = 200;
    let mut checked_blocks = 0u64;
    let mut in_flight_blocks = 0u64;
    let blocks = 256u64;
    for round in 0..rounds {
        let seed = seed.wrapping_add(round);
        let spec = CreateSpec {
            level: Level::Raid5,
            layout: Layout::LeftSymmetric,
            size_bytes: blocks * BLOCK_SIZE as u64,
            chunk_bytes: 2 * BLOCK_SIZE as u64,
        };
        let members = 4;
        let total = spec.member_geometry(members).total_blocks();
        let disks: Vec<Arc<SimDisk>> = (0..members)
            .map(|i| {
                Arc::new(SimDisk::new(
                    &format!("sim{i}"),
                    BLOCK_SIZE,
                    total,
                    seed + i as u64,
                ))
            })
            .collect();
        let as_dev = |d: &Arc<SimDisk>| (d.name().to_string(), d.clone() as Arc<dyn BlockDevice>);
        let volume = Volume::create(
            "sim",
            &spec,
            disks.iter().map(as_dev).collect(),
            vec![],
            true,
            options(),
        )?;
        let mut rng = SimRng::new(seed);
        let mut synced = vec![0u8; blocks as usize * BLOCK_SIZE];
        rng.fill(&mut synced);
        volume.write(0, &synced)?;
        volume.sync()?;
        let mut versions: Vec<Vec<Vec<u8>>> = (0..blocks as usize)
            .map(|b| vec![synced[b * BLOCK_SIZE..(b + 1) * BLOCK_SIZE].to_vec()])
            .collect();
        for _ in 0..10 {
            let start = rng.below(blocks);
            let len = 1 + rng.below((blocks - start).min(3));
            let mut data = vec![0u8; len as usize * BLOCK_SIZE];
            rng.fill(&mut data);
            volume.write(start, &data)?;
            for i in 0..len as usize {
                versions[start as usize + i]
                    .push(data[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE].to_vec());
            }
        }
        let rebooted: Vec<Arc<SimDisk>> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Arc::new(d.reboot(d.crash(CrashMode::Random, seed ^ (i as u64 + 1)), seed))
            })
            .collect();
        drop(volume);
        let volume = Volume::assemble(
            "sim",
            rebooted
                .iter()
                .map(|d| (d.name().to_string(), Ok(d.clone() as Arc<dyn BlockDevice>)))
                .collect(),
            options(),
        )?;
        rebooted[rng.below(members as u64) as usize].fail();
        let back = read_all(&volume, blocks)?;
        for (b, candidates) in versions.iter().enumerate() {
            let got = &back[b * BLOCK_SIZE..(b + 1) * BLOCK_SIZE];
            checked_blocks += 1;
            if candidates.len() > 1 {
                in_flight_blocks += 1;
            }
            for (s, sector) in got.chunks(SECTOR_SIZE).enumerate() {
                let span = s * SECTOR_SIZE..(s + 1) * SECTOR_SIZE;
                ensure!(
                    candidates.iter().any(|c| c[span.clone()] == *sector),
                    "round {round} (seed {seed}): block {b} sector {s} holds data never written"
                );
            }
            if candidates.len() == 1 {
                ensure!(
                    got == &candidates[0][..],
                    "round {round} (seed {seed}): synced block {b} changed"
                );
            }
        }
    }
    println!(
        "{rounds} crashes during partial-stripe writes (each disk kept a random, torn subset of its unflushed writes),"
    );
    println!(
        "resync from the write-intent bitmap, then one disk lost: {checked_blocks} blocks checked, every synced block intact,"
    );
    println!("{in_flight_blocks} blocks written at the crash hold old or new sectors only; no block reconstructed from stale parity");
    Ok(())
}

/// The lecture's bank transfer on the redo journal: every transfer debits one
/// account block and credits another in one transaction. The run is recorded
/// on a simulated disk and crashed at every write boundary (plus random torn
/// subsets of the unflushed writes); after each crash the journal recovers
/// and the balances must be exactly those after some prefix of the transfers,
/// at least every acknowledged one, never half a transfer.
fn journal_chapter(seed: u64) -> anyhow::Result<()> {
    use keel_crashtest::{enumerate, CrashConfig, RecordingDisk};
    use keel_journal::{format_log, Journal, LogRegion, WriteBackStore};

    println!("\n== Redo journal: bank transfers, crashed at every write ==");
    const ACCOUNTS: u64 = 8;
    const TRANSFERS: usize = 24;
    const START_BALANCE: u64 = 1_000;
    let region = LogRegion {
        first_block: 0,
        block_count: 48,
    };
    let home_first = region.block_count;
    let block = |balance: u64| {
        let mut image = vec![0u8; BLOCK_SIZE];
        image[..8].copy_from_slice(&balance.to_le_bytes());
        image
    };
    let balance_of = |image: &[u8]| u64::from_le_bytes(image[..8].try_into().expect("8 bytes"));

    let sim = SimDisk::new("bank", BLOCK_SIZE, home_first + ACCOUNTS, seed);
    format_log(&sim, region)?;
    {
        let store = WriteBackStore::with_region(&sim, home_first, ACCOUNTS);
        let (journal, _) = Journal::open(&sim, region, store)?;
        let mut opening = journal.begin();
        for account in 0..ACCOUNTS {
            opening.write(account, &block(START_BALANCE))?;
        }
        opening.commit()?;
        journal.close()?;
    }
    let disk = RecordingDisk::new(sim);
    let mut rng = SimRng::new(seed);
    let mut balances = vec![START_BALANCE; ACCOUNTS as usize];
    // after[k] = balances after the first k transfers; acknowledged[k] = op
    // count when transfer k's commit returned; started[k] = when it began.
    let mut after = vec![balances.clone()];
    let mut started = Vec::new();
    let mut acknowledged = Vec::new();
    {
        let store = WriteBackStore::with_region(&disk, home_first, ACCOUNTS);
        let (journal, _) = Journal::open(&disk, region, store)?;
        for transfer in 0..TRANSFERS {
            let from = rng.below(ACCOUNTS) as usize;
            let to = (from + 1 + rng.below(ACCOUNTS - 1) as usize) % ACCOUNTS as usize;
            let amount = rng.below(balances[from] + 1);
            balances[from] -= amount;
            balances[to] += amount;
            let mut transaction = journal.begin();
            transaction.write(from as u64, &block(balances[from]))?;
            transaction.write(to as u64, &block(balances[to]))?;
            started.push(disk.op_count());
            transaction.commit()?;
            acknowledged.push(disk.op_count());
            after.push(balances.clone());
            if transfer % 7 == 6 {
                journal.checkpoint()?;
            }
        }
    }
    let recording = disk.finish();
    let total = START_BALANCE * ACCOUNTS;
    let config = CrashConfig {
        seed,
        random_states_per_point: 16,
        only_point: None,
    };
    let report = enumerate(&recording, &config, |state| {
        let device = keel_disk::MemDisk::from_image("bank", BLOCK_SIZE, state.image.to_vec());
        let store = WriteBackStore::with_region(&device, home_first, ACCOUNTS);
        let (journal, _) = Journal::open(&device, region, store).map_err(|e| format!("recovery failed: {e}"))?;
        let mut now = Vec::new();
        let mut buf = vec![0u8; BLOCK_SIZE];
        for account in 0..ACCOUNTS {
            journal.read(account, &mut buf).map_err(|e| e.to_string())?;
            now.push(balance_of(&buf));
        }
        let sum: u64 = now.iter().sum();
        if sum != total {
            return Err(format!("money was created or destroyed: total {sum}, expected {total}"));
        }
        let done = acknowledged.iter().filter(|&&at| at <= state.point).count();
        let begun = started.iter().filter(|&&at| at < state.point).count();
        if !(done..=begun).any(|k| after[k] == now) {
            return Err(format!(
                "balances {now:?} match no prefix of {done}..={begun} transfers (an acknowledged transfer lost, or half applied)"
            ));
        }
        Ok(())
    })
    .map_err(|failure| anyhow::anyhow!("{failure}"))?;
    println!(
        "{TRANSFERS} transfers between {ACCOUNTS} accounts, each one transaction over two blocks; {} crash points x lose-all/keep-all/16 torn subsets = {} crash states recovered:",
        report.crash_points, report.states
    );
    println!("in every one the total is {total}, every acknowledged transfer is there, and no transfer is half applied");
    Ok(())
}

/// The lecture's failure case for LRU: `find . -exec grep` reads everything
/// once and flushes the working set. The same accesses go through the real
/// cache with LRU, with LRU plus the use-once hint on the scan, and with
/// keel's default policy; the hot set's hit ratio after the scan shows who
/// kept it.
fn cache_chapter(seed: u64) -> anyhow::Result<()> {
    use keel_cache::{Cache, CacheConfig, PolicyKind, ReadHint};

    println!("\n== Buffer cache: a working set survives `find . -exec grep` ==");
    println!("(real cache, 1000 blocks, hot set of 500 read 10 times, then a scan of 10,000; read-ahead off)");
    const CAPACITY: u64 = 1_000;
    const HOT: u64 = 500;
    const SCAN: u64 = 10 * CAPACITY;
    let disk: Arc<dyn BlockDevice> = Arc::new(keel_disk::MemDisk::new(BLOCK_SIZE, HOT + SCAN));
    let mut lines = Vec::new();
    for (label, policy, scan_hint) in [
        ("LRU", PolicyKind::Lru, ReadHint::Normal),
        (
            "LRU + use-once hint on the scan",
            PolicyKind::Lru,
            ReadHint::UseOnce,
        ),
        ("keel default", PolicyKind::default(), ReadHint::Normal),
    ] {
        let cache = Cache::new(
            disk.clone(),
            CacheConfig {
                capacity_bytes: CAPACITY * BLOCK_SIZE as u64,
                policy,
                background_flusher: false,
                // This chapter is about replacement; read-ahead (on by
                // default) would add background threads and make the run
                // depend on their timing.
                read_ahead: keel_cache::ReadAheadConfig {
                    enabled: std::env::var("KEEL_DEMO_READAHEAD").is_ok(),
                    ..keel_cache::ReadAheadConfig::default()
                },
                ..CacheConfig::default()
            },
        )?;
        let mut rng = SimRng::new(seed);
        let mut buf = vec![0u8; BLOCK_SIZE];
        for _ in 0..HOT * 10 {
            cache.read_into(rng.below(HOT), ReadHint::Normal, &mut buf)?;
        }
        for block in HOT..HOT + SCAN {
            cache.read_into(block, scan_hint, &mut buf)?;
        }
        cache.wait_for_read_ahead();
        let before = cache.stats();
        for block in 0..HOT {
            cache.read_into(block, ReadHint::Normal, &mut buf)?;
        }
        let after = cache.stats();
        let hot_hit_ratio = (after.hits - before.hits) as f64 / HOT as f64;
        lines.push((label, hot_hit_ratio));
    }
    for (label, ratio) in &lines {
        println!("{label:<34} hot-set hit ratio after a scan of 10x the cache: {ratio:.2}");
    }
    let default = lines.last().map(|(_, r)| *r).unwrap_or(0.0);
    ensure!(
        default >= 0.9,
        "the default policy lost the working set to a scan ({default:.2})"
    );
    Ok(())
}
