//! Benchmarks of the cache (feature `bench`): hit ratios on block traces
//! for each policy and peer cache, read-ahead throughput on a `FileDisk`,
//! and the throughput of cache hits on one and two threads.
//!
//! `keel bench cache` calls these; `cargo run --release --features bench
//! --example bench_cache` runs them without the CLI.
//!
//! * [`run_trace_bench`] replays each trace through every policy at several
//!   capacities. Keel's policies run through the same [`Policy`] objects the
//!   cache uses (one for the whole trace, not sharded); the peers are
//!   `quick_cache` (its unsync cache) and `moka` (its sync cache), both
//!   bounded by entry count, so every cache counts capacity in blocks.
//! * [`run_readahead_bench`] reads a 256 MiB file-sized range of a
//!   `FileDisk` image sequentially through the cache with read-ahead off and
//!   on, the same bytes straight from the image with 1 MiB reads, and the
//!   same bytes through a reference pipeline with no cache in it (what the
//!   host allows any cache that stages blocks).
//! * [`run_hit_throughput_bench`] replays one stream of hits on 1 and 2
//!   threads through keel's cache, `quick_cache` and `moka`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use keel_disk::{BlockDevice, FileDisk, FileDiskOptions, MemDisk, SimRng};
use serde::Serialize;

use crate::policy::{Access, Policy, PolicyKind};
use crate::{Cache, CacheConfig, ReadAheadConfig, ReadHint};

/// What can go wrong in a benchmark (missing traces, unreadable files).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("traces directory {path} not found (set KEEL_TRACES_DIR or pass --traces DIR)")]
    MissingTraces { path: PathBuf },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {text:?} is not a block number")]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}: cannot decompress: {reason}")]
    Decompress { path: PathBuf, reason: String },
    #[error("{path}: trace is empty")]
    EmptyTrace { path: PathBuf },
    // Transparent: the wrapped errors name the device or the cache
    // themselves, and a reader printing the error chain would otherwise
    // see their message twice.
    #[error(
        "{path}: {mode} read other bytes than the cache with read-ahead on \
         (checksum {got:#x}, expected {expected:#x})"
    )]
    ChecksumMismatch {
        path: PathBuf,
        mode: &'static str,
        got: u64,
        expected: u64,
    },
    #[error(transparent)]
    Disk(#[from] keel_disk::DiskError),
    #[error(transparent)]
    Cache(#[from] crate::CacheError),
}

/// The replacement algorithms compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPolicy {
    /// One of keel's policies (the same code the cache runs).
    Keel(PolicyKind),
    /// quick_cache 0.7 (its unsync cache, bounded by entries).
    QuickCache,
    /// moka 0.12 (its sync cache, bounded by entries; W-TinyLFU with a
    /// fixed 1% window).
    Moka,
    /// ARC, a reference implementation from the paper (not a peer the
    /// targets are checked against).
    Arc,
}

impl BenchPolicy {
    /// keel's policies, then the peers.
    pub const ALL: [BenchPolicy; 8] = [
        BenchPolicy::Keel(PolicyKind::Lru),
        BenchPolicy::Keel(PolicyKind::S3Fifo),
        BenchPolicy::Keel(PolicyKind::Lirs),
        BenchPolicy::Keel(PolicyKind::Adaptive),
        BenchPolicy::Keel(PolicyKind::WTinyLfu),
        BenchPolicy::QuickCache,
        BenchPolicy::Moka,
        BenchPolicy::Arc,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BenchPolicy::Keel(kind) => kind.name(),
            BenchPolicy::QuickCache => "quick_cache",
            BenchPolicy::Moka => "moka",
            BenchPolicy::Arc => "arc",
        }
    }
    /// True for keel's default policy.
    pub fn is_default(self) -> bool {
        self == BenchPolicy::Keel(PolicyKind::default())
    }
}

/// Where the public traces are by default: `$KEEL_TRACES_DIR`, else
/// `../shared/traces` from the working directory, else `shared/traces`
/// beside the repository this crate was built from.
pub fn default_traces_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KEEL_TRACES_DIR") {
        return PathBuf::from(dir);
    }
    let relative = PathBuf::from("../shared/traces");
    if relative.is_dir() {
        return relative;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces")
}

/// What [`run_trace_bench`] runs.
#[derive(Clone, Debug)]
pub struct TraceBenchOptions {
    /// Directory of the public traces (`*.txt.gz`, `*.txt.xz`).
    pub traces_dir: PathBuf,
    /// Run the public traces found in `traces_dir`.
    pub public_traces: bool,
    /// Run the synthetic traces (zipf, loop, hot set + scan).
    pub synthetic_traces: bool,
    /// Also run the held-out mixed workloads (`mix-*`: shifting zipf, zipf
    /// with scans, a loop inside zipf), which no policy setting was chosen
    /// on; reported, not part of the targets.
    pub mixed_traces: bool,
    /// More trace files in the same format (`--trace FILE`).
    pub extra_traces: Vec<PathBuf>,
    /// Accesses in each zipf trace.
    pub zipf_accesses: usize,
    /// Distinct blocks in each zipf trace.
    pub zipf_blocks: u64,
    /// Cache sizes for file traces, as fractions of the trace's distinct
    /// blocks.
    pub size_fractions: Vec<f64>,
    /// Cache sizes in blocks for the loop and hot-set traces.
    pub pattern_capacities: Vec<u64>,
    /// Policies to run.
    pub policies: Vec<BenchPolicy>,
    /// Seed of the synthetic traces.
    pub seed: u64,
}

impl Default for TraceBenchOptions {
    fn default() -> Self {
        TraceBenchOptions {
            traces_dir: default_traces_dir(),
            public_traces: true,
            synthetic_traces: true,
            mixed_traces: false,
            extra_traces: Vec::new(),
            zipf_accesses: 1_000_000,
            zipf_blocks: 100_000,
            size_fractions: vec![0.01, 0.05, 0.1, 0.2, 0.3, 0.5],
            pattern_capacities: vec![100, 1_000, 10_000],
            policies: BenchPolicy::ALL.to_vec(),
            seed: 42,
        }
    }
}

/// One (trace, policy, capacity) measurement.
#[derive(Clone, Debug, Serialize)]
pub struct TraceResult {
    pub trace: String,
    pub policy: String,
    /// True for keel's default policy.
    pub default: bool,
    pub capacity_blocks: u64,
    pub accesses: u64,
    pub hits: u64,
    pub hit_ratio: f64,
    /// Hot-set + scan trace only: hit ratio of the first pass over the hot
    /// set after the scan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_hit_ratio_after_scan: Option<f64>,
}

