//! `keel bench journal`: commits per second and commit latency for several
//! numbers of committing threads on real files, next to the fdatasync floor
//! of the same file system measured in the same run; and the time to recover
//! a full log.
//!
//! The floor is what one durable commit costs without group commit: a 4 KiB
//! append + `fdatasync` on one thread. A preallocated log overwrites rather
//! than appends, so the 4 KiB overwrite + `fdatasync` rate is reported too.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_disk::{BlockDevice, FileDisk};
use serde::Serialize;

use crate::error::{JournalError, Result};
use crate::journal::{format_log, Journal, LogRegion};
use crate::store::WriteBackStore;

const BLOCK_SIZE: usize = 4096;

/// What to measure.
#[derive(Clone, Debug)]
pub struct JournalBenchOptions {
    /// Directory for the files (the file system being measured).
    pub dir: PathBuf,
    /// Numbers of committing threads.
    pub thread_counts: Vec<usize>,
    /// How long each measurement runs in total (split into [`ROUNDS`]).
    pub duration: Duration,
    /// Size of the log area in MiB.
    pub log_mib: u64,
    /// Blocks each transaction writes.
    pub blocks_per_commit: usize,
}

impl Default for JournalBenchOptions {
    fn default() -> Self {
        JournalBenchOptions {
            dir: PathBuf::from("."),
            thread_counts: vec![1, 2, 4, 8, 16, 64],
            duration: Duration::from_secs(2),
            log_mib: 64,
            blocks_per_commit: 1,
        }
    }
}

/// One thread count.
#[derive(Clone, Debug, Serialize)]
pub struct CommitRow {
    pub threads: usize,
    pub commits_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub commits: u64,
    /// Group writes (one flush each): commits per group shows the grouping.
    pub groups: u64,
    pub checkpoints: u64,
}

/// The fdatasync floor of the file system, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct FloorRow {
    /// 4 KiB append + fdatasync, one thread.
    pub fdatasync_floor_per_sec: f64,
    pub append_p50_us: f64,
    /// 4 KiB overwrite (preallocated file) + fdatasync, one thread.
    pub fdatasync_overwrite_per_sec: f64,
    pub overwrite_p50_us: f64,
}

/// Everything `run_commit_bench` measured.
#[derive(Clone, Debug, Serialize)]
pub struct JournalBenchReport {
    pub rows: Vec<CommitRow>,
    pub floor: FloorRow,
    pub blocks_per_commit: usize,
    pub log_mib: u64,
}

impl JournalBenchReport {
    /// One JSON object per thread count, then one with the floor.
    pub fn json_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .rows
            .iter()
            .filter_map(|row| serde_json::to_string(row).ok())
            .collect();
        lines.extend(serde_json::to_string(&self.floor).ok());
        lines
    }

    /// A markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| threads | commits/s | p50 µs | p99 µs | commits/group | vs append floor |\n|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2}× |\n",
                row.threads,
                row.commits_per_sec,
                row.p50_us,
                row.p99_us,
                row.commits as f64 / row.groups.max(1) as f64,
                row.commits_per_sec / self.floor.fdatasync_floor_per_sec
            ));
        }
        out.push_str(&format!(
            "\nfdatasync floor (4 KiB append + fdatasync, 1 thread): {:.0}/s (p50 {:.0} µs); 4 KiB overwrite + fdatasync: {:.0}/s (p50 {:.0} µs)\n",
            self.floor.fdatasync_floor_per_sec,
            self.floor.append_p50_us,
            self.floor.fdatasync_overwrite_per_sec,
            self.floor.overwrite_p50_us
        ));
        out
    }

    /// A plot of commits/s against threads, with the floors as lines.
    pub fn svg(&self) -> String {
        render_svg(self)
    }
}

fn io_error(path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Disk(keel_disk::DiskError::Io {
        device: path.display().to_string(),
        block: 0,
        source,
    })
}

fn percentile(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index] as f64
}

/// Operations and latencies gathered over the rounds of one measurement.
#[derive(Default)]
struct Tally {
    operations: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
    groups: u64,
    checkpoints: u64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.operations as f64 / self.seconds.max(f64::EPSILON)
    }

    fn percentile(&mut self, fraction: f64) -> f64 {
        self.latencies_us.sort_unstable();
        percentile(&self.latencies_us, fraction)
    }
}

/// Runs `step` on one thread for `duration`, adding to `tally`.
fn measure_floor(
    duration: Duration,
    tally: &mut Tally,
    mut step: impl FnMut(u64) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        step(tally.operations)?;
        tally.latencies_us.push(began.elapsed().as_micros() as u32);
        tally.operations += 1;
    }
    tally.seconds += start.elapsed().as_secs_f64();
    Ok(())
}

