//! The `keel` command-line tool.

mod bench_cache;
mod bench_journal;
mod bench_raid;
mod demo;
mod util;
mod volume_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "keel: a crash-safe storage stack — checksummed RAID volumes, a buffer cache and a redo journal",
    long_about = "keel: a crash-safe storage stack.\n\nStart with `keel demo`, which runs keel's main job on temporary files and prints what it proved.\nLogs go to stderr; set RUST_LOG (for example RUST_LOG=keel_raid=info) to see them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run keel's main job on temporary files and print what it proved.
    Demo(demo::DemoArgs),
    /// Create, inspect, repair and use checksummed RAID volumes.
    #[command(subcommand)]
    Volume(volume_cmd::VolumeCommand),
    /// Benchmarks, side by side with their peers.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Sequential throughput of single, raid1 and raid5 volumes against plain
    /// writes of the same bytes to one file; degraded read; rebuild; XOR parity.
    Raid(bench_raid::RaidBenchArgs),
    /// Cache hit ratios on block traces against LRU, quick_cache and moka;
    /// read-ahead and hit-throughput benchmarks.
    Cache(bench_cache::CacheBenchArgs),
    /// Journal commits per second and latency with 1–64 committers, next to
    /// the fdatasync floor; recovery time of a full log.
    Journal(bench_journal::JournalBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo injects faults on purpose, so their log lines are noise there
    // unless asked for with RUST_LOG.
    let default_filter = match cli.command {
        Command::Demo(_) => "off",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Volume(command) => volume_cmd::run(command),
        Command::Bench(BenchCommand::Raid(args)) => bench_raid::run(args),
        Command::Bench(BenchCommand::Journal(args)) => bench_journal::run(args),
        Command::Bench(BenchCommand::Cache(args)) => bench_cache::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes.
            eprintln!("keel: {error:#}");
            ExitCode::FAILURE
        }
    }
}