/// A trace to replay: the accesses, and the part of them to score
/// separately (the hot set after the scan).
struct Trace {
    name: String,
    accesses: Vec<u64>,
    /// Index from which accesses count towards `hot_hit_ratio_after_scan`.
    hot_after: Option<usize>,
}

/// Reads a trace file: one block number per line, plain, gzip (`.gz`) or
/// xz (`.xz`) compressed. Blank lines and lines starting with `#` are
/// skipped; anything else that is not a number is an error.
pub fn read_trace(path: &Path) -> Result<Vec<u64>, BenchError> {
    let io = |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else if name.ends_with(".xz") {
        let mut raw = Vec::new();
        lzma_rs::xz_decompress(&mut BufReader::new(file), &mut raw).map_err(|e| {
            BenchError::Decompress {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        Box::new(std::io::Cursor::new(raw))
    } else {
        Box::new(file)
    };
    let mut accesses = Vec::new();
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(io)?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let block = text.parse::<u64>().map_err(|_| BenchError::BadLine {
            path: path.to_path_buf(),
            line: index + 1,
            text: text.chars().take(40).collect(),
        })?;
        accesses.push(block);
    }
    if accesses.is_empty() {
        return Err(BenchError::EmptyTrace {
            path: path.to_path_buf(),
        });
    }
    Ok(accesses)
}

fn trace_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for suffix in [".txt.gz", ".txt.xz", ".gz", ".xz", ".txt"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return stem.to_string();
        }
    }
    name
}