/// The files the floor is measured on.
struct FloorFiles {
    append_path: PathBuf,
    append: File,
    overwrite_path: PathBuf,
    overwrite: File,
}

const OVERWRITE_BLOCKS: u64 = 4096;

impl FloorFiles {
    fn create(dir: &Path) -> Result<FloorFiles> {
        let append_path = dir.join("keel-bench-floor-append");
        let append = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&append_path)
            .map_err(|e| io_error(&append_path, e))?;
        let overwrite_path = dir.join("keel-bench-floor-overwrite");
        let overwrite = preallocate(&overwrite_path, OVERWRITE_BLOCKS)?;
        Ok(FloorFiles {
            append_path,
            append,
            overwrite_path,
            overwrite,
        })
    }

    /// One slice of each floor: 4 KiB append + fdatasync, then 4 KiB
    /// overwrite + fdatasync.
    fn measure(&self, duration: Duration, append: &mut Tally, overwrite: &mut Tally) -> Result<()> {
        let block = vec![0x5Au8; BLOCK_SIZE];
        measure_floor(duration, append, |index| {
            self.append
                .write_all_at(&block, index * BLOCK_SIZE as u64)?;
            self.append.sync_data()
        })
        .map_err(|e| io_error(&self.append_path, e))?;
        measure_floor(duration, overwrite, |index| {
            self.overwrite
                .write_all_at(&block, (index % OVERWRITE_BLOCKS) * BLOCK_SIZE as u64)?;
            self.overwrite.sync_data()
        })
        .map_err(|e| io_error(&self.overwrite_path, e))
    }

    fn remove(self) {
        drop(self.append);
        drop(self.overwrite);
        let _ = std::fs::remove_file(&self.append_path);
        let _ = std::fs::remove_file(&self.overwrite_path);
    }
}

/// Measures the fdatasync floor in `dir` (one slice of each kind).
pub fn measure_fdatasync_floor(dir: &Path, duration: Duration) -> Result<FloorRow> {
    let files = FloorFiles::create(dir)?;
    let (mut append, mut overwrite) = (Tally::default(), Tally::default());
    files.measure(duration, &mut append, &mut overwrite)?;
    files.remove();
    Ok(FloorRow {
        fdatasync_floor_per_sec: append.rate(),
        append_p50_us: append.percentile(0.5),
        fdatasync_overwrite_per_sec: overwrite.rate(),
        overwrite_p50_us: overwrite.percentile(0.5),
    })
}

/// Creates a file of `blocks` blocks with every block really written (not
/// sparse), so later overwrites allocate nothing, and makes it durable.
fn preallocate(path: &Path, blocks: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let chunk = vec![0u8; 1 << 20];
    let total = blocks * BLOCK_SIZE as u64;
    let mut offset = 0;
    while offset < total {
        let len = chunk.len().min((total - offset) as usize);
        file.write_all_at(&chunk[..len], offset)
            .map_err(|e| io_error(path, e))?;
        offset += len as u64;
    }
    file.sync_all().map_err(|e| io_error(path, e))?;
    Ok(file)
}

fn open_disk(path: &Path, blocks: u64) -> Result<FileDisk> {
    drop(preallocate(path, blocks)?);
    Ok(FileDisk::open(
        path,
        keel_disk::FileDiskOptions {
            block_size: BLOCK_SIZE,
            ..Default::default()
        },
    )?)
}

/// Commits from `threads` threads for `duration` on a freshly formatted log,
/// adding to `tally`.
fn measure_commits(
    log: &FileDisk,
    home: &FileDisk,
    threads: usize,
    slots: u64,
    blocks_per_commit: u64,
    duration: Duration,
    tally: &mut Tally,
) -> Result<()> {
    let region = LogRegion::whole(log);
    format_log(log, region)?;
    let (journal, _) = Journal::open(log, region, WriteBackStore::new(home))?;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<Result<Vec<u32>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|thread| {
                let journal = &journal;
                let stop = &stop;
                scope.spawn(move || -> Result<Vec<u32>> {
                    let mut latencies = Vec::new();
                    let mut image = vec![0u8; BLOCK_SIZE];
                    let mut number = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        image[0..8].copy_from_slice(&number.to_le_bytes());
                        let began = Instant::now();
                        let mut txn = journal.begin();
                        for k in 0..blocks_per_commit {
                            txn.write(thread * slots + (number + k) % slots, &image)?;
                        }
                        txn.commit()?;
                        latencies.push(began.elapsed().as_micros() as u32);
                        number += 1;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Ok(Vec::new())))
            .collect()
    });
    tally.seconds += start.elapsed().as_secs_f64();
    for result in results {
        let latencies = result?;
        tally.operations += latencies.len() as u64;
        tally.latencies_us.extend(latencies);
    }
    let stats = journal.status().stats;
    tally.groups += stats.groups;
    tally.checkpoints += stats.checkpoints;
    journal.checkpoint()
}

