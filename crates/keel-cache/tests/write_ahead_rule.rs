//! The write-ahead rule under random operations: a device wrapper checks
//! every block the cache writes against the journal position its version
//! was written under, with the flusher running and the cache under
//! pressure (small, resized, evicting).
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_cache::{Cache, CacheConfig, ReadAheadConfig, ReadHint};
use keel_disk::{BlockDevice, MemDisk, SimRng};

const BS: usize = 512;
const BLOCKS: u64 = 64;

struct Checker {
    inner: MemDisk,
    /// (block, version) → lsn it was written under.
    required: Mutex<HashMap<(u64, u64), u64>>,
    /// The journal's durable position, raised before the cache is told.
    durable: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl BlockDevice for Checker {
    fn name(&self) -> &str {
        "checker"
    }
    fn block_size(&self) -> usize {
        BS
    }
    fn block_count(&self) -> u64 {
        BLOCKS
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> keel_disk::Result<()> {
        self.inner.read_blocks(start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> keel_disk::Result<()> {
        let durable = self.durable.load(Ordering::SeqCst);
        let required = self.required.lock().unwrap();
        for (offset, bytes) in buf.chunks(BS).enumerate() {
            let block = start + offset as u64;
            let version = common::sector_version(block, bytes, BS).expect("a known version");
            let lsn = required.get(&(block, version)).copied().unwrap_or(0);
            if lsn > durable {
                self.violations.lock().unwrap().push(format!(
                    "block {block} version {version} (lsn {lsn}) written with the journal durable only to {durable}"
                ));
            }
        }
        self.inner.write_blocks(start, buf)
    }
    fn flush(&self) -> keel_disk::Result<()> {
        Ok(())
    }
}

#[test]
fn no_block_goes_home_before_its_lsn_is_durable() {
    let base = common::seed("no_block_goes_home_before_its_lsn_is_durable");
    for round in 0..20u64 {
        let seed = base.wrapping_add(round);
        let mut rng = SimRng::new(seed);
        let checker = Arc::new(Checker {
            inner: MemDisk::new(BS, BLOCKS),
            required: Mutex::new(HashMap::new()),
            durable: AtomicU64::new(0),
            violations: Mutex::new(Vec::new()),
        });
        let cache = Cache::new(
            checker.clone(),
            CacheConfig {
                capacity_bytes: (4 + rng.below(32)) * BS as u64,
                shards: 1 + rng.below(3) as usize,
                background_flusher: true,
                flush_interval: Duration::from_millis(1),
                dirty_high_water_percent: 20,
                max_write_blocks: 1 + rng.below(8) as usize,
                read_ahead: ReadAheadConfig {
                    enabled: false,
                    ..ReadAheadConfig::default()
                },
                ..CacheConfig::default()
            },
        )
        .unwrap();
        let mut versions = vec![0u64; BLOCKS as usize];
        let mut next_lsn = 1u64;
        let mut durable = 0u64;
        for _ in 0..2_000 {
            let block = rng.below(BLOCKS);
            match rng.below(10) {
                0..=4 => {
                    let version = versions[block as usize] + 1;
                    let lsn = if rng.coin() { 0 } else { next_lsn };
                    next_lsn += 1;
                    checker
                        .required
                        .lock()
                        .unwrap()
                        .insert((block, version), lsn);
                    cache
                        .write_after(block, &common::pattern(block, version, BS), lsn)
                        .unwrap();
                    versions[block as usize] = version;
                }
                5..=6 => {
                    let data = cache.read(block, ReadHint::Normal).unwrap();
                    assert!(
                        data[..] == common::pattern(block, versions[block as usize], BS)[..],
                        "seed {seed}: block {block}"
                    );
                }
                7 => {
                    durable = (durable + rng.below(8)).min(next_lsn);
                    checker.durable.store(durable, Ordering::SeqCst);
                    cache.set_durable_lsn(durable);
                }
                8 => cache.sync().unwrap(),
                _ => cache.resize((2 + rng.below(40)) * BS as u64).unwrap(),
            }
        }
        // Everything durable now: all blocks go home.
        checker.durable.store(u64::MAX, Ordering::SeqCst);
        cache.set_durable_lsn(u64::MAX);
        cache.sync().unwrap();
        assert_eq!(cache.stats().dirty_blocks, 0);
        let image = checker.inner.image();
        for block in 0..BLOCKS {
            assert!(
                image[block as usize * BS..][..BS]
                    == common::pattern(block, versions[block as usize], BS)[..],
                "seed {seed}: block {block} after the final sync"
            );
        }
        let violations = checker.violations.lock().unwrap();
        assert!(violations.is_empty(), "seed {seed}: {violations:?}");
    }
}
