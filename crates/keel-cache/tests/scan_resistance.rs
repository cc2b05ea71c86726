//! Scan resistance on the real `Cache` with read-ahead on: a hot set read
//! often survives one long sequential scan under the default policy (see
//! "Known interaction" in docs/cache.md), and LRU loses it (so the test can
//! fail). `KEEL_SEED=<n>` replays one seed.

use std::sync::Arc;

use keel_cache::{Cache, CacheConfig, PolicyKind, ReadAheadConfig, ReadHint};
use keel_disk::{MemDisk, SimRng};

const BS: usize = 4096;
const DISK_BLOCKS: u64 = 10_500;
const CAPACITY_BLOCKS: u64 = 1_000;
const HOT: u64 = 500;
const HOT_READS: usize = 5_000;

/// Share of the hot set still cached after the scan: the share resident
/// once read-ahead is idle, and the share of a re-read of the hot set that
/// hit without help from read-ahead (hits on blocks prefetched during the
/// re-read itself do not count).
fn hot_kept_after_scan(policy: PolicyKind, read_ahead: bool, seed: u64) -> (f64, f64) {
    let disk = Arc::new(MemDisk::new(BS, DISK_BLOCKS));
    let cache = Cache::new(
        disk,
        CacheConfig {
            capacity_bytes: CAPACITY_BLOCKS * BS as u64,
            policy,
            background_flusher: false,
            read_ahead: ReadAheadConfig {
                enabled: read_ahead,
                ..ReadAheadConfig::default()
            },
            ..CacheConfig::default()
        },
    )
    .unwrap();
    let mut rng = SimRng::new(seed);
    let mut buf = vec![0u8; BS];
    for _ in 0..HOT_READS {
        cache
            .read_into(rng.below(HOT), ReadHint::Normal, &mut buf)
            .unwrap();
    }
    for block in HOT..DISK_BLOCKS {
        cache.read_into(block, ReadHint::Normal, &mut buf).unwrap();
    }
    cache.wait_for_read_ahead();
    let resident = (0..HOT).filter(|block| cache.contains(*block)).count();
    let before = cache.stats();
    for block in 0..HOT {
        cache.read_into(block, ReadHint::Normal, &mut buf).unwrap();
    }
    let after = cache.stats();
    let hits = (after.hits - before.hits) - (after.prefetch_hits - before.prefetch_hits);
    (resident as f64 / HOT as f64, hits as f64 / HOT as f64)
}

fn seeds() -> Vec<u64> {
    match std::env::var("KEEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("KEEL_SEED must be a number")],
        Err(_) => (1001..1025).collect(),
    }
}

/// The default and the scan-resistant policies it is made of (read-ahead
/// takes room differently in each; LIRS kept 0.68 of the hot set here
/// before it learned to give up unused LIR blocks and prefetches first).
#[test]
fn scan_resistant_policies_keep_hot_set_through_a_scan_with_read_ahead() {
    for policy in [
        PolicyKind::default(),
        PolicyKind::WTinyLfu,
        PolicyKind::Lirs,
    ] {
        let name = policy.name();
        let mut worst = (1.0f64, 0);
        let mut failures = Vec::new();
        for seed in seeds() {
            let (resident, hit) = hot_kept_after_scan(policy, true, seed);
            println!(
                "seed {seed}: {name} with read-ahead kept {resident:.3} of the hot set \
                 (re-read hit {hit:.3})"
            );
            let kept = resident.min(hit);
            if kept < worst.0 {
                worst = (kept, seed);
            }
            if kept < 0.98 {
                failures.push((seed, kept));
            }
        }
        println!("{name} worst: {:.3} (seed {})", worst.0, worst.1);
        assert!(
            failures.is_empty(),
            "{name}: hot set lost to a scan (seed, share kept; replay with KEEL_SEED): {failures:?}"
        );
    }
}

#[test]
fn lru_loses_hot_set_to_a_scan_with_read_ahead() {
    for seed in seeds().into_iter().take(3) {
        let (resident, hit) = hot_kept_after_scan(PolicyKind::Lru, true, seed);
        println!(
            "seed {seed}: lru with read-ahead kept {resident:.3} of the hot set \
             (re-read hit {hit:.3})"
        );
        let kept = resident.max(hit);
        assert!(kept < 0.1, "seed {seed}: LRU kept {kept:.3}");
    }
}