/// Rounds each measurement is split into. The disk's speed drifts (a
/// virtual disk especially), so the floor and every thread count are
/// measured in interleaved slices: drift affects them all alike.
pub const ROUNDS: u32 = 4;

/// Runs the commit benchmark: [`ROUNDS`] rounds, each measuring the floors
/// and then every thread count for `duration / ROUNDS`.
pub fn run_commit_bench(
    options: &JournalBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<JournalBenchReport> {
    let slice = options.duration / ROUNDS;
    let log_path = options.dir.join("keel-bench-journal.log");
    let home_path = options.dir.join("keel-bench-journal.home");
    let max_threads = options.thread_counts.iter().copied().max().unwrap_or(1) as u64;
    let blocks_per_commit = options.blocks_per_commit.max(1) as u64;
    let slots = blocks_per_commit * 4;
    progress("preallocating the log, home and floor files");
    let floor_files = FloorFiles::create(&options.dir)?;
    let log = open_disk(&log_path, 1 + options.log_mib * 256)?;
    let home = open_disk(&home_path, max_threads * slots)?;
    let (mut append, mut overwrite) = (Tally::default(), Tally::default());
    let mut tallies: Vec<Tally> = options
        .thread_counts
        .iter()
        .map(|_| Tally::default())
        .collect();
    for round in 1..=ROUNDS {
        progress(&format!("round {round} of {ROUNDS}: fdatasync floor"));
        floor_files.measure(slice, &mut append, &mut overwrite)?;
        for (&threads, tally) in options.thread_counts.iter().zip(&mut tallies) {
            progress(&format!(
                "round {round} of {ROUNDS}: {threads} committing threads"
            ));
            measure_commits(&log, &home, threads, slots, blocks_per_commit, slice, tally)?;
        }
    }
    floor_files.remove();
    drop(log);
    drop(home);
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&home_path);
    let rows = options
        .thread_counts
        .iter()
        .zip(tallies)
        .map(|(&threads, mut tally)| CommitRow {
            threads,
            commits_per_sec: tally.rate(),
            p50_us: tally.percentile(0.5),
            p99_us: tally.percentile(0.99),
            commits: tally.operations,
            groups: tally.groups,
            checkpoints: tally.checkpoints,
        })
        .collect();
    Ok(JournalBenchReport {
        rows,
        floor: FloorRow {
            fdatasync_floor_per_sec: append.rate(),
            append_p50_us: append.percentile(0.5),
            fdatasync_overwrite_per_sec: overwrite.rate(),
            overwrite_p50_us: overwrite.percentile(0.5),
        },
        blocks_per_commit: options.blocks_per_commit,
        log_mib: options.log_mib,
    })
}

/// How long recovery of a full log took.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryBenchReport {
    pub log_mib: u64,
    pub transactions: usize,
    pub blocks_redone: usize,
    /// Log blocks in use at the crash.
    pub log_blocks_used: u64,
    pub recovery_ms: f64,
    /// Opening the same log once it is empty.
    pub empty_open_ms: f64,
}

/// Fills a log of `options.log_mib` with committed transactions of 64
/// distinct blocks each (no checkpoint), abandons it as a crash would, and
/// times `Journal::open`: scan, checksum, redo of every block home, flush.
pub fn run_recovery_bench(
    options: &JournalBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<RecoveryBenchReport> {
    let log_path = options.dir.join("keel-bench-recovery.log");
    let home_path = options.dir.join("keel-bench-recovery.home");
    let log_blocks = options.log_mib * 256;
    progress("preallocating the log and home files");
    let log = open_disk(&log_path, 1 + log_blocks)?;
    let home = open_disk(&home_path, log_blocks)?;
    let region = LogRegion::whole(&log);
    format_log(&log, region)?;
    progress("filling the log");
    let used = {
        let (journal, _) = Journal::open(&log, region, WriteBackStore::new(&home))?;
        let per_transaction = crate::format::transaction_blocks(64, 0, BLOCK_SIZE);
        let mut image = vec![0xA5u8; BLOCK_SIZE];
        let mut next_block = 0u64;
        while journal.status().space.free() >= per_transaction {
            let mut txn = journal.begin();
            for _ in 0..64 {
                image[0..8].copy_from_slice(&next_block.to_le_bytes());
                txn.write(next_block % home.block_count(), &image)?;
                next_block += 1;
            }
            txn.commit()?;
        }
        journal.status().space.used()
        // Dropped without a checkpoint: the log is full and nothing is home.
    };
    progress("recovering");
    let start = Instant::now();
    let (journal, report) = Journal::open(&log, region, WriteBackStore::new(&home))?;
    let recovery_ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(journal);
    // Opening the now empty log still reads the whole log area once (the
    // check for damage past the end, docs/journal.md row 15).
    let start = Instant::now();
    drop(Journal::open(&log, region, WriteBackStore::new(&home))?);
    let empty_open_ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(log);
    drop(home);
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&home_path);
    Ok(RecoveryBenchReport {
        log_mib: options.log_mib,
        transactions: report.transactions,
        blocks_redone: report.blocks_redone,
        log_blocks_used: used,
        recovery_ms,
        empty_open_ms,
    })
}

