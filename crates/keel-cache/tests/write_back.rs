//! Delayed writes: sync durability, the write-ahead rule, the elevator,
//! the flusher, and write-back errors that must reach the next sync.
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_cache::{Cache, CacheConfig, CacheError, ReadAheadConfig, ReadHint};
use keel_disk::sim::{CrashMode, Op};
use keel_disk::{MemDisk, SimDisk};

const BS: usize = 1024;

fn config(capacity_blocks: u64) -> CacheConfig {
    CacheConfig {
        capacity_bytes: capacity_blocks * BS as u64,
        shards: 2,
        background_flusher: false,
        read_ahead: ReadAheadConfig {
            enabled: false,
            ..ReadAheadConfig::default()
        },
        ..CacheConfig::default()
    }
}

fn block_of(image: &[u8], block: u64) -> &[u8] {
    &image[block as usize * BS..(block as usize + 1) * BS]
}

#[test]
fn synced_writes_survive_a_crash_and_unsynced_ones_are_not_assumed() {
    let disk = Arc::new(SimDisk::new("sim", BS, 32, 5));
    let cache = Cache::new(disk.clone(), config(16)).unwrap();
    cache.write(1, &common::pattern(1, 1, BS)).unwrap();
    cache.write(2, &common::pattern(2, 1, BS)).unwrap();
    cache.sync().unwrap();
    cache.write(2, &common::pattern(2, 2, BS)).unwrap();
    cache.write(3, &common::pattern(3, 1, BS)).unwrap();
    let image = disk.crash(CrashMode::LoseAllUnflushed, 1);
    assert_eq!(block_of(&image, 1), &common::pattern(1, 1, BS)[..]);
    assert_eq!(block_of(&image, 2), &common::pattern(2, 1, BS)[..]);
    assert_eq!(
        block_of(&image, 3),
        &common::pattern(3, 0, BS)[..],
        "nothing unsynced was written"
    );
}

#[test]
fn write_after_waits_for_the_journal() {
    let disk = Arc::new(SimDisk::new("sim", BS, 32, 5));
    let cache = Cache::new(disk.clone(), config(16)).unwrap();
    cache.set_durable_lsn(10);
    cache
        .write_after(4, &common::pattern(4, 1, BS), 10)
        .unwrap();
    cache
        .write_after(5, &common::pattern(5, 1, BS), 11)
        .unwrap();
    cache.write(6, &common::pattern(6, 1, BS)).unwrap();
    cache.sync().unwrap();
    let durable = disk.durable_image();
    assert_eq!(block_of(&durable, 4), &common::pattern(4, 1, BS)[..]);
    assert_eq!(
        block_of(&durable, 5),
        &common::pattern(5, 0, BS)[..],
        "lsn 11 is not durable yet"
    );
    assert!(
        disk.pending_writes().is_empty(),
        "block 5 must not even be written"
    );
    assert!(cache.is_dirty(5));
    // A later plain write keeps the rule: the bytes include the lsn-11 change.
    cache.write(5, &common::pattern(5, 2, BS)).unwrap();
    cache.sync().unwrap();
    assert_eq!(
        block_of(&disk.durable_image(), 5),
        &common::pattern(5, 0, BS)[..]
    );
    cache.set_durable_lsn(11);
    cache.sync().unwrap();
    assert_eq!(
        block_of(&disk.durable_image(), 5),
        &common::pattern(5, 2, BS)[..]
    );
    // Held-back blocks are not evicted either, even when the cache is full.
    cache
        .write_after(0, &common::pattern(0, 1, BS), 50)
        .unwrap();
    for block in 8..32 {
        drop(cache.read(block, ReadHint::Normal).unwrap());
    }
    assert!(cache.contains(0) && cache.is_dirty(0));
    assert_eq!(
        &cache.read(0, ReadHint::Normal).unwrap()[..],
        &common::pattern(0, 1, BS)[..]
    );
}

