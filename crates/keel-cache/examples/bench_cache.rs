//! Runs the cache benchmarks without the CLI:
//!
//! ```text
//! cargo run --release -p keel-cache --features bench --example bench_cache -- \
//!     [--json] [--markdown] [--trace FILE]... [--traces DIR] [--plots DIR] [--skip-traces] [--mixed] \
//!     [--skip-readahead] [--skip-hits] [--buffered] [--dir DIR] [--window BLOCKS]
//!     [--repeats N] [--direct-read-kib KIB] [--hit-blocks N]
//! ```
use std::path::PathBuf;

use keel_cache::bench::{self, HitBenchOptions, ReadAheadBenchOptions, TraceBenchOptions};

fn main() {
    if let Err(error) = run() {
        eprintln!("bench_cache: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut json = false;
    let mut markdown = false;
    let mut trace_options = TraceBenchOptions::default();
    let mut readahead_options = ReadAheadBenchOptions::default();
    let mut plots: Option<PathBuf> = None;
    let mut hit_options = HitBenchOptions::default();
    let (mut traces, mut readahead, mut hits) = (true, true, true);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--markdown" => markdown = true,
            "--trace" => trace_options
                .extra_traces
                .push(args.next().ok_or("--trace FILE")?.into()),
            "--traces" => trace_options.traces_dir = args.next().ok_or("--traces DIR")?.into(),
            "--plots" => plots = Some(args.next().ok_or("--plots DIR")?.into()),
            "--dir" => readahead_options.dir = args.next().ok_or("--dir DIR")?.into(),
            "--only-file-traces" => trace_options.synthetic_traces = false,
            "--no-public" => trace_options.public_traces = false,
            "--mixed" => trace_options.mixed_traces = true,
            "--buffered" => readahead_options.direct = false,
            "--window" => {
                readahead_options.max_window_blocks =
                    args.next().ok_or("--window BLOCKS")?.parse()?
            }
            "--direct-read-kib" => {
                readahead_options.direct_read_bytes = args
                    .next()
                    .ok_or("--direct-read-kib KIB")?
                    .parse::<usize>()?
                    * 1024
            }
            "--repeats" => readahead_options.repeats = args.next().ok_or("--repeats N")?.parse()?,
            "--hit-blocks" => hit_options.blocks = args.next().ok_or("--hit-blocks N")?.parse()?,
            "--cache-mib" => {
                readahead_options.cache_bytes =
                    args.next().ok_or("--cache-mib MIB")?.parse::<u64>()? << 20
            }
            "--skip-traces" => traces = false,
            "--skip-readahead" => readahead = false,
            "--skip-hits" => hits = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut progress = |line: &str| eprintln!("{line}");
    if traces {
        let results = bench::run_trace_bench(&trace_options, &mut progress)?;
        if json {
            for row in &results {
                println!("{}", serde_json::to_string(row)?);
            }
        }
        if markdown {
            println!("{}", bench::markdown_table(&results));
        }
        let checks = bench::check_targets(&results);
        for check in &checks {
            let line = format!(
                "target {} {:<18} {:>7} blocks: default {:.4} vs best other ({}) {:.4}: {:+.2} points",
                match (check.target, check.met) {
                    (false, _) => "report",
                    (true, true) => "met   ",
                    (true, false) => "MISSED",
                },
                check.trace,
                check.capacity_blocks,
                check.default_hit_ratio,
                check.best_other,
                check.best_other_hit_ratio,
                check.margin_points
            );
            if json {
                eprintln!("{line}")
            } else {
                println!("{line}")
            }
        }
        for row in results
            .iter()
            .filter(|r| r.hot_hit_ratio_after_scan.is_some())
        {
            let line = format!(
                "hot-set hit ratio after scan: {:<12} {:>6} blocks: {:.3}",
                row.policy,
                row.capacity_blocks,
                row.hot_hit_ratio_after_scan.unwrap_or(0.0)
            );
            if json {
                eprintln!("{line}")
            } else {
                println!("{line}")
            }
        }
        if let Some(dir) = &plots {
            for path in bench::write_plots(&results, dir)? {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    if readahead {
        for row in bench::run_readahead_bench(&readahead_options, &mut progress)? {
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                println!("{row:?}");
            }
        }
    }
    if hits {
        for row in bench::run_hit_throughput_bench(&hit_options, &mut progress)? {
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                println!("{row:?}");
            }
        }
    }
    Ok(())
}