/// A small SVG line plot (no dependencies): commits/s per thread count on a
/// log2 x axis, with the append and overwrite fdatasync floors as
/// horizontal lines.
pub fn render_svg(report: &JournalBenchReport) -> String {
    let (width, height) = (640.0, 400.0);
    let (left, right, top, bottom) = (70.0, 20.0, 30.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    // Logarithmic y axis from the decade below the slowest to the decade
    // above the fastest, so the floor and 64 threads both read clearly.
    let rates: Vec<f64> = report
        .rows
        .iter()
        .map(|r| r.commits_per_sec)
        .chain([
            report.floor.fdatasync_floor_per_sec,
            report.floor.fdatasync_overwrite_per_sec,
        ])
        .filter(|rate| *rate > 0.0)
        .collect();
    let low_decade = rates
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let high_decade = rates
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(low_decade + 1.0);
    let max_log = report
        .rows
        .iter()
        .map(|r| (r.threads as f64).log2())
        .fold(1.0f64, f64::max);
    let x = |threads: usize| left + (threads as f64).log2() / max_log * plot_w;
    let y = |rate: f64| {
        let decades = (rate.max(1.0).log10() - low_decade) / (high_decade - low_decade);
        top + plot_h - decades.clamp(0.0, 1.0) * plot_h
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">keel journal: commits/s (log scale) vs committing threads ({} block/commit)</text>\n",
        width / 2.0,
        report.blocks_per_commit
    );
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    ));
    for decade in low_decade as i32..=high_decade as i32 {
        let rate = 10f64.powi(decade);
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text>\n<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            left - 5.0,
            y(rate) + 4.0,
            rate,
            y(rate),
            left + plot_w,
            y(rate)
        ));
    }
    for row in &report.rows {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x(row.threads),
            top + plot_h + 18.0,
            row.threads
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">committing threads</text>\n",
        left + plot_w / 2.0,
        height - 10.0
    ));
    for (rate, color, label) in [
        (
            report.floor.fdatasync_floor_per_sec,
            "#c33",
            "4 KiB append + fdatasync floor",
        ),
        (
            report.floor.fdatasync_overwrite_per_sec,
            "#e90",
            "4 KiB overwrite + fdatasync",
        ),
    ] {
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"{color}\" stroke-dasharray=\"6 4\"/>\n<text x=\"{2}\" y=\"{3}\" fill=\"{color}\" text-anchor=\"end\">{label} ({rate:.0}/s)</text>\n",
            y(rate),
            left + plot_w,
            left + plot_w - 4.0,
            y(rate) - 4.0
        ));
    }
    let points: Vec<String> = report
        .rows
        .iter()
        .map(|r| format!("{:.1},{:.1}", x(r.threads), y(r.commits_per_sec)))
        .collect();
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#36c\" stroke-width=\"2\"/>\n",
        points.join(" ")
    ));
    for row in &report.rows {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#36c\"/>\n",
            x(row.threads),
            y(row.commits_per_sec)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_bench_runs_and_renders() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalBenchOptions {
            dir: dir.path().to_path_buf(),
            thread_counts: vec![1, 4],
            duration: Duration::from_millis(50),
            log_mib: 1,
            blocks_per_commit: 1,
        };
        let report = run_commit_bench(&options, &mut |_| {}).unwrap();
        assert_eq!(report.rows.len(), 2);
        assert_eq!(report.json_lines().len(), 3);
        assert!(report.json_lines()[0].contains("\"commits_per_sec\""));
        assert!(report.json_lines()[2].contains("fdatasync_floor_per_sec"));
        assert!(report.svg().starts_with("<svg"));
        let recovery = run_recovery_bench(&options, &mut |_| {}).unwrap();
        assert!(recovery.transactions > 0);
    }
}