#[test]
fn write_back_is_sorted_and_coalesced() {
    let disk = Arc::new(SimDisk::new("sim", BS, 64, 5));
    let cache = Cache::new(
        disk.clone(),
        CacheConfig {
            max_write_blocks: 8,
            ..config(64)
        },
    )
    .unwrap();
    let base = disk.start_recording();
    let _ = base;
    // Dirty blocks 0..20 in scrambled order, plus 40..43.
    let mut blocks: Vec<u64> = (0..20).chain(40..43).collect();
    keel_disk::SimRng::new(3).shuffle(&mut blocks);
    for &block in &blocks {
        cache.write(block, &common::pattern(block, 1, BS)).unwrap();
    }
    cache.sync().unwrap();
    let ops = disk.take_recording();
    let writes: Vec<(u64, usize)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Write(write) => Some((write.start, write.data.len() / BS)),
            Op::Flush => None,
        })
        .collect();
    // SimDisk records one entry per block; rebuild the I/O count from stats.
    assert_eq!(writes.len(), 23);
    let starts: Vec<u64> = writes.iter().map(|w| w.0).collect();
    let mut sorted = starts.clone();
    sorted.sort_unstable();
    assert_eq!(starts, sorted, "written in block order");
    let stats = cache.stats();
    assert_eq!(stats.blocks_written, 23);
    assert_eq!(stats.write_ios, 4, "0..8, 8..16, 16..20, 40..43");
    assert!(matches!(ops.last(), Some(Op::Flush)));
}

#[test]
fn a_failed_write_back_is_reported_by_the_next_sync_and_retried() {
    let disk = Arc::new(common::FlakyDisk::new(MemDisk::new(BS, 16)));
    let cache = Cache::new(disk.clone(), config(8)).unwrap();
    cache.write(3, &common::pattern(3, 1, BS)).unwrap();
    disk.fail_writes.store(true, Ordering::SeqCst);
    let error = cache.sync().unwrap_err();
    assert!(
        matches!(error, CacheError::WriteBack { block: 3, .. }),
        "{error}"
    );
    assert!(cache.is_dirty(3), "the data is kept");
    disk.fail_writes.store(false, Ordering::SeqCst);
    cache.sync().unwrap();
    assert_eq!(
        block_of(&disk.inner.image(), 3),
        &common::pattern(3, 1, BS)[..]
    );
}

#[test]
fn a_background_write_back_error_is_not_swallowed() {
    let disk = Arc::new(common::FlakyDisk::new(MemDisk::new(BS, 16)));
    let cache = Cache::new(
        disk.clone(),
        CacheConfig {
            background_flusher: true,
            flush_interval: Duration::from_millis(5),
            ..config(8)
        },
    )
    .unwrap();
    disk.fail_writes.store(true, Ordering::SeqCst);
    cache.write(3, &common::pattern(3, 1, BS)).unwrap();
    // Wait (without a deadline assertion) for the flusher to try and fail.
    while disk.failed_writes.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    disk.fail_writes.store(false, Ordering::SeqCst);
    // This sync's own write-back may well succeed; the earlier failure must
    // still be reported.
    let error = cache.sync().unwrap_err();
    assert!(
        matches!(error, CacheError::WriteBack { block: 3, .. }),
        "{error}"
    );
    cache.sync().unwrap();
    assert_eq!(
        block_of(&disk.inner.image(), 3),
        &common::pattern(3, 1, BS)[..]
    );
}

#[test]
fn a_failed_flush_is_reported() {
    let disk = Arc::new(common::FlakyDisk::new(MemDisk::new(BS, 16)));
    let cache = Cache::new(disk.clone(), config(8)).unwrap();
    cache.write(3, &common::pattern(3, 1, BS)).unwrap();
    disk.fail_flushes.store(true, Ordering::SeqCst);
    assert!(matches!(cache.sync(), Err(CacheError::Flush { .. })));
}

#[test]
fn the_flusher_writes_dirty_blocks_home_on_its_own() {
    let disk = Arc::new(common::FlakyDisk::new(MemDisk::new(BS, 16)));
    let cache = Cache::new(
        disk.clone(),
        CacheConfig {
            background_flusher: true,
            flush_interval: Duration::from_millis(5),
            ..config(8)
        },
    )
    .unwrap();
    cache.write(3, &common::pattern(3, 1, BS)).unwrap();
    while cache.is_dirty(3) || disk.flushes.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        block_of(&disk.inner.image(), 3),
        &common::pattern(3, 1, BS)[..]
    );
}

#[test]
fn the_high_water_mark_wakes_the_flusher() {
    let disk = Arc::new(common::FlakyDisk::new(MemDisk::new(BS, 64)));
    let cache = Cache::new(
        disk.clone(),
        CacheConfig {
            background_flusher: true,
            flush_interval: Duration::from_secs(3600),
            dirty_high_water_percent: 25,
            ..config(32)
        },
    )
    .unwrap();
    for block in 0..16 {
        cache.write(block, &common::pattern(block, 1, BS)).unwrap();
    }
    while disk.writes.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}
