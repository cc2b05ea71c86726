//! Crash enumeration of the journal: every crash point of recorded
//! workloads, with lose-all, keep-all and seeded random torn subsets of the
//! unflushed writes; after each, recover and check the journal invariant:
//!
//! * every transaction whose commit returned is fully present;
//! * every transaction whose commit had not begun is fully absent;
//! * the one in flight is fully present or fully absent, never partly.
//!
//! Some states also crash again during recovery and recover once more (the
//! result must not change), and some commit a new transaction after recovery
//! and reopen (the new epoch must not be confused by the debris).
//!
//! Two layouts: log and home blocks in two regions of one device, and the
//! log on its own device with home blocks on another (a crash point then
//! cuts both devices at the same instant).
//!
//! Replay a failure with `KEEL_SEED=<seed> KEEL_CRASH_POINT=<point>`;
//! soak with `KEEL_CRASH_SEEDS=<n>` (more workloads) and
//! `KEEL_CRASH_STATES=<n>` (more random states per point).

use std::collections::BTreeMap;
use std::sync::Mutex;

use keel_crashtest::{crash_during_set, enumerate_set, CrashConfig, CrashReport, RecordingSet};
use keel_disk::{BlockDevice, MemDisk, SimDisk, SimRng};
use keel_journal::{format_log_with_epoch, Journal, JournalError, LogRegion, WriteBackStore};

const BLOCK: usize = 1024;
const LOG_REGION: LogRegion = LogRegion {
    first_block: 0,
    block_count: 41,
};
const HOME_FIRST: u64 = 41;
const HOME_BLOCKS: u64 = 32;

/// Where the log and the home blocks live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Device 0: log in blocks 0..41, home blocks 41..73.
    OneDevice,
    /// Device 0: the log (41 blocks); device 1: the home blocks (32).
    TwoDevices,
}

impl Layout {
    fn device_blocks(self) -> Vec<u64> {
        match self {
            Layout::OneDevice => vec![HOME_FIRST + HOME_BLOCKS],
            Layout::TwoDevices => vec![LOG_REGION.block_count, HOME_BLOCKS],
        }
    }

    /// (device, block) of home block `block`.
    fn home_location(self, block: u64) -> (usize, u64) {
        match self {
            Layout::OneDevice => (0, HOME_FIRST + block),
            Layout::TwoDevices => (1, block),
        }
    }

    fn open<D: BlockDevice>(
        self,
        devices: &[D],
    ) -> Result<Journal<&D, WriteBackStore<&D>>, JournalError> {
        let store = match self {
            Layout::OneDevice => WriteBackStore::with_region(&devices[0], HOME_FIRST, HOME_BLOCKS),
            Layout::TwoDevices => WriteBackStore::new(&devices[1]),
        };
        Journal::open(&devices[0], LOG_REGION, store).map(|(journal, _)| journal)
    }
}

/// One committed (or attempted) transaction of the workload.
#[derive(Clone, Debug)]
struct Attempt {
    /// Which writer (thread) issued it; a writer's attempts are sequential.
    writer: usize,
    writes: Vec<(u64, Vec<u8>)>,
    /// Blocks freed by it: their contents no longer matter.
    revokes: Vec<u64>,
    /// Ops recorded before commit was called.
    started: u64,
    /// Ops recorded after commit returned (u64::MAX if it never returned).
    acknowledged: u64,
}

fn tagged_image(rng: &mut SimRng, attempt: u32, block: u64) -> Vec<u8> {
    let mut image = vec![0u8; BLOCK];
    rng.fill(&mut image);
    image[0..4].copy_from_slice(&attempt.to_le_bytes());
    image[4..12].copy_from_slice(&block.to_le_bytes());
    // Now and then an image that looks like a log header, to exercise escaping.
    if rng.below(16) == 0 {
        image[0..4].copy_from_slice(b"KJNL");
    }
    image
}

