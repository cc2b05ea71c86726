//! `keel bench raid`: volume throughput side by side with plain file I/O of
//! the same bytes on the same file system, in the same run.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use keel_raid::{CreateSpec, Layout, Level, Volume, VolumeOptions, BLOCK_SIZE};

use crate::util::{mib_per_sec, parse_size};

#[derive(Args)]
pub struct RaidBenchArgs {
    /// Bytes written and read per measurement.
    #[arg(long, default_value = "256MiB")]
    pub size: String,
    /// Directory for the images (default: a temporary directory under the
    /// current directory, so the file system is the one you work on).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Disks in the RAID-5 volume.
    #[arg(long, default_value_t = 4)]
    pub raid5_disks: usize,
    /// Mirrors in the RAID-1 volume.
    #[arg(long, default_value_t = 2)]
    pub raid1_disks: usize,
    /// Keep the page cache warm between writing and reading (by default it
    /// is dropped for the files involved, so reads come from the device).
    #[arg(long)]
    pub cached: bool,
    /// Print JSON (one object per measurement).
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Row {
    measurement: String,
    level: String,
    disks: usize,
    mib_per_sec: f64,
    /// The peer this is compared with, measured in the same run.
    baseline: Option<String>,
    baseline_mib_per_sec: Option<f64>,
    /// The target, when there is one.
    target_mib_per_sec: Option<f64>,
    meets_target: Option<bool>,
}

const REQUEST_BYTES: usize = 4 << 20;
/// Every throughput is the best of this many passes (this machine's disk is
/// a virtual one whose speed drifts).
const PASSES: usize = 3;

/// Drops the page cache of `path` so the next read comes from the device.
fn drop_cache(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    file.sync_all()?;
    // SAFETY: a plain syscall on a valid descriptor.
    unsafe {
        libc_fadvise(file.as_raw_fd());
    }
    Ok(())
}

unsafe fn libc_fadvise(fd: i32) {
    extern "C" {
        fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
    }
    const POSIX_FADV_DONTNEED: i32 = 4;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "img"))
                .collect()
        })
        .unwrap_or_default()
}

fn pattern(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    keel_disk::SimRng::new(42).fill(&mut data);
    data
}

/// The peer: one plain file on the same file system, written and read with
/// the same request size.
struct PlainFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl PlainFile {
    fn create(dir: &Path, size: u64) -> anyhow::Result<PlainFile> {
        let path = dir.join("plain.img");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(PlainFile { path, file, size })
    }

    fn write(&self) -> anyhow::Result<Duration> {
        let data = pattern(REQUEST_BYTES);
        let t = Instant::now();
        let mut offset = 0;
        while offset < self.size {
            self.file.write_all_at(&data, offset)?;
            offset += REQUEST_BYTES as u64;
        }
        self.file.sync_data()?;
        Ok(t.elapsed())
    }

    fn read(&self, cached: bool) -> anyhow::Result<Duration> {
        if !cached {
            drop_cache(&self.path)?;
        }
        let mut buf = vec![0u8; REQUEST_BYTES];
        let t = Instant::now();
        let mut offset = 0;
        while offset < self.size {
            self.file.read_exact_at(&mut buf, offset)?;
            offset += REQUEST_BYTES as u64;
        }
        Ok(t.elapsed())
    }
}

/// Request size: a whole number of RAID-5 stripes near 1 MiB, so sequential
/// writes are full-stripe writes.
fn request_blocks(volume: &Volume) -> u64 {
    let unit = volume.geometry().unit_blocks();
    let wanted = (REQUEST_BYTES / BLOCK_SIZE) as u64;
    match volume.geometry().level {
        Level::Raid5 => unit * wanted.div_ceil(unit),
        _ => wanted,
    }
}

fn timed_write(volume: &Volume, blocks: u64) -> anyhow::Result<Duration> {
    let per = request_blocks(volume);
    let data = pattern(per as usize * BLOCK_SIZE);
    let t = Instant::now();
    let mut block = 0;
    while block < blocks {
        let n = per.min(blocks - block);
        volume.write(block, &data[..n as usize * BLOCK_SIZE])?;
        block += n;
    }
    volume.sync()?;
    Ok(t.elapsed())
}