/// The public trace files in `dir`, sorted by name.
pub fn public_trace_files(dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    if !dir.is_dir() {
        return Err(BenchError::MissingTraces {
            path: dir.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| BenchError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.to_string_lossy();
            name.ends_with(".txt.gz") || name.ends_with(".txt.xz")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A zipf-distributed trace over `blocks` blocks (block numbers scattered,
/// so popularity has nothing to do with position).
pub fn zipf_trace(alpha: f64, blocks: u64, accesses: usize, seed: u64) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(blocks as usize);
    let mut total = 0.0;
    for rank in 1..=blocks {
        total += 1.0 / (rank as f64).powf(alpha);
        cdf.push(total);
    }
    let mut rng = SimRng::new(seed);
    (0..accesses)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let rank = cdf.partition_point(|c| *c < u) as u64;
            rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
        })
        .collect()
}

/// Held-out workloads over 50 000-block zipf popularity, 1.2 M accesses
/// each, added after the policies were chosen (to see whether choices
/// made on the benchmark's traces carry over):
///
/// * `mix-shifting-zipf-0.9`, `-1.1`: six phases, each a new set of blocks;
/// * `mix-zipf-0.9-scans`: a scan of 20 000 new blocks after every 50 000
///   accesses;
/// * `mix-loop-zipf-3`, `-6`: three (six) accesses in ten walk a loop of
///   3 000 blocks, the rest zipf 0.9.
fn mixed_traces(seed: u64) -> Vec<Trace> {
    const BLOCKS: u64 = 50_000;
    // Tags keep each phase's, scan's and loop's blocks apart from the rest.
    let tag = |t: u64, key: u64| key ^ (t << 48);
    let shifting = |alpha: f64, seed: u64| -> Vec<u64> {
        (0..6u64)
            .flat_map(|phase| {
                zipf_trace(alpha, BLOCKS, 200_000, seed + phase)
                    .into_iter()
                    .map(move |key| tag(phase + 1, key))
            })
            .collect()
    };
    let mut scans = Vec::new();
    let mut next_scanned = 0;
    for (i, key) in zipf_trace(0.9, BLOCKS, 1_000_000, seed + 10)
        .into_iter()
        .enumerate()
    {
        scans.push(key);
        if i % 50_000 == 49_999 {
            scans.extend((next_scanned..next_scanned + 20_000).map(|k| tag(8, k)));
            next_scanned += 20_000;
        }
    }
    let loop_in_zipf = |share: u64, seed: u64| -> Vec<u64> {
        let mut rng = SimRng::new(seed);
        let mut position = 0;
        zipf_trace(0.9, BLOCKS, 1_200_000, seed)
            .into_iter()
            .map(|key| {
                if rng.below(10) < share {
                    position += 1;
                    tag(9, position % 3_000)
                } else {
                    key
                }
            })
            .collect()
    };
    let trace = |name: &str, accesses| Trace {
        name: name.into(),
        accesses,
        hot_after: None,
    };
    vec![
        trace("mix-shifting-zipf-0.9", shifting(0.9, seed + 1)),
        trace("mix-shifting-zipf-1.1", shifting(1.1, seed + 20)),
        trace("mix-zipf-0.9-scans", scans),
        trace("mix-loop-zipf-3", loop_in_zipf(3, seed + 30)),
        trace("mix-loop-zipf-6", loop_in_zipf(6, seed + 40)),
    ]
}

/// A loop over `capacity * 11 / 10` blocks, 20 times: LRU and FIFO never
/// hit.
pub fn loop_trace(capacity: u64) -> Vec<u64> {
    let length = (capacity * 11 / 10).max(capacity + 1);
    (0..20).flat_map(|_| 0..length).collect()
}

/// The `find . -exec grep` pattern: a hot set of half the cache used ten
/// times over in random order, a scan of ten times the cache touching each
/// block once, then one pass over the hot set (from `hot_after` on).
pub fn hot_scan_trace(capacity: u64, seed: u64) -> (Vec<u64>, usize) {
    let hot = (capacity / 2).max(1);
    let mut rng = SimRng::new(seed);
    let mut trace: Vec<u64> = (0..hot * 10).map(|_| rng.below(hot)).collect();
    trace.extend((0..capacity * 10).map(|i| 1_000_000_000 + i));
    let hot_after = trace.len();
    let mut pass: Vec<u64> = (0..hot).collect();
    rng.shuffle(&mut pass);
    trace.extend(pass);
    (trace, hot_after)
}

/// Replays `accesses` through one policy with room for `capacity` blocks;
/// returns a hit flag per access.
pub fn simulate(policy: BenchPolicy, capacity: u64, accesses: &[u64]) -> Vec<bool> {
    let capacity = capacity.max(1);
    let mut hits = Vec::with_capacity(accesses.len());
    match policy {
        BenchPolicy::Keel(kind) => {
            let mut p: Box<dyn Policy> = kind.build(capacity as usize);
            for &key in accesses {
                if p.contains(key) {
                    p.touch(key, Access::Normal);
                    hits.push(true);
                } else {
                    p.insert(key, Access::Normal);
                    while p.len() > capacity as usize {
                        if p.evict(&mut |_| true).is_none() {
                            break;
                        }
                    }
                    hits.push(false);
                }
            }
        }
        BenchPolicy::Arc => {
            let mut arc = crate::policy::ArcReference::new(capacity as usize);
            hits.extend(accesses.iter().map(|&key| arc.access(key)));
        }
        BenchPolicy::QuickCache => {
            let mut cache = quick_cache::unsync::Cache::<u64, ()>::new(capacity as usize);
            for &key in accesses {
                if cache.get(&key).is_some() {
                    hits.push(true);
                } else {
                    cache.insert(key, ());
                    hits.push(false);
                }
            }
        }
        BenchPolicy::Moka => {
            let cache: moka::sync::Cache<u64, ()> =
                moka::sync::Cache::builder().max_capacity(capacity).build();
            for &key in accesses {
                if cache.get(&key).is_some() {
                    hits.push(true);
                } else {
                    cache.insert(key, ());
                    // moka applies evictions lazily, in batches; without
                    // this it would hold more than `capacity` blocks.
                    cache.run_pending_tasks();
                    hits.push(false);
                }
            }
        }
    }
    hits
}

fn distinct(accesses: &[u64]) -> u64 {
    let mut sorted = accesses.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len() as u64
}

/// Replays every trace through every policy at every capacity. `progress`
/// hears one line per trace and capacity.
pub fn run_trace_bench(
    options: &TraceBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<TraceResult>, BenchError> {
    let mut results = Vec::new();
    // Each entry: a trace generator per capacity (pattern traces depend on
    // the capacity) or one trace with capacities from its footprint.
    let mut file_traces: Vec<PathBuf> = Vec::new();
    if options.public_traces {
        file_traces.extend(public_trace_files(&options.traces_dir)?);
    }
    file_traces.extend(options.extra_traces.iter().cloned());

    if options.synthetic_traces {
        for alpha in [0.8, 1.0, 1.2] {
            let trace = Trace {
                name: format!("zipf-{alpha:.1}"),
                accesses: zipf_trace(
                    alpha,
                    options.zipf_blocks,
                    options.zipf_accesses,
                    options.seed,
                ),
                hot_after: None,
            };
            let capacities = capacities_for(options, options.zipf_blocks);
            run_one_trace(options, &trace, &capacities, &mut results, progress);
        }
        for &capacity in &options.pattern_capacities {
            let trace = Trace {
                name: "loop-1.1x".into(),
                accesses: loop_trace(capacity),
                hot_after: None,
            };
            run_one_trace(options, &trace, &[capacity], &mut results, progress);
            let (accesses, hot_after) = hot_scan_trace(capacity, options.seed);
            let trace = Trace {
                name: "hot-set-scan-10x".into(),
                accesses,
                hot_after: Some(hot_after),
            };
            run_one_trace(options, &trace, &[capacity], &mut results, progress);
        }
    }
    if options.mixed_traces {
        for trace in mixed_traces(options.seed) {
            let capacities = capacities_for(options, distinct(&trace.accesses));
            run_one_trace(options, &trace, &capacities, &mut results, progress);
        }
    }
    for path in file_traces {
        progress(&format!("reading {}", path.display()));
        let accesses = read_trace(&path)?;
        let footprint = distinct(&accesses);
        let trace = Trace {
            name: trace_name(&path),
            accesses,
            hot_after: None,
        };
        let capacities = capacities_for(options, footprint);
        run_one_trace(options, &trace, &capacities, &mut results, progress);
    }
    Ok(results)
}

fn capacities_for(options: &TraceBenchOptions, footprint: u64) -> Vec<u64> {
    let mut capacities: Vec<u64> = options
        .size_fractions
        .iter()
        .map(|f| ((footprint as f64 * f).round() as u64).max(2))
        .collect();
    capacities.dedup();
    capacities
}

fn run_one_trace(
    options: &TraceBenchOptions,
    trace: &Trace,
    capacities: &[u64],
    results: &mut Vec<TraceResult>,
    progress: &mut dyn FnMut(&str),
) {
    for &capacity in capacities {
        let mut line = format!("{:<18} {:>7} blocks", trace.name, capacity);
        for &policy in &options.policies {
            let hits = simulate(policy, capacity, &trace.accesses);
            let hit_count = hits.iter().filter(|h| **h).count() as u64;
            let hot_hit_ratio_after_scan = trace.hot_after.map(|from| {
                let tail = &hits[from..];
                tail.iter().filter(|h| **h).count() as f64 / tail.len().max(1) as f64
            });
            let hit_ratio = hit_count as f64 / trace.accesses.len() as f64;
            let _ = write!(line, "  {}={:.4}", policy.name(), hit_ratio);
            results.push(TraceResult {
                trace: trace.name.clone(),
                policy: policy.name().to_string(),
                default: policy.is_default(),
                capacity_blocks: capacity,
                accesses: trace.accesses.len() as u64,
                hits: hit_count,
                hit_ratio,
                hot_hit_ratio_after_scan,
            });
        }
        progress(&line);
    }
}

/// How keel's default did against the best peer at one (trace, capacity).
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub trace: String,
    pub capacity_blocks: u64,
    pub default_hit_ratio: f64,
    pub best_other: String,
    pub best_other_hit_ratio: f64,
    /// Default minus best other, in percentage points.
    pub margin_points: f64,
    /// Within 1 point of the best or better (for the hot-set trace: hot-set
    /// hit ratio after the scan at least 0.90); true for rows that are not
    /// targets.
    pub met: bool,
    /// Whether the issue's targets cover this row: false for the loop and
    /// the held-out mixes, which are reported only.
    pub target: bool,
}

/// The policies the default is held against.
const PEERS: [&str; 3] = ["lru", "quick_cache", "moka"];

/// Checks the issue's targets on a set of results: the default within one
/// percentage point of the best of the others (zipf and file traces), and a
/// hot-set hit ratio of at least 0.90 after the scan.
pub fn check_targets(results: &[TraceResult]) -> Vec<TargetCheck> {
    let mut groups: BTreeMap<(String, u64), Vec<&TraceResult>> = BTreeMap::new();
    for result in results {
        groups
            .entry((result.trace.clone(), result.capacity_blocks))
            .or_default()
            .push(result);
    }
    let mut checks = Vec::new();
    for ((trace, capacity), rows) in groups {
        let Some(default) = rows.iter().find(|r| r.default) else {
            continue;
        };
        let Some(best) = rows
            .iter()
            .filter(|r| !r.default && PEERS.contains(&r.policy.as_str()))
            .max_by(|a, b| a.hit_ratio.total_cmp(&b.hit_ratio))
        else {
            continue;
        };
        let margin_points = (default.hit_ratio - best.hit_ratio) * 100.0;
        // Loops and the held-out mixes are reported, not targets.
        let target = !(trace.starts_with("loop") || trace.starts_with("mix-"));
        let met = match default.hot_hit_ratio_after_scan {
            Some(hot) => hot >= 0.90,
            None => !target || margin_points >= -1.0,
        };
        checks.push(TargetCheck {
            trace,
            capacity_blocks: capacity,
            default_hit_ratio: default.hit_ratio,
            best_other: best.policy.clone(),
            best_other_hit_ratio: best.hit_ratio,
            margin_points,
            met,
            target,
        });
    }
    checks
}

/// The results as a Markdown table: a row per (trace, capacity), a column
/// per policy in [`BenchPolicy::ALL`] order (the default in bold), and the
/// default's margin over the best of lru, quick_cache and moka (✗: target
/// missed).
pub fn markdown_table(results: &[TraceResult]) -> String {
    let policies: Vec<BenchPolicy> = BenchPolicy::ALL.to_vec();
    let mut out = String::from("| trace | blocks |");
    for policy in &policies {
        if policy.is_default() {
            out += &format!(" **{}** (default) |", policy.name());
        } else {
            out += &format!(" {} |", policy.name());
        }
    }
    out += " default − best of lru/quick_cache/moka |\n|---|---:|";
    out += &"---:|".repeat(policies.len() + 1);
    out.push('\n');
    let checks = check_targets(results);
    let mut keys: Vec<(String, u64)> = Vec::new();
    for result in results {
        let key = (result.trace.clone(), result.capacity_blocks);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (trace, capacity) in keys {
        out += &format!("| {trace} | {capacity} |");
        for policy in &policies {
            let ratio = results
                .iter()
                .find(|r| {
                    r.trace == trace && r.capacity_blocks == capacity && r.policy == policy.name()
                })
                .map_or(String::from("–"), |r| format!("{:.4}", r.hit_ratio));
            out += &format!(" {ratio} |");
        }
        let check = checks
            .iter()
            .find(|c| c.trace == trace && c.capacity_blocks == capacity);
        match check {
            Some(check) => {
                out += &format!(
                    " {:+.2}{} |\n",
                    check.margin_points,
                    if check.met { "" } else { " ✗" }
                )
            }
            None => out += " |\n",
        }
    }
    out
}

/// Writes one SVG per trace: hit ratio against cache size, a line per
/// policy. Returns the files written.
pub fn write_plots(results: &[TraceResult], dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut by_trace: BTreeMap<&str, Vec<&TraceResult>> = BTreeMap::new();
    for result in results {
        by_trace.entry(&result.trace).or_default().push(result);
    }
    let mut written = Vec::new();
    for (trace, rows) in by_trace {
        let path = dir.join(format!("cache-{trace}.svg"));
        std::fs::write(&path, svg_plot(trace, &rows)).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// A small hand-written SVG line chart (log-scaled x when sizes span more
/// than a factor of ten).
fn svg_plot(trace: &str, rows: &[&TraceResult]) -> String {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 400.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 190.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    // One colour per policy (the Tableau palette), the default drawn black
    // and thicker.
    let colors = [
        "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    ];
    let mut policies: Vec<&str> = Vec::new();
    for row in rows {
        if !policies.contains(&row.policy.as_str()) {
            policies.push(&row.policy);
        }
    }
    let x_min = rows
        .iter()
        .map(|r| r.capacity_blocks)
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let x_max = rows
        .iter()
        .map(|r| r.capacity_blocks)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let log = x_max / x_min > 10.0;
    let scale_x = |x: f64| {
        let (a, b, v) = if log {
            (x_min.ln(), x_max.ln(), x.ln())
        } else {
            (x_min, x_max, x)
        };
        let t = if b > a { (v - a) / (b - a) } else { 0.5 };
        LEFT + t * (WIDTH - LEFT - RIGHT)
    };
    let scale_y = |y: f64| TOP + (1.0 - y) * (HEIGHT - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{trace}: hit ratio vs cache size</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0
    );
    for tick in 0..=10 {
        let y = tick as f64 / 10.0;
        let py = scale_y(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{y:.1}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0
        );
    }
    let mut capacities: Vec<u64> = rows.iter().map(|r| r.capacity_blocks).collect();
    capacities.sort_unstable();
    capacities.dedup();
    for capacity in &capacities {
        let px = scale_x(*capacity as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{capacity}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">cache size (blocks{})</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        if log { ", log scale" } else { "" }
    );
    for (index, policy) in policies.iter().enumerate() {
        let color = colors[index % colors.len()];
        let mut points: Vec<(u64, f64)> = rows
            .iter()
            .filter(|r| r.policy == *policy)
            .map(|r| (r.capacity_blocks, r.hit_ratio))
            .collect();
        points.sort_by_key(|p| p.0);
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", scale_x(*x as f64), scale_y(*y)))
            .collect();
        let is_default = rows.iter().any(|r| r.policy == *policy && r.default);
        let (color, width) = if is_default {
            ("#000000", 3)
        } else {
            (color, 2)
        };
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"#,
            path.join(" ")
        );
        for point in &path {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 20.0 * index as f64 + 10.0;
        let lx = WIDTH - RIGHT + 12.0;
        let label = if is_default {
            format!("{policy} (keel default)")
        } else {
            policy.to_string()
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="{width}"/><text x="{}" y="{}">{label}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

// ---------------------------------------------------------------------------
// Read-ahead

/// What [`run_readahead_bench`] runs.
#[derive(Clone, Debug)]
pub struct ReadAheadBenchOptions {
    /// Directory for the image file (created and removed).
    pub dir: PathBuf,
    /// Bytes read sequentially (the issue: 256 MiB).
    pub size_bytes: u64,
    /// Cache capacity (smaller than the range, so blocks also get evicted).
    pub cache_bytes: u64,
    /// Open the image with `O_DIRECT`, so that neither path is helped by the
    /// kernel's page cache or its own read-ahead.
    pub direct: bool,
    /// Size of each read of the direct baseline.
    pub direct_read_bytes: usize,
    /// Read-ahead window (the largest prefetch read), in blocks.
    pub max_window_blocks: usize,
    /// Direct and read-ahead-on run this many times, interleaved (the
    /// device's speed drifts); the median run is reported. Read-ahead off
    /// runs once: it is a 4 KiB read per block and takes as long as all the
    /// others together.
    pub repeats: usize,
    /// The cache's replacement policy.
    pub policy: PolicyKind,
}

impl Default for ReadAheadBenchOptions {
    fn default() -> Self {
        ReadAheadBenchOptions {
            dir: std::env::temp_dir(),
            size_bytes: 256 << 20,
            cache_bytes: 64 << 20,
            direct: true,
            direct_read_bytes: 1 << 20,
            max_window_blocks: 256,
            repeats: 7,
            policy: PolicyKind::default(),
        }
    }
}

/// One read-ahead measurement.
#[derive(Clone, Debug, Serialize)]
pub struct ReadAheadResult {
    /// `direct` (large reads straight from the image), `cache-readahead-off`,
    /// `cache-readahead-on` or `reference-pipeline` (no cache: see
    /// [`reference_pipeline`]).
    pub mode: String,
    pub o_direct: bool,
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_second: f64,
    /// Throughput over the direct baseline's: the median over the runs of
    /// each run's ratio to the direct run just before it.
    pub ratio_to_direct: f64,
    pub device_reads: u64,
    pub prefetched_blocks: u64,
    pub prefetch_hits: u64,
    pub prefetch_waste: u64,
}

/// Drops the image's pages from the kernel's page cache, so a buffered run
/// reads from the device.
fn drop_page_cache(path: &Path) {
    use std::os::unix::io::AsRawFd;
    if let Ok(file) = std::fs::File::open(path) {
        // SAFETY: a plain syscall on a descriptor we own; it only advises.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// Sequential read of `size_bytes` through the cache with read-ahead off and
/// on, against large direct reads of the same image.
pub fn run_readahead_bench(
    options: &ReadAheadBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ReadAheadResult>, BenchError> {
    let block_size = keel_disk::DEFAULT_BLOCK_SIZE;
    let blocks = options.size_bytes / block_size as u64;
    let path = options
        .dir
        .join(format!("keel-readahead-bench-{}.img", std::process::id()));
    progress(&format!(
        "creating {} ({} MiB)",
        path.display(),
        options.size_bytes >> 20
    ));
    let open = || {
        FileDisk::open(
            &path,
            FileDiskOptions {
                block_size,
                direct: options.direct,
                read_only: true,
            },
        )
    };
    // Everything from the image's creation on is inside, so that a failure
    // anywhere still removes the image below.
    let result = (|| {
        {
            let disk = FileDisk::create(&path, block_size, blocks)?;
            let mut rng = SimRng::new(7);
            let chunk_blocks = 256u64;
            let mut chunk = vec![0u8; chunk_blocks as usize * block_size];
            let mut start = 0;
            while start < blocks {
                let count = chunk_blocks.min(blocks - start);
                rng.fill(&mut chunk[..count as usize * block_size]);
                disk.write_blocks(start, &chunk[..count as usize * block_size])?;
                start += count;
            }
            disk.flush()?;
        }
        let total_bytes = blocks * block_size as u64;
        // Per mode: the runs' (seconds, device reads, stats).
        let mut runs: Vec<Vec<(f64, u64, crate::CacheStats)>> = vec![Vec::new(); 4];
        // What the read-ahead-on run read (a byte of every block), which the
        // other runs that read every block must match.
        let mut expected = None;
        for repeat in 0..options.repeats.max(1) {
            // Direct: the same bytes with large reads and nothing in between.
            drop_page_cache(&path);
            let disk = open()?;
            let read_blocks = (options.direct_read_bytes / block_size).max(1) as u64;
            // Page-aligned, like the cache's read-ahead buffers, so neither
            // side pays for a bounce buffer under O_DIRECT.
            let mut backing = vec![0u8; read_blocks as usize * block_size + 4096];
            let offset = backing.as_ptr().align_offset(4096).min(4096);
            let buffer = &mut backing[offset..offset + read_blocks as usize * block_size];
            let started = Instant::now();
            let mut start = 0;
            let mut reads = 0;
            let mut checksum = 0u64;
            while start < blocks {
                let count = read_blocks.min(blocks - start);
                disk.read_blocks(start, &mut buffer[..count as usize * block_size])?;
                checksum = checksum.wrapping_add(buffer[0] as u64);
                reads += 1;
                start += count;
            }
            runs[0].push((started.elapsed().as_secs_f64(), reads, Default::default()));
            std::hint::black_box(checksum);
            for (mode, read_ahead) in [(1, false), (2, true)] {
                if mode == 1 && repeat > 0 {
                    // Read-ahead off is a 4 KiB read per block: one run
                    // shows it (and takes as long as all the others).
                    continue;
                }
                drop_page_cache(&path);
                let disk: Arc<dyn BlockDevice> = Arc::new(open()?);
                let cache = Cache::new(
                    disk,
                    CacheConfig {
                        capacity_bytes: options.cache_bytes,
                        policy: options.policy,
                        background_flusher: false,
                        read_ahead: ReadAheadConfig {
                            enabled: read_ahead,
                            max_window_blocks: options.max_window_blocks,
                            ..ReadAheadConfig::default()
                        },
                        ..CacheConfig::default()
                    },
                )?;
                let mut block_buffer = vec![0u8; block_size];
                let started = Instant::now();
                let mut checksum = 0u64;
                for block in 0..blocks {
                    cache.read_into(block, ReadHint::Normal, &mut block_buffer)?;
                    checksum = checksum.wrapping_add(block_buffer[0] as u64);
                }
                let seconds = started.elapsed().as_secs_f64();
                let stats = cache.stats();
                runs[mode].push((seconds, stats.read_ios, stats));
                let mode_name = ["", "cache-readahead-off", "cache-readahead-on"][mode];
                check_checksum(&path, mode_name, checksum, &mut expected)?;
            }
            drop_page_cache(&path);
            let (seconds, reads, checksum) = reference_pipeline(
                open()?,
                blocks,
                options.max_window_blocks.max(1) as u64,
                (options.cache_bytes / block_size as u64).max(1) as usize,
            )?;
            runs[3].push((seconds, reads, Default::default()));
            check_checksum(&path, "reference-pipeline", checksum, &mut expected)?;
            let mib_s = |seconds: f64| total_bytes as f64 / 1048576.0 / seconds;
            progress(&format!(
                "run {}: direct {:.0} MiB/s, read-ahead on {:.0} MiB/s ({:.2} of direct), \
                 reference pipeline {:.0} MiB/s ({:.2}){}",
                repeat + 1,
                mib_s(runs[0][repeat].0),
                mib_s(runs[2][repeat].0),
                runs[0][repeat].0 / runs[2][repeat].0,
                mib_s(runs[3][repeat].0),
                runs[0][repeat].0 / runs[3][repeat].0,
                if repeat == 0 {
                    format!(", off {:.0} MiB/s", mib_s(runs[1][0].0))
                } else {
                    String::new()
                },
            ));
        }
        // The ratio is the median of each run's ratio to the direct run just
        // before it: the device's speed drifts between runs, and a pair
        // measured back to back shares the drift.
        let ratios = |mode_runs: &[(f64, u64, crate::CacheStats)]| {
            let mut ratios: Vec<f64> = mode_runs
                .iter()
                .zip(&runs[0])
                .map(|(run, direct)| direct.0 / run.0)
                .collect();
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        };
        let ratio_by_mode: Vec<f64> = runs.iter().map(|mode_runs| ratios(mode_runs)).collect();
        let median = |mode_runs: &mut Vec<(f64, u64, crate::CacheStats)>| {
            mode_runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            mode_runs[mode_runs.len() / 2].clone()
        };
        let mut results = Vec::new();
        for (index, mode) in [
            "direct",
            "cache-readahead-off",
            "cache-readahead-on",
            "reference-pipeline",
        ]
        .iter()
        .enumerate()
        {
            let (seconds, device_reads, stats) = median(&mut runs[index]);
            results.push(ReadAheadResult {
                mode: mode.to_string(),
                o_direct: options.direct,
                bytes: total_bytes,
                seconds,
                mib_per_second: total_bytes as f64 / 1048576.0 / seconds,
                ratio_to_direct: ratio_by_mode[index],
                device_reads,
                prefetched_blocks: stats.prefetched,
                prefetch_hits: stats.prefetch_hits,
                prefetch_waste: stats.prefetch_waste,
            });
        }
        Ok(results)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Records the first checksum of a run that read every block, and fails
/// when a later one differs: every mode must read the same bytes.
fn check_checksum(
    path: &Path,
    mode: &'static str,
    got: u64,
    expected: &mut Option<u64>,
) -> Result<(), BenchError> {
    match *expected {
        None => {
            *expected = Some(got);
            Ok(())
        }
        Some(expected) if expected == got => Ok(()),
        Some(expected) => Err(BenchError::ChecksumMismatch {
            path: path.to_path_buf(),
            mode,
            got,
            expected,
        }),
    }
}

/// The sequential read with no cache in it, as a reference for what this
/// host allows any cache that stages blocks in memory: one thread reads
/// `window` blocks at a time, back to back, into two page-aligned buffers
/// (the cache's two read-ahead workers keep one each), and the caller
/// copies each block into a frame of a ring as large as the cache and from
/// there into its own buffer, as a cache's read-ahead and a hit do. No
/// lookup, no policy, no locks. Returns the seconds, the device reads and
/// the checksum (the first byte of every block, summed, as the cache runs
/// compute it).
fn reference_pipeline(
    disk: FileDisk,
    blocks: u64,
    window: u64,
    frame_count: usize,
) -> Result<(f64, u64, u64), BenchError> {
    use std::sync::mpsc;
    const PAGE: usize = 4096;
    let block_size = disk.block_size();
    type Filled = Result<(u64, usize, usize, Vec<u8>), keel_disk::DiskError>;
    let (filled_tx, filled_rx) = mpsc::sync_channel::<Filled>(2);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..2 {
        // Cannot fail: the receiver is alive.
        let _ = free_tx.send(vec![0u8; window as usize * block_size + PAGE]);
    }
    let mut frames: Vec<Box<[u8]>> = (0..frame_count.max(1))
        .map(|_| vec![0u8; block_size].into_boxed_slice())
        .collect();
    let mut out = vec![0u8; block_size];
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut start = 0;
            while start < blocks {
                let Ok(mut buffer) = free_rx.recv() else {
                    return;
                };
                let count = window.min(blocks - start);
                let offset = buffer.as_ptr().align_offset(PAGE).min(PAGE);
                let bytes = count as usize * block_size;
                let read = disk
                    .read_blocks(start, &mut buffer[offset..offset + bytes])
                    .map(|()| (start, count as usize, offset, buffer));
                let failed = read.is_err();
                if filled_tx.send(read).is_err() || failed {
                    return;
                }
                start += count;
            }
        });
        // Owned here, so that leaving early (a failed read) drops them and
        // the reader, blocked on either channel, stops before the scope
        // joins it.
        let (free_tx, filled_rx) = (free_tx, filled_rx);
        let (mut next, mut reads, mut checksum) = (0u64, 0u64, 0u64);
        while next < blocks {
            let Ok(filled) = filled_rx.recv() else {
                break;
            };
            let (start, count, offset, buffer) = filled?;
            for index in 0..count {
                let block = start + index as u64;
                let frame = &mut frames[block as usize % frame_count.max(1)];
                let from = offset + index * block_size;
                frame.copy_from_slice(&buffer[from..from + block_size]);
                out.copy_from_slice(frame);
                checksum = checksum.wrapping_add(out[0] as u64);
            }
            reads += 1;
            next = start + count as u64;
            // The reader may have stopped after its last read: nothing to do.
            let _ = free_tx.send(buffer);
        }
        Ok((started.elapsed().as_secs_f64(), reads, checksum))
    })
}

// ---------------------------------------------------------------------------
// Hit throughput

/// What [`run_hit_throughput_bench`] runs.
#[derive(Clone, Debug)]
pub struct HitBenchOptions {
    /// Resident blocks (all hits after warm-up).
    pub blocks: u64,
    /// Block size in bytes.
    pub block_size: usize,
    /// Reads per thread.
    pub ops_per_thread: usize,
    /// Thread counts to run.
    pub threads: Vec<usize>,
    /// keel's replacement policy.
    pub policy: PolicyKind,
}

impl Default for HitBenchOptions {
    fn default() -> Self {
        HitBenchOptions {
            blocks: 16_384,
            block_size: keel_disk::DEFAULT_BLOCK_SIZE,
            ops_per_thread: 2_000_000,
            threads: vec![1, 2],
            policy: PolicyKind::default(),
        }
    }
}

/// One hit-throughput measurement.
#[derive(Clone, Debug, Serialize)]
pub struct HitThroughputResult {
    /// `keel` (reads with `ReadHint::NoReadAhead`), `keel-readahead-on`
    /// (reads with `ReadHint::Normal`, read-ahead watching every read),
    /// `quick_cache` or `moka`.
    pub cache: String,
    /// Resident blocks every reader picks from (uniformly at random).
    pub capacity_blocks: u64,
    pub threads: usize,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_second: f64,
    /// CPU time the reading threads got, summed. On a shared machine the
    /// threads may not get a core each; `ops / cpu_seconds` shows whether
    /// the cache itself scales (it stays flat when threads do not contend).
    pub cpu_seconds: f64,
    pub ops_per_cpu_second: f64,
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time);
    }
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

/// Reads of resident blocks, uniformly at random (the same stream for every
/// cache), on each thread count: keel returns a pinned guard, the peers an
/// `Arc` of the block's bytes.
pub fn run_hit_throughput_bench(
    options: &HitBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<HitThroughputResult>, BenchError> {
    let block_size = options.block_size;
    let disk: Arc<dyn BlockDevice> = Arc::new(MemDisk::new(block_size, options.blocks));
    let cache = Cache::new(
        disk,
        CacheConfig {
            capacity_bytes: options.blocks * block_size as u64,
            policy: options.policy,
            background_flusher: false,
            read_ahead: ReadAheadConfig {
                enabled: false,
                ..ReadAheadConfig::default()
            },
            ..CacheConfig::default()
        },
    )?;
    // The same cache with read-ahead watching every read (ReadHint::Normal),
    // as the file system's reads would be.
    let watched = Cache::new(
        Arc::new(MemDisk::new(block_size, options.blocks)),
        CacheConfig {
            capacity_bytes: options.blocks * block_size as u64,
            policy: options.policy,
            background_flusher: false,
            ..CacheConfig::default()
        },
    )?;
    let quick = quick_cache::sync::Cache::<u64, Arc<[u8]>>::new(options.blocks as usize);
    let moka: moka::sync::Cache<u64, Arc<[u8]>> = moka::sync::Cache::builder()
        .max_capacity(options.blocks)
        .build();
    for block in 0..options.blocks {
        drop(cache.read(block, ReadHint::NoReadAhead)?);
        drop(watched.read(block, ReadHint::NoReadAhead)?);
        // Real bytes, written: untouched zeroed memory would all map to the
        // kernel's one zero page and make the peers' reads look free.
        let bytes: Arc<[u8]> = vec![(block % 251) as u8 + 1; block_size].into();
        quick.insert(block, bytes.clone());
        moka.insert(block, bytes);
    }
    moka.run_pending_tasks();
    let streams: Vec<Vec<u64>> = (0..options.threads.iter().copied().max().unwrap_or(1))
        .map(|t| {
            let mut rng = SimRng::new(1_000 + t as u64);
            (0..options.ops_per_thread)
                .map(|_| rng.below(options.blocks))
                .collect()
        })
        .collect();
    let mut results = Vec::new();
    for &threads in &options.threads {
        for name in ["keel", "keel-readahead-on", "quick_cache", "moka"] {
            let started = Instant::now();
            let per_thread: Vec<(u64, f64)> = std::thread::scope(|scope| {
                let handles: Vec<_> = streams[..threads]
                    .iter()
                    .map(|stream| {
                        let cache = &cache;
                        let quick = &quick;
                        let moka = &moka;
                        let watched = &watched;
                        scope.spawn(move || {
                            let cpu_started = thread_cpu_seconds();
                            let mut hits = 0u64;
                            let mut sum = 0u64;
                            for &block in stream {
                                // Every cache hands out the block and the
                                // reader touches its bytes.
                                let byte = match name {
                                    "keel" => {
                                        cache.read(block, ReadHint::NoReadAhead).ok().map(|b| b[0])
                                    }
                                    "keel-readahead-on" => {
                                        watched.read(block, ReadHint::Normal).ok().map(|b| b[0])
                                    }
                                    "quick_cache" => quick.get(&block).map(|b| b[0]),
                                    _ => moka.get(&block).map(|b| b[0]),
                                };
                                if let Some(byte) = byte {
                                    hits += 1;
                                    sum = sum.wrapping_add(byte as u64);
                                }
                            }
                            std::hint::black_box(sum);
                            (hits, thread_cpu_seconds() - cpu_started)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or((0, 0.0)))
                    .collect()
            });
            let seconds = started.elapsed().as_secs_f64();
            let ops = (threads * options.ops_per_thread) as u64;
            let hits: u64 = per_thread.iter().map(|t| t.0).sum();
            let cpu_seconds: f64 = per_thread.iter().map(|t| t.1).sum();
            let result = HitThroughputResult {
                cache: name.to_string(),
                capacity_blocks: options.blocks,
                threads,
                ops,
                seconds,
                ops_per_second: ops as f64 / seconds,
                cpu_seconds,
                ops_per_cpu_second: ops as f64 / cpu_seconds.max(1e-9),
            };
            progress(&format!(
                "{name:<12} {} blocks, {threads} thread(s): {:>12.0} ops/s, {:>12.0} ops per CPU-second ({} of {} were hits)",
                options.blocks, result.ops_per_second, result.ops_per_cpu_second, hits, ops
            ));
            results.push(result);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_set_survives_the_scan_under_the_default_and_not_under_lru() {
        let (trace, hot_after) = hot_scan_trace(1_000, 1);
        let score = |policy| {
            let hits = simulate(policy, 1_000, &trace);
            let tail = &hits[hot_after..];
            tail.iter().filter(|h| **h).count() as f64 / tail.len() as f64
        };
        assert!(score(BenchPolicy::Keel(PolicyKind::default())) >= 0.9);
        assert!(score(BenchPolicy::Keel(PolicyKind::Lru)) < 0.05);
    }

    /// A read-ahead benchmark small enough for a test, on a buffered image.
    fn small_readahead_options(
        dir: &Path,
        size_bytes: u64,
        cache_bytes: u64,
        repeats: usize,
    ) -> ReadAheadBenchOptions {
        ReadAheadBenchOptions {
            dir: dir.to_path_buf(),
            size_bytes,
            cache_bytes,
            direct: false,
            repeats,
            ..ReadAheadBenchOptions::default()
        }
    }

    /// Every mode of the read-ahead benchmark reads the same bytes (the
    /// benchmark compares what each read and fails otherwise), and the
    /// reference pipeline reads in windows as large as read-ahead's.
    #[test]
    fn readahead_bench_modes_read_the_same_bytes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = small_readahead_options(dir.path(), 4 << 20, 1 << 20, 2);
        let results = run_readahead_bench(&options, &mut |_| {}).expect("the benchmark runs");
        let modes: Vec<&str> = results.iter().map(|r| r.mode.as_str()).collect();
        assert_eq!(
            modes,
            [
                "direct",
                "cache-readahead-off",
                "cache-readahead-on",
                "reference-pipeline"
            ]
        );
        // 4 MiB in 1 MiB reads, like the direct baseline's.
        assert_eq!(results[3].device_reads, 4);
        assert_eq!(results[0].device_reads, 4);
        // Read-ahead off reads block by block.
        assert_eq!(results[1].device_reads, 1024);
    }

    /// A benchmark that fails (here: a cache too small for one block)
    /// reports why and leaves no 256 MiB image behind.
    #[test]
    fn a_failed_readahead_bench_removes_its_image() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = small_readahead_options(dir.path(), 1 << 20, 0, 1);
        let error = run_readahead_bench(&options, &mut |_| {}).expect_err("no room for a block");
        assert!(error.to_string().contains("holds no"), "{error}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("the directory")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn a_mode_that_read_other_bytes_is_named() {
        let path = Path::new("/images/bench.img");
        let mut expected = None;
        check_checksum(path, "cache-readahead-on", 7, &mut expected).expect("the first sets it");
        check_checksum(path, "cache-readahead-off", 7, &mut expected).expect("the same bytes");
        let error = check_checksum(path, "reference-pipeline", 8, &mut expected)
            .expect_err("other bytes")
            .to_string();
        assert!(
            error.contains("/images/bench.img") && error.contains("reference-pipeline"),
            "{error}"
        );
    }

    /// The held-out mixes are what their names say, and the targets do not
    /// count them.
    #[test]
    fn mixed_traces_are_shaped_as_documented_and_not_targets() {
        let traces = mixed_traces(42);
        let names: Vec<&str> = traces.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mix-shifting-zipf-0.9",
                "mix-shifting-zipf-1.1",
                "mix-zipf-0.9-scans",
                "mix-loop-zipf-3",
                "mix-loop-zipf-6"
            ]
        );
        // Six phases of new blocks: no block of one phase recurs in another.
        let shifting = &traces[0].accesses;
        assert_eq!(shifting.len(), 1_200_000);
        let first: std::collections::HashSet<u64> = shifting[..200_000].iter().copied().collect();
        assert!(shifting[200_000..].iter().all(|key| !first.contains(key)));
        // Twenty scans of 20 000 blocks never seen again.
        let scans = &traces[2].accesses;
        assert_eq!(scans.len(), 1_000_000 + 20 * 20_000);
        let scanned = &scans[50_000..70_000];
        assert!(scanned.windows(2).all(|pair| pair[1] == pair[0] + 1));
        // Three accesses in ten (about) walk the 3 000-block loop.
        let looped = traces[3]
            .accesses
            .iter()
            .filter(|key| *key >> 48 == 9)
            .count();
        let share = looped as f64 / traces[3].accesses.len() as f64;
        assert!((0.28..0.32).contains(&share), "loop share {share}");
        let row = |trace: &str, policy: BenchPolicy, hit_ratio| TraceResult {
            trace: trace.into(),
            policy: policy.name().into(),
            default: policy.is_default(),
            capacity_blocks: 100,
            accesses: 1,
            hits: 0,
            hit_ratio,
            hot_hit_ratio_after_scan: None,
        };
        let results: Vec<TraceResult> = ["mix-loop-zipf-3", "zipf-1.0"]
            .iter()
            .flat_map(|trace| {
                [
                    row(trace, BenchPolicy::Keel(PolicyKind::default()), 0.40),
                    row(trace, BenchPolicy::Moka, 0.50),
                ]
            })
            .collect();
        let checks = check_targets(&results);
        let met = |trace: &str| checks.iter().find(|c| c.trace == trace).unwrap().met;
        assert!(met("mix-loop-zipf-3"), "a mix is reported, not a target");
        assert!(
            !checks
                .iter()
                .find(|c| c.trace == "mix-loop-zipf-3")
                .unwrap()
                .target
        );
        assert!(
            !met("zipf-1.0"),
            "ten points behind on zipf misses the target"
        );
    }

    #[test]
    fn traces_read_compressed_and_plain_and_bad_lines_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("t.txt");
        std::fs::write(&plain, "1\n2\n\n# note\n3\n").unwrap();
        assert_eq!(read_trace(&plain).unwrap(), vec![1, 2, 3]);
        let gz = dir.path().join("t.txt.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, b"5\n6\n").unwrap();
        std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
        assert_eq!(read_trace(&gz).unwrap(), vec![5, 6]);
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "1\nxyz\n").unwrap();
        assert!(matches!(
            read_trace(&bad),
            Err(BenchError::BadLine { line: 2, .. })
        ));
        let missing = run_trace_bench(
            &TraceBenchOptions {
                traces_dir: dir.path().join("nope"),
                synthetic_traces: false,
                ..TraceBenchOptions::default()
            },
            &mut |_| {},
        );
        assert!(matches!(missing, Err(BenchError::MissingTraces { .. })));
    }

    #[test]
    fn a_small_run_produces_rows_targets_and_plots() {
        let options = TraceBenchOptions {
            public_traces: false,
            zipf_accesses: 20_000,
            zipf_blocks: 2_000,
            pattern_capacities: vec![100],
            size_fractions: vec![0.05, 0.2],
            ..TraceBenchOptions::default()
        };
        let results = run_trace_bench(&options, &mut |_| {}).unwrap();
        // 3 zipf × 2 sizes + loop + hot-scan, × every policy.
        assert_eq!(results.len(), (3 * 2 + 2) * BenchPolicy::ALL.len());
        let json = serde_json::to_string(&results[0]).unwrap();
        assert!(json.contains("\"hit_ratio\"") && json.contains("\"default\""));
        let checks = check_targets(&results);
        assert_eq!(checks.len(), 8);
        let dir = tempfile::tempdir().unwrap();
        let plots = write_plots(&results, dir.path()).unwrap();
        assert_eq!(plots.len(), 5);
        assert!(std::fs::read_to_string(&plots[0])
            .unwrap()
            .contains("<polyline"));
    }
}