/// Runs a workload of `writers` threads, each owning `blocks_per_writer`
/// home blocks, `attempts_per_writer` transactions each.
fn record_workload(
    layout: Layout,
    seed: u64,
    writers: usize,
    attempts_per_writer: u32,
) -> (keel_crashtest::SetRecording, Vec<Attempt>) {
    let sims: Vec<SimDisk> = layout
        .device_blocks()
        .into_iter()
        .enumerate()
        .map(|(index, blocks)| SimDisk::new(&format!("crash{index}"), BLOCK, blocks, seed))
        .collect();
    format_log_with_epoch(&sims[0], LOG_REGION, 1).unwrap();
    let set = RecordingSet::new(sims);
    let attempts = Mutex::new(Vec::new());
    {
        let journal = layout.open(set.disks()).expect("open on a fresh log");
        let blocks_per_writer = HOME_BLOCKS / writers as u64;
        std::thread::scope(|scope| {
            for writer in 0..writers {
                let journal = &journal;
                let set = &set;
                let attempts = &attempts;
                scope.spawn(move || {
                    let mut rng = SimRng::new(seed ^ ((writer as u64 + 1) * 0x51ED));
                    let first = writer as u64 * blocks_per_writer;
                    let mut number = 0;
                    while number < attempts_per_writer {
                        // Now and then several transactions committed as one
                        // group by one thread (deterministic grouping).
                        let batch = if rng.below(4) == 0 {
                            2 + rng.below(3)
                        } else {
                            1
                        };
                        let mut txns = Vec::new();
                        let mut planned = Vec::new();
                        for _ in 0..batch {
                            let tag = (writer as u32) << 16 | number;
                            number += 1;
                            let count = 1 + rng.below(4);
                            let mut txn = journal.begin();
                            let mut writes = BTreeMap::new();
                            for _ in 0..count {
                                let block = first + rng.below(blocks_per_writer);
                                let image = tagged_image(&mut rng, tag, block);
                                txn.write(block, &image).unwrap();
                                writes.insert(block, image);
                            }
                            let mut revokes = Vec::new();
                            if rng.below(8) == 0 {
                                let block = first + rng.below(blocks_per_writer);
                                if !writes.contains_key(&block) {
                                    txn.revoke(block).unwrap();
                                    revokes.push(block);
                                }
                            }
                            if rng.below(10) == 0 {
                                txn.abort();
                                continue;
                            }
                            txns.push(txn);
                            planned.push((writes, revokes));
                        }
                        if rng.below(12) == 0 {
                            journal.checkpoint().unwrap();
                        }
                        let started = set.op_count();
                        if txns.len() == 1 {
                            txns.pop().unwrap().commit().unwrap();
                        } else {
                            journal.commit_all(txns).unwrap();
                        }
                        let acknowledged = set.op_count();
                        let mut attempts = attempts.lock().unwrap();
                        for (writes, revokes) in planned {
                            attempts.push(Attempt {
                                writer,
                                writes: writes.into_iter().collect(),
                                revokes,
                                started,
                                acknowledged,
                            });
                        }
                    }
                });
            }
        });
    }
    let mut attempts = attempts.into_inner().unwrap();
    attempts.sort_by_key(|attempt| attempt.started);
    (set.finish(), attempts)
}

/// Recovers the post-crash `images`; returns the devices after recovery and
/// the home blocks as the journal reads them.
fn recover(layout: Layout, images: &[Vec<u8>]) -> Result<(Vec<MemDisk>, Vec<Vec<u8>>), String> {
    let devices: Vec<MemDisk> = images
        .iter()
        .map(|image| MemDisk::from_image("recovered", BLOCK, image.clone()))
        .collect();
    let home = {
        let journal = layout
            .open(&devices)
            .map_err(|e| format!("recovery failed: {e}"))?;
        (0..HOME_BLOCKS)
            .map(|block| {
                let mut buf = vec![0u8; BLOCK];
                journal.read(block, &mut buf).map(|_| buf)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("read after recovery: {e}"))?
    };
    // Recovery leaves everything home.
    for (block, expected) in home.iter().enumerate() {
        let (device, at) = layout.home_location(block as u64);
        let mut buf = vec![0u8; BLOCK];
        devices[device]
            .read_blocks(at, &mut buf)
            .map_err(|e| e.to_string())?;
        if &buf != expected {
            return Err(format!("block {block} not home after recovery"));
        }
    }
    Ok((devices, home))
}

fn describe(block: &[u8]) -> String {
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&block[0..4]);
    format!("tag {:#x}", u32::from_le_bytes(tag))
}

