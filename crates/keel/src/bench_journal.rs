//! `keel bench journal`: commits per second and latency with 1–64
//! committing threads, next to the fdatasync floor measured in the same run,
//! and recovery time of a full log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use keel_journal::bench::{run_commit_bench, run_recovery_bench, JournalBenchOptions};

#[derive(Args)]
pub struct JournalBenchArgs {
    /// Directory for the log and home files (default: a temporary directory
    /// under the current one, so the file system is the one you work on).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Committing thread counts, comma-separated.
    #[arg(long, default_value = "1,2,4,8,16,64", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Seconds per thread count (split into interleaved rounds).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Log size in MiB (also the size of the log recovered).
    #[arg(long, default_value_t = 64)]
    pub log_mib: u64,
    /// Write an SVG plot of commits/s against threads to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Print JSON lines: one object per thread count, one with the floor,
    /// one with recovery.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: JournalBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(
        !args.threads.is_empty() && !args.threads.contains(&0),
        "--threads must be positive numbers"
    );
    let (dir, _temp) = crate::util::bench_dir(args.dir.as_deref(), "keel-bench-journal")?;
    let options = JournalBenchOptions {
        dir,
        thread_counts: args.threads.clone(),
        duration: Duration::from_secs_f64(args.seconds),
        log_mib: args.log_mib,
        ..JournalBenchOptions::default()
    };
    let report = crate::util::with_spinner("journal commit benchmark", |progress| {
        run_commit_bench(&options, progress)
    })
    .context("journal commit benchmark")?;
    let recovery = crate::util::with_spinner("journal recovery benchmark", |progress| {
        run_recovery_bench(&options, progress)
    })
    .context("journal recovery benchmark")?;
    if args.json {
        for line in report.json_lines() {
            println!("{line}");
        }
        println!("{}", serde_json::to_string(&recovery)?);
    } else {
        print!("{}", report.markdown());
        println!(
            "recovery of a full {} MiB log: {} transactions, {} blocks redone, {:.0} ms (opening it empty: {:.0} ms)",
            recovery.log_mib, recovery.transactions, recovery.blocks_redone, recovery.recovery_ms, recovery.empty_open_ms
        );
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
