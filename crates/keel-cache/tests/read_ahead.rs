//! Read-ahead through the whole cache: sequential reads are prefetched in
//! large reads, random reads are not, unused prefetches are counted.
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use keel_cache::{Cache, CacheConfig, PolicyKind, ReadAheadConfig, ReadHint};
use keel_disk::{BlockDevice, MemDisk, SimRng};

const BS: usize = 512;

fn cache_over(disk: Arc<common::FlakyDisk<MemDisk>>, enabled: bool) -> Arc<Cache> {
    cache_of(disk, 4096, enabled, 64)
}

/// A cache of `blocks` blocks with read-ahead `enabled`, windows of at most
/// `max_window` blocks, and no background flusher.
fn cache_of(
    disk: Arc<common::FlakyDisk<MemDisk>>,
    blocks: u64,
    enabled: bool,
    max_window: usize,
) -> Arc<Cache> {
    cache_with_policy(disk, blocks, enabled, max_window, PolicyKind::default())
}

fn cache_with_policy(
    disk: Arc<common::FlakyDisk<MemDisk>>,
    blocks: u64,
    enabled: bool,
    max_window: usize,
    policy: PolicyKind,
) -> Arc<Cache> {
    Cache::new(
        disk,
        CacheConfig {
            capacity_bytes: blocks * BS as u64,
            policy,
            background_flusher: false,
            read_ahead: ReadAheadConfig {
                enabled,
                max_window_blocks: max_window,
                ..ReadAheadConfig::default()
            },
            ..CacheConfig::default()
        },
    )
    .unwrap()
}

fn slow_disk(blocks: u64) -> Arc<common::FlakyDisk<MemDisk>> {
    let disk = MemDisk::new(BS, blocks);
    for block in 0..blocks {
        disk.write_blocks(block, &common::pattern(block, 1, BS))
            .unwrap();
    }
    let disk = Arc::new(common::FlakyDisk::new(disk));
    // Every device read costs 200 µs, as a seek would: read-ahead has time
    // to run ahead of the reader.
    disk.read_delay_us.store(200, Ordering::Relaxed);
    disk
}

/// Reads blocks `0..blocks` in order, checking each; returns the cache's
/// counters and the device reads it took.
fn read_in_order(
    cache: &Cache,
    disk: &common::FlakyDisk<MemDisk>,
    blocks: u64,
) -> (keel_cache::CacheStats, u64) {
    for block in 0..blocks {
        let data = cache.read(block, ReadHint::Normal).unwrap();
        assert!(
            data[..] == common::pattern(block, 1, BS)[..],
            "block {block}"
        );
    }
    (cache.stats(), disk.reads.load(Ordering::SeqCst))
}

#[test]
fn sequential_reads_are_prefetched_in_large_reads() {
    let disk = slow_disk(2_048);
    let cache = cache_over(disk.clone(), true);
    let (stats, device_reads) = read_in_order(&cache, &disk, 2_048);
    assert!(stats.prefetched > 1_000, "{stats:?}");
    assert!(stats.prefetch_hits > 1_000, "{stats:?}");
    assert!(
        device_reads < 2_048 / 4,
        "{device_reads} device reads for 2048 blocks: {stats:?}"
    );
}

#[test]
fn without_read_ahead_every_block_is_a_device_read() {
    let disk = slow_disk(256);
    let cache = cache_over(disk.clone(), false);
    for block in 0..256 {
        drop(cache.read(block, ReadHint::Normal).unwrap());
    }
    assert_eq!(disk.reads.load(Ordering::SeqCst), 256);
    assert_eq!(cache.stats().prefetched, 0);
}

#[test]
fn random_reads_prefetch_nothing() {
    let disk = slow_disk(100_000);
    let cache = cache_over(disk.clone(), true);
    let seed = common::seed("random_reads_prefetch_nothing");
    let mut rng = SimRng::new(seed);
    for _ in 0..300 {
        // Blocks far apart: never the next block of any stream.
        let block = rng.below(10_000) * 10;
        drop(cache.read(block, ReadHint::Normal).unwrap());
    }
    assert_eq!(cache.stats().prefetched, 0, "seed {seed}");
}

