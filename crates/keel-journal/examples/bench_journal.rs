//! Runs the journal benchmark (what `keel bench journal` runs).
//!
//! ```text
//! cargo run --release -p keel-journal --features bench --example bench_journal -- \
//!     [--json] [--dir DIR] [--seconds S] [--threads 1,2,4] [--log-mib N] [--svg FILE]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use keel_journal::bench::{run_commit_bench, run_recovery_bench, JournalBenchOptions};

fn main() {
    let mut options = JournalBenchOptions::default();
    let mut json = false;
    let mut svg: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--json" => json = true,
            "--dir" => options.dir = PathBuf::from(value()),
            "--seconds" => {
                options.duration = Duration::from_secs_f64(value().parse().expect("--seconds"))
            }
            "--threads" => {
                options.thread_counts = value()
                    .split(',')
                    .map(|t| t.parse().expect("--threads"))
                    .collect()
            }
            "--log-mib" => options.log_mib = value().parse().expect("--log-mib"),
            "--blocks" => options.blocks_per_commit = value().parse().expect("--blocks"),
            "--svg" => svg = Some(PathBuf::from(value())),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let mut progress = |message: &str| eprintln!("bench journal: {message}");
    let report = match run_commit_bench(&options, &mut progress) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("bench journal: {error}");
            std::process::exit(1);
        }
    };
    let recovery = match run_recovery_bench(&options, &mut progress) {
        Ok(recovery) => recovery,
        Err(error) => {
            eprintln!("bench journal: recovery: {error}");
            std::process::exit(1);
        }
    };
    if json {
        for line in report.json_lines() {
            println!("{line}");
        }
        println!("{}", serde_json::to_string(&recovery).unwrap_or_default());
    } else {
        print!("{}", report.markdown());
        println!(
            "recovery of a full {} MiB log: {} transactions, {} blocks redone, {:.0} ms; opening it empty: {:.0} ms",
            recovery.log_mib,
            recovery.transactions,
            recovery.blocks_redone,
            recovery.recovery_ms,
            recovery.empty_open_ms
        );
    }
    if let Some(path) = svg {
        if let Err(error) = std::fs::write(&path, report.svg()) {
            eprintln!("bench journal: writing {}: {error}", path.display());
        }
    }
}