fn timed_read(volume: &Volume, blocks: u64) -> anyhow::Result<Duration> {
    let per = request_blocks(volume);
    let mut buf = vec![0u8; per as usize * BLOCK_SIZE];
    let t = Instant::now();
    let mut block = 0;
    while block < blocks {
        let n = per.min(blocks - block);
        volume.read(block, &mut buf[..n as usize * BLOCK_SIZE])?;
        block += n;
    }
    Ok(t.elapsed())
}

fn best_read(
    volume: &Volume,
    dir: &Path,
    blocks: u64,
    cached: bool,
    passes: usize,
) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..passes {
        if !cached {
            for file in files_in(dir) {
                drop_cache(&file)?;
            }
        }
        best = best.min(timed_read(volume, blocks)?);
    }
    Ok(best)
}

/// XOR parity throughput on one core: GB/s of data chunks folded into parity.
fn xor_gb_per_sec(data_disks: usize) -> f64 {
    let chunk = 1 << 20;
    let sources: Vec<Vec<u8>> = (0..data_disks).map(|_| pattern(chunk)).collect();
    let mut parity = vec![0u8; chunk];
    let rounds = 2000 / data_disks.max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        parity.copy_from_slice(&sources[0]);
        for source in &sources[1..] {
            keel_raid::xor::xor_into(&mut parity, source);
        }
        std::hint::black_box(&parity);
    }
    (rounds * data_disks * chunk) as f64 / 1e9 / t.elapsed().as_secs_f64()
}

