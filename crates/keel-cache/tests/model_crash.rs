//! The cache against a model, under concurrent random reads, writes, syncs
//! and resizes, with a crash at a random point on a SimDisk.
//!
//! Each thread owns the blocks `b % threads == t`, so its own history of
//! each block is sequential and the model is exact: a read must return the
//! latest version written; after the crash, every sector of every block
//! must hold a version no older than the one the thread's last successful
//! `sync` covered and no newer than the latest written (torn at sector
//! granularity in between is allowed: unsynced writes may partly land).
//! Then the post-crash image, served by a new cache, must read back as is.
//!
//! Replay with `KEEL_SEED=<seed>`: the same seed gives every thread the same
//! operations; the interleaving of threads is up to the scheduler.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_cache::{Cache, CacheConfig, PolicyKind, ReadAheadConfig, ReadHint};
use keel_disk::sim::CrashMode;
use keel_disk::{SimDisk, SimRng};

const BS: usize = 1024;
const BLOCKS: u64 = 96;

struct Outcome {
    /// Per block: (version covered by the last Ok sync, latest version).
    bounds: Vec<(u64, u64)>,
}

fn run_one(seed: u64, threads: u64, crash: bool) {
    let mut rng = SimRng::new(seed);
    let disk = Arc::new(SimDisk::new("model", BS, BLOCKS, rng.next_u64()));
    let config = CacheConfig {
        capacity_bytes: (4 + rng.below(40)) * BS as u64,
        // Every policy, the default included: eviction decides what may
        // leave (pinned, dirty and held-back blocks may not).
        policy: PolicyKind::ALL[rng.below(PolicyKind::ALL.len() as u64) as usize],
        shards: 1 + rng.below(4) as usize,
        background_flusher: rng.coin(),
        flush_interval: Duration::from_millis(1 + rng.below(5)),
        dirty_high_water_percent: 10 + rng.below(90) as u8,
        max_write_blocks: 1 + rng.below(16) as usize,
        read_ahead: ReadAheadConfig {
            enabled: rng.coin(),
            initial_window_blocks: 2,
            max_window_blocks: 8,
            ..ReadAheadConfig::default()
        },
    };
    let cache = Cache::new(disk.clone(), config.clone()).unwrap();
    let crashed = Arc::new(AtomicBool::new(false));
    let crash_image = Arc::new(parking_lot_free::Slot::default());
    let ops_per_thread = 400;
    let crash_at = if crash {
        Some(rng.below(ops_per_thread))
    } else {
        None
    };
    let thread_seeds: Vec<u64> = (0..threads).map(|_| rng.next_u64()).collect();
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = thread_seeds
            .iter()
            .enumerate()
            .map(|(t, &thread_seed)| {
                let cache = &cache;
                let disk = &disk;
                let crashed = &crashed;
                let crash_image = &crash_image;
                scope.spawn(move || {
                    let t = t as u64;
                    let mut rng = SimRng::new(thread_seed);
                    let mine: Vec<u64> = (0..BLOCKS).filter(|b| b % threads == t).collect();
                    let mut bounds = vec![(0u64, 0u64); BLOCKS as usize];
                    for op in 0..ops_per_thread {
                        if t == 0 && crash_at == Some(op) {
                            let mode = [CrashMode::Random, CrashMode::LoseAllUnflushed, CrashMode::KeepAllUnflushed]
                                [rng.below(3) as usize];
                            // The flag goes up first, so that no failure the
                            // crash causes is seen before it.
                            crashed.store(true, Ordering::SeqCst);
                            crash_image.put(disk.crash(mode, rng.next_u64()));
                        }
                        let block = mine[rng.below(mine.len() as u64) as usize];
                        match rng.below(20) {
                            0..=7 => {
                                let hint = [ReadHint::Normal, ReadHint::UseOnce, ReadHint::NoReadAhead][rng.below(3) as usize];
                                match cache.read(block, hint) {
                                    Ok(data) => {
                                        let latest = bounds[block as usize].1;
                                        assert!(
                                            data[..] == common::pattern(block, latest, BS)[..],
                                            "seed {seed}: block {block} read back wrong (expected version {latest})"
                                        );
                                    }
                                    Err(error) => assert!(crashed.load(Ordering::SeqCst), "seed {seed}: read failed before the crash: {error}"),
                                }
                            }
                            8..=9 => {
                                // Sequential run, to exercise read-ahead.
                                for b in mine.iter().filter(|b| **b >= block).take(6) {
                                    if let Ok(data) = cache.read(*b, ReadHint::Normal) {
                                        let latest = bounds[*b as usize].1;
                                        assert!(data[..] == common::pattern(*b, latest, BS)[..], "seed {seed}: block {b}");
                                    } else {
                                        assert!(crashed.load(Ordering::SeqCst), "seed {seed}: read failed before the crash");
                                    }
                                }
                            }
                            10..=15 => {
                                let version = bounds[block as usize].1 + 1;
                                cache.write(block, &common::pattern(block, version, BS)).unwrap();
                                bounds[block as usize].1 = version;
                            }
                            16 => {
                                let version = bounds[block as usize].1 + 1;
                                match cache.modify(block) {
                                    Ok(mut guard) => {
                                        guard.copy_from_slice(&common::pattern(block, version, BS));
                                        drop(guard);
                                        bounds[block as usize].1 = version;
                                    }
                                    Err(error) => assert!(crashed.load(Ordering::SeqCst), "seed {seed}: modify failed before the crash: {error}"),
                                }
                            }
                            17..=18 => {
                                let covered: Vec<(u64, u64)> = mine.iter().map(|b| (*b, bounds[*b as usize].1)).collect();
                                match cache.sync() {
                                    Ok(()) => {
                                        for (b, version) in covered {
                                            bounds[b as usize].0 = version;
                                        }
                                    }
                                    Err(error) => assert!(
                                        crashed.load(Ordering::SeqCst),
                                        "seed {seed}: sync failed before the crash: {error}"
                                    ),
                                }
                            }
                            _ => {
                                let blocks = 2 + rng.below(48);
                                let _ = cache.resize(blocks * BS as u64);
                            }
                        }
                    }
                    Outcome { bounds }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let image = match crash_image.take() {
        Some(image) => image,
        None => {
            // No crash during the run: sync, then crash.
            cache
                .sync()
                .unwrap_or_else(|e| panic!("seed {seed}: final sync failed: {e}"));
            disk.crash(CrashMode::Random, seed)
        }
    };
    let synced_at_end = crash_at.is_none();
    drop(cache);
    for block in 0..BLOCKS {
        let owner = &outcomes[(block % threads) as usize];
        let (synced, latest) = owner.bounds[block as usize];
        let low = if synced_at_end { latest } else { synced };
        let bytes = &image[block as usize * BS..(block as usize + 1) * BS];
        for (sector, sector_bytes) in bytes.chunks(keel_disk::SECTOR_SIZE).enumerate() {
            let version = common::sector_version(block, sector_bytes, BS);
            assert!(
                version.is_some_and(|v| v >= low && v <= latest),
                "seed {seed}: block {block} sector {sector} holds {version:?}, allowed {low}..={latest}"
            );
        }
    }
    // Reboot: a fresh cache over the post-crash image reads it back as is.
    let rebooted = Arc::new(SimDisk::from_image("model", BS, image.clone(), seed));
    let cache = Cache::new(
        rebooted,
        CacheConfig {
            background_flusher: false,
            ..config
        },
    )
    .unwrap();
    for block in 0..BLOCKS {
        let data = cache.read(block, ReadHint::Normal).unwrap();
        assert!(
            data[..] == image[block as usize * BS..(block as usize + 1) * BS],
            "seed {seed}: block {block} after reboot"
        );
    }
}

/// A tiny once-written slot (std only).
mod parking_lot_free {
    use std::sync::Mutex;
    #[derive(Default)]
    pub struct Slot(Mutex<Option<Vec<u8>>>);
    impl Slot {
        pub fn put(&self, image: Vec<u8>) {
            *self.0.lock().unwrap() = Some(image);
        }
        pub fn take(&self) -> Option<Vec<u8>> {
            self.0.lock().unwrap().take()
        }
    }
}

#[test]
fn concurrent_operations_then_crash_match_the_model() {
    let base = common::seed("concurrent_operations_then_crash_match_the_model");
    for round in 0..150u64 {
        let seed = base.wrapping_add(round);
        run_one(seed, 1 + seed % 3, seed % 4 != 0);
    }
}