/// Checks the recovered home blocks against the attempts, writer by writer.
fn check_invariant(
    point: u64,
    attempts: &[Attempt],
    home: &[Vec<u8>],
    writers: usize,
) -> Result<(), String> {
    let blocks_per_writer = HOME_BLOCKS / writers as u64;
    for writer in 0..writers {
        let mine: Vec<&Attempt> = attempts.iter().filter(|a| a.writer == writer).collect();
        // None: freed by a revoke, contents do not matter.
        let mut state: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
        let apply = |state: &mut BTreeMap<u64, Option<Vec<u8>>>, attempt: &Attempt| {
            for block in &attempt.revokes {
                state.insert(*block, None);
            }
            for (block, image) in &attempt.writes {
                state.insert(*block, Some(image.clone()));
            }
        };
        // In flight: one transaction, or one group committed by commit_all,
        // of which a crash may keep any prefix (never a later one alone).
        let mut in_flight: Vec<&Attempt> = Vec::new();
        for attempt in &mine {
            if attempt.acknowledged <= point {
                apply(&mut state, attempt);
            } else if attempt.started < point {
                in_flight.push(attempt);
            }
        }
        let range = writer as u64 * blocks_per_writer..(writer as u64 + 1) * blocks_per_writer;
        let matches_block =
            |state: &BTreeMap<u64, Option<Vec<u8>>>, block: u64| match state.get(&block) {
                Some(Some(image)) => &home[block as usize] == image,
                Some(None) => true,
                None => home[block as usize].iter().all(|b| *b == 0),
            };
        let matches = |state: &BTreeMap<u64, Option<Vec<u8>>>| {
            range.clone().all(|block| matches_block(state, block))
        };
        if matches(&state) {
            continue;
        }
        let mut with = state.clone();
        let mut prefix_matches = false;
        for attempt in &in_flight {
            apply(&mut with, attempt);
            if matches(&with) {
                prefix_matches = true;
                break;
            }
        }
        if prefix_matches {
            continue;
        }
        let differing: Vec<String> = range
            .clone()
            .filter(|block| !matches_block(&state, *block))
            .map(|block| format!("block {block}: {}", describe(&home[block as usize])))
            .collect();
        return Err(format!(
            "writer {writer}: recovered state is neither the acknowledged prefix nor it plus a prefix of the in-flight transactions {:?}; differing from the acknowledged prefix: {}",
            in_flight
                .iter()
                .map(|a| a.writes.iter().map(|(b, i)| (*b, describe(i))).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            differing.join(", ")
        ));
    }
    Ok(())
}

fn explore(
    layout: Layout,
    seed: u64,
    writers: usize,
    attempts_per_writer: u32,
    random_states: u32,
) -> CrashReport {
    let mut config = CrashConfig::from_env(seed, random_states);
    config.seed = seed;
    let (recording, attempts) = record_workload(layout, seed, writers, attempts_per_writer);
    let block_sizes = vec![BLOCK; recording.bases.len()];
    let mut state_index = 0u64;
    let result = enumerate_set(&recording, &config, |state| {
        state_index += 1;
        let (devices, home) = recover(layout, state.images)?;
        check_invariant(state.point, &attempts, &home, writers)?;
        if state_index % 8 == 0 {
            // Crash during recovery, then recover again: same result.
            let again = crash_during_set(state.images, &block_sizes, state.seed, |set| {
                layout
                    .open(set.disks())
                    .map(|_| ())
                    .map_err(|e| format!("recovery on the recording disks: {e}"))
            })?;
            let (_, home_again) = recover(layout, &again)?;
            if home_again != home {
                return Err("a crash during recovery changed the recovered state".into());
            }
        }
        if state_index % 4 == 1 {
            // Life after recovery: a new transaction, reopen, it is there.
            let journal = layout.open(&devices).map_err(|e| format!("reopen: {e}"))?;
            let mut txn = journal.begin();
            txn.write(0, &vec![0xEE; BLOCK])
                .map_err(|e| e.to_string())?;
            txn.commit()
                .map_err(|e| format!("commit after recovery: {e}"))?;
            drop(journal);
            let images: Vec<Vec<u8>> = devices.iter().map(|d| d.image()).collect();
            let (_, home_after) = recover(layout, &images)?;
            if home_after[0] != vec![0xEE; BLOCK] || home_after[1..] != home[1..] {
                return Err("transaction committed after recovery was not recovered".into());
            }
        }
        Ok(())
    });
    match result {
        Ok(report) => report,
        Err(failure) => panic!("{layout:?}: {failure}"),
    }
}

fn seeds() -> u64 {
    std::env::var("KEEL_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[test]
fn single_writer_crash_states() {
    let base = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6B65_656C);
    let runs = 14 * seeds();
    let mut total = CrashReport::default();
    for run in 0..runs {
        let seed = base + run;
        let report = explore(Layout::OneDevice, seed, 1, 48, 28);
        eprintln!(
            "single writer, seed {seed}: {} crash points, {} states",
            report.crash_points, report.states
        );
        total += report;
        if std::env::var("KEEL_SEED").is_ok() {
            break;
        }
    }
    eprintln!(
        "single writer total: {} crash points, {} crash states explored",
        total.crash_points, total.states
    );
    if std::env::var("KEEL_SEED").is_err() && std::env::var("KEEL_CRASH_POINT").is_err() {
        assert!(
            total.states >= 100_000,
            "explored only {} states",
            total.states
        );
    }
}

#[test]
fn group_commit_crash_states() {
    // Four writers commit concurrently, so groups hold several transactions.
    // The schedule depends on the threads, so a failure prints the seed but
    // replays only the same workload, not necessarily the same schedule.
    let base = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6772_6F75);
    let mut total = CrashReport::default();
    for run in 0..2 * seeds() {
        let seed = base + run;
        let report = explore(Layout::OneDevice, seed, 4, 16, 12);
        eprintln!(
            "four writers, seed {seed}: {} crash points, {} states",
            report.crash_points, report.states
        );
        total += report;
    }
    eprintln!(
        "group commit total: {} crash points, {} crash states explored",
        total.crash_points, total.states
    );
}

#[test]
fn separate_log_device_crash_states() {
    // The log on its own device, home blocks on another; two writers.
    let base = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7477_6F64);
    let mut total = CrashReport::default();
    for run in 0..2 * seeds() {
        let seed = base + run;
        let report = explore(Layout::TwoDevices, seed, 2, 20, 12);
        eprintln!(
            "two devices, seed {seed}: {} crash points, {} states",
            report.crash_points, report.states
        );
        total += report;
        if std::env::var("KEEL_SEED").is_ok() {
            break;
        }
    }
    eprintln!(
        "two devices total: {} crash points, {} crash states explored",
        total.crash_points, total.states
    );
}