pub fn run(args: RaidBenchArgs) -> anyhow::Result<ExitCode> {
    let size = parse_size(&args.size)?;
    let size = size - size % REQUEST_BYTES as u64;
    anyhow::ensure!(size > 0, "--size must be at least 1 MiB");
    let (dir, _temp) = crate::util::bench_dir(args.dir.as_deref(), "keel-bench-raid")?;
    let blocks = size / BLOCK_SIZE as u64;
    let mut rows: Vec<Row> = Vec::new();
    let spinner = crate::util::spinner("raid benchmark");
    spinner.set_message("writing the plain file");
    let plain = PlainFile::create(&dir, size)?;
    plain.write()?;
    let (mut best_plain_write, mut best_plain_read) = (Duration::MAX, Duration::MAX);
    let configs = [
        (Level::Single, 1usize, 0usize),
        (Level::Raid1, args.raid1_disks, 0),
        (Level::Raid5, args.raid5_disks, 1),
    ];
    for (level, disks, spares) in configs {
        let vdir = dir.join(level.name());
        let spec = CreateSpec {
            level,
            layout: Layout::LeftSymmetric,
            size_bytes: size,
            chunk_bytes: 64 << 10,
        };
        let options = VolumeOptions {
            background_rebuild: false,
            ..VolumeOptions::default()
        };
        let volume = Volume::create_dir(&vdir, &spec, disks, spares, &[], options)
            .with_context(|| format!("creating the {} volume", level.name()))?;
        // The disk's speed drifts, so the peer is measured in the same passes,
        // interleaved with the volume; each figure is the best of its passes.
        let (mut plain_write, mut volume_write) = (Duration::MAX, Duration::MAX);
        let (mut plain_read, mut volume_read) = (Duration::MAX, Duration::MAX);
        for pass in 1..=PASSES {
            spinner.set_message(format!(
                "{}: write and read, pass {pass} of {PASSES}",
                level.name()
            ));
            plain_write = plain_write.min(plain.write()?);
            volume_write = volume_write.min(timed_write(&volume, blocks)?);
            plain_read = plain_read.min(plain.read(args.cached)?);
            volume_read = volume_read.min(best_read(&volume, &vdir, blocks, args.cached, 1)?);
        }
        best_plain_write = best_plain_write.min(plain_write);
        best_plain_read = best_plain_read.min(plain_read);
        let (file_write, file_read) = (
            mib_per_sec(size, plain_write),
            mib_per_sec(size, plain_read),
        );
        let write = mib_per_sec(size, volume_write);
        let (target, note) = match level {
            Level::Single => (0.7 * file_write, "70% of the file rate"),
            Level::Raid1 => (
                0.7 * file_write / disks as f64,
                "70% of file rate / mirrors",
            ),
            Level::Raid5 => (
                0.7 * file_write * (disks - 1) as f64 / disks as f64,
                "70% of file rate x (N-1)/N",
            ),
        };
        rows.push(Row {
            measurement: format!("sequential write + flush ({note})"),
            level: level.name().into(),
            disks,
            mib_per_sec: write,
            baseline: Some("plain file write".into()),
            baseline_mib_per_sec: Some(file_write),
            target_mib_per_sec: Some(target),
            meets_target: Some(write >= target),
        });
        let read = mib_per_sec(size, volume_read);
        rows.push(Row {
            measurement: "sequential read, healthy (70% of the file rate)".into(),
            level: level.name().into(),
            disks,
            mib_per_sec: read,
            baseline: Some("plain file read".into()),
            baseline_mib_per_sec: Some(file_read),
            target_mib_per_sec: Some(0.7 * file_read),
            meets_target: Some(read >= 0.7 * file_read),
        });
        if level == Level::Raid5 {
            spinner.set_message("raid5: degraded reads, then the rebuild");
            volume.fail_disk(1)?;
            let degraded = mib_per_sec(
                size,
                best_read(&volume, &vdir, blocks, args.cached, PASSES)?,
            );
            rows.push(Row {
                measurement: "sequential read, degraded (one disk lost)".into(),
                level: level.name().into(),
                disks,
                mib_per_sec: degraded,
                baseline: Some("plain file read".into()),
                baseline_mib_per_sec: Some(file_read),
                target_mib_per_sec: None,
                meets_target: None,
            });
            let member_bytes = volume.member_geometry().data_blocks * BLOCK_SIZE as u64;
            let t = Instant::now();
            volume.rebuild(|_, _| {})?;
            let rebuild = mib_per_sec(member_bytes, t.elapsed());
            rows.push(Row {
                measurement: "rebuild onto the spare (MiB of the spare written per second)".into(),
                level: level.name().into(),
                disks,
                mib_per_sec: rebuild,
                baseline: Some("plain file write".into()),
                baseline_mib_per_sec: Some(file_write),
                target_mib_per_sec: None,
                meets_target: None,
            });
        }
        volume.close()?;
        std::fs::remove_dir_all(&vdir)?;
    }
    for (measurement, best) in [
        (
            "sequential write + fdatasync (best of all passes)",
            best_plain_write,
        ),
        ("sequential read (best of all passes)", best_plain_read),
    ] {
        rows.insert(
            0,
            Row {
                measurement: measurement.into(),
                level: "plain file".into(),
                disks: 1,
                mib_per_sec: mib_per_sec(size, best),
                baseline: None,
                baseline_mib_per_sec: None,
                target_mib_per_sec: None,
                meets_target: None,
            },
        );
    }
    std::fs::remove_file(&plain.path)?;
    drop(plain);
    spinner.set_message("XOR parity");
    let xor = xor_gb_per_sec(args.raid5_disks - 1);
    spinner.finish_and_clear();
    rows.push(Row {
        measurement: "XOR parity, one core (GB/s of data; target 5 GB/s)".into(),
        level: "raid5".into(),
        disks: args.raid5_disks,
        mib_per_sec: xor * 1e9 / (1 << 20) as f64,
        baseline: None,
        baseline_mib_per_sec: None,
        target_mib_per_sec: Some(5e9 / (1 << 20) as f64),
        meets_target: Some(xor >= 5.0),
    });
    if args.json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        println!(
            "keel bench raid: {} MiB per measurement in {}{}",
            size >> 20,
            dir.display(),
            if args.cached {
                " (page cache kept)"
            } else {
                ""
            }
        );
        println!(
            "{:<8} {:>5} {:>10} {:>10} {:>10}  measurement",
            "level", "disks", "MiB/s", "peer", "target"
        );
        for row in &rows {
            let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
            let verdict = match row.meets_target {
                Some(true) => " [met]",
                Some(false) => " [MISSED]",
                None => "",
            };
            println!(
                "{:<8} {:>5} {:>10.0} {:>10} {:>10}  {}{verdict}",
                row.level.split(' ').next().unwrap_or(""),
                row.disks,
                row.mib_per_sec,
                opt(row.baseline_mib_per_sec),
                opt(row.target_mib_per_sec),
                row.measurement
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