#[test]
fn unused_prefetches_are_evicted_first_and_counted_as_waste() {
    let disk = slow_disk(4_096);
    let cache = cache_of(disk.clone(), 256, true, 64);
    // A working set used twice, so it sits in the main queue.
    for _ in 0..3 {
        for block in 3_000..3_050 {
            drop(cache.read(block, ReadHint::NoReadAhead).unwrap());
        }
    }
    // Short sequential bursts that stop early: their read-ahead is wasted.
    for burst in 0..40u64 {
        for block in burst * 64..burst * 64 + 4 {
            drop(cache.read(block, ReadHint::Normal).unwrap());
        }
    }
    // Let in-flight prefetches land, then push them out with more misses.
    cache.wait_for_read_ahead();
    // 150 new blocks: with the working set they fit; the stale prefetches
    // are what must make room.
    for block in 2_600..2_750 {
        drop(cache.read(block, ReadHint::NoReadAhead).unwrap());
    }
    let stats = cache.stats();
    assert!(
        stats.prefetched > 0 && stats.prefetch_waste > 0,
        "{stats:?}"
    );
    let kept = (3_000..3_050).filter(|b| cache.contains(*b)).count();
    assert!(
        kept >= 45,
        "working set lost to prefetch: kept {kept}: {stats:?}"
    );
}

#[test]
fn hits_leave_the_stream_table_alone_and_streams_resume_on_misses() {
    let disk = slow_disk(4_096);
    let cache = cache_over(disk.clone(), true);
    // Blocks 0..64 are cached by random-style reads (no read-ahead).
    for block in 0..64 {
        drop(cache.read(block, ReadHint::NoReadAhead).unwrap());
    }
    let before = cache.stats();
    // Re-reading them sequentially is all hits: read-ahead is not asked,
    // so nothing is prefetched.
    for block in 0..64 {
        drop(cache.read(block, ReadHint::Normal).unwrap());
    }
    cache.wait_for_read_ahead();
    let after_hits = cache.stats();
    assert_eq!(
        after_hits.prefetched, before.prefetched,
        "hits started read-ahead: {after_hits:?}"
    );
    assert_eq!(after_hits.misses, before.misses);
    // Going on into uncached blocks: the misses form a stream again and
    // read-ahead takes over after a few blocks.
    for block in 64..2_048 {
        drop(cache.read(block, ReadHint::Normal).unwrap());
    }
    let stats = cache.stats();
    let misses = stats.misses - after_hits.misses;
    assert!(
        stats.prefetch_hits > 1_800 && misses < 100,
        "{misses} misses over 1984 sequential blocks: {stats:?}"
    );
}

#[test]
fn windows_around_resident_blocks_read_only_the_missing_runs() {
    let disk = slow_disk(4_096);
    let cache = cache_over(disk.clone(), true);
    // Resident islands inside what read-ahead will request.
    let islands = [40u64, 41, 100, 333, 334, 335, 900];
    for &block in &islands {
        drop(cache.read(block, ReadHint::NoReadAhead).unwrap());
    }
    let reads_before = disk.reads.load(Ordering::SeqCst);
    for block in 0..1_500 {
        let data = cache.read(block, ReadHint::Normal).unwrap();
        assert!(
            data[..] == common::pattern(block, 1, BS)[..],
            "block {block}"
        );
    }
    cache.wait_for_read_ahead();
    let stats = cache.stats();
    // Every block came from the device once: the islands were not read
    // again, and no block was both prefetched and read by its reader.
    let mut read = disk.blocks_read.lock().unwrap().clone();
    let total = read.len();
    read.sort_unstable();
    read.dedup();
    assert_eq!(read.len(), total, "a block was read twice: {stats:?}");
    assert!((0..1_500).all(|b| read.binary_search(&b).is_ok()));
    let device_reads = disk.reads.load(Ordering::SeqCst) - reads_before;
    assert!(
        device_reads < 150,
        "{device_reads} device reads for 1500 blocks around {} islands: {stats:?}",
        islands.len()
    );
}

/// A cache smaller than the read-ahead a stream would keep in flight (three
/// windows of 256 blocks against 512 blocks of cache): the window must fit
/// the cache, or the prefetched blocks a reader needs next are evicted
/// before it gets to them and read-ahead costs more than it saves. The scan
/// is 64 times the cache, long enough for the policy's frequency sketch to
/// fill with noise and be aged (and LIRS's LIR set, filled by the scan's
/// first blocks, to stay put): room for guesses must last the whole scan,
/// under every policy.
#[test]
fn read_ahead_fits_a_small_cache() {
    for policy in PolicyKind::ALL {
        let disk = slow_disk(32_768);
        let cache = cache_with_policy(disk.clone(), 512, true, 256, policy);
        let (stats, device_reads) = read_in_order(&cache, &disk, 32_768);
        let name = policy.name();
        assert!(
            stats.prefetch_waste * 20 < stats.prefetched,
            "{name}: over 5% of prefetched blocks evicted unused: {stats:?}"
        );
        assert!(
            stats.misses * 100 < 32_768,
            "{name}: over 1% of blocks read by the reader itself (read-ahead found no room): {stats:?}"
        );
        assert!(
            device_reads < 32_768 / 16,
            "{name}: {device_reads} device reads for 32768 blocks: {stats:?}"
        );
    }
}

/// A file a little larger than the cache, read through again and again:
/// the default keeps a block its reader used once among the guesses
/// (drop-behind), so each pass streams through the cache in large reads.
/// Before drop-behind, the passes' blocks joined the policy, which came to
/// keep scattered blocks of the loop; read-ahead then read only the runs
/// between them, and from the fourth pass on the device saw over 600 reads
/// a pass instead of about 90.
#[test]
fn a_file_reread_in_a_loop_larger_than_the_cache_keeps_its_read_ahead() {
    let blocks = 5_120;
    let disk = slow_disk(blocks);
    let cache = cache_of(disk.clone(), 4_096, true, 64);
    let mut before = (cache.stats(), 0);
    for pass in 1..=6 {
        let (stats, device_reads) = read_in_order(&cache, &disk, blocks);
        let misses = stats.misses - before.0.misses;
        let reads = device_reads - before.1;
        assert!(
            misses * 100 < blocks,
            "pass {pass}: {misses} of {blocks} reads missed: {stats:?}"
        );
        assert!(
            reads < blocks / 16,
            "pass {pass}: {reads} device reads for {blocks} blocks: {stats:?}"
        );
        before = (stats, device_reads);
    }
}

/// Read-ahead reads each window into one extent, and a block moves out of
/// it at its first use, so extents hold only what is read ahead and not yet
/// used. Without the move, every block read once would keep its window's
/// extent until evicted: the extents would hold about the whole cache (16
/// windows here) and the device would read into cold memory.
#[test]
fn extents_are_a_transit_area_that_blocks_leave_at_first_use() {
    let window = 32;
    let window_bytes = (window * BS) as u64;
    let blocks = 8 * 512;
    let disk = slow_disk(blocks);
    let cache = cache_of(disk.clone(), 512, true, window);
    let mut most = 0;
    for block in 0..blocks {
        let data = cache.read(block, ReadHint::Normal).unwrap();
        assert!(
            data[..] == common::pattern(block, 1, BS)[..],
            "block {block}"
        );
        drop(data);
        if block % 64 == 0 {
            most = most.max(cache.stats().extent_bytes);
        }
    }
    cache.wait_for_read_ahead();
    let stats = cache.stats();
    assert!(
        stats.prefetched > blocks * 9 / 10,
        "read-ahead did not run: {stats:?}"
    );
    assert!(most > 0, "no block was ever read into an extent: {stats:?}");
    // In flight: at most three windows ahead of the reader, plus the pool
    // of four idle ones.
    assert!(
        most <= 8 * window_bytes,
        "extents held {most} bytes during the read (a window is {window_bytes}): {stats:?}"
    );
    // Everything read ahead was used: only the pool is left.
    assert!(
        stats.extent_bytes <= 4 * window_bytes,
        "extents hold {} bytes after the read: {stats:?}",
        stats.extent_bytes
    );
}

/// Blocks still in their extent (read ahead, not yet used) can be written,
/// modified and left unused; each keeps its own bytes, its neighbours in
/// the extent keep theirs, and what is synced reaches the device.
#[test]
fn blocks_written_while_in_their_extent_keep_apart_from_their_neighbours() {
    let disk = slow_disk(1_024);
    let cache = cache_of(disk.clone(), 512, true, 32);
    // Three in a row open a stream; wait until its first window is read.
    for block in 0..3 {
        drop(cache.read(block, ReadHint::Normal).unwrap());
    }
    cache.wait_for_read_ahead();
    let prefetched = (3..40).filter(|&block| cache.contains(block)).count();
    assert!(
        prefetched >= 8,
        "read-ahead brought in {prefetched} blocks: {:?}",
        cache.stats()
    );
    let written = common::pattern(5, 2, BS);
    cache.write(5, &written).unwrap();
    {
        let mut block = cache.modify(6).unwrap();
        block[0] ^= 0xff;
    }
    for block in 3..40u64 {
        let data = cache.read(block, ReadHint::Normal).unwrap();
        let mut expected = common::pattern(block, 1, BS);
        match block {
            5 => expected = written.clone(),
            6 => expected[0] ^= 0xff,
            _ => {}
        }
        assert!(data[..] == expected[..], "block {block}");
    }
    cache.sync().unwrap();
    let mut on_disk = vec![0u8; BS];
    for block in 3..40u64 {
        disk.inner.read_blocks(block, &mut on_disk).unwrap();
        let mut expected = common::pattern(block, 1, BS);
        match block {
            5 => expected = written.clone(),
            6 => expected[0] ^= 0xff,
            _ => {}
        }
        assert!(on_disk == expected, "block {block} on the device");
    }
}
