//! Read-ahead: per-stream sequential detection with an adaptive window.
//!
//! The cache tells [`ReadAhead::on_read`] about every read. A small table of
//! streams remembers, for each recent sequential reader, the block it should
//! read next and how far ahead blocks have been requested:
//!
//! ```text
//!   stream:  ... read │ next ─────── prefetched ─────── issued_until │
//!                     └─ when the lead left ≤ two windows, request the next
//!                        window (doubled, up to the maximum) in one read
//! ```
//!
//! * A read of exactly the block a stream expects continues that stream.
//!   The third consecutive block opens a window of `initial_window_blocks`
//!   (two in a row happen by chance too often under random reads).
//! * Whenever at most two windows are left requested ahead of the reader,
//!   the next window is requested (so reads stay queued behind the one in
//!   progress, and the device never waits for the reader); the window doubles each time (the prefetched
//!   blocks were used, so a bigger bet is safe) up to `max_window_blocks`.
//! * A read that continues no stream (random access) starts a new stream in
//!   place of the least recently used one, with no window: read-ahead for
//!   that reader collapses until it is sequential again.
//! * The window never exceeds what the cache can hold: at most
//!   [`CacheView::window_limit`] (the cache passes a sixteenth of its
//!   capacity, so three windows in flight stay under the quarter that
//!   unused prefetched blocks may hold before they are evicted first).
//! * **Thrashing.** If the reader misses a block its stream requested, and
//!   prefetched blocks have been evicted unused since the stream last
//!   asked, read-ahead is outrunning the cache (several streams, or a cache
//!   that shrank): the window halves and requests restart at the reader,
//!   as Linux shrinks its read-ahead on thrashing.
//!
//! Several interleaved sequential readers (up to `streams`) are tracked
//! independently, as Linux does per open file.
//!
//! The requests are carried out in the background by the cache's read-ahead
//! threads as large multi-block reads; in-flight blocks are shared with
//! foreground readers, and blocks read ahead but unused are the first to be
//! evicted.

/// Read-ahead settings.
#[derive(Clone, Debug)]
pub struct ReadAheadConfig {
    /// Whether read-ahead runs at all.
    pub enabled: bool,
    /// Window opened when a stream is first seen to be sequential, in blocks.
    pub initial_window_blocks: usize,
    /// Largest window, in blocks (also the largest read issued).
    pub max_window_blocks: usize,
    /// Number of concurrent sequential streams tracked.
    pub streams: usize,
    /// Background threads that carry out read-ahead. Two let one thread
    /// prepare and issue the next read while the other waits for the
    /// device.
    pub threads: usize,
}

impl Default for ReadAheadConfig {
    fn default() -> Self {
        ReadAheadConfig {
            enabled: true,
            initial_window_blocks: 8,
            max_window_blocks: 256,
            streams: 16,
            threads: 2,
        }
    }
}

/// What read-ahead needs to know of the cache at each read.
#[derive(Clone, Copy, Debug)]
pub struct CacheView {
    /// Blocks on the device (read-ahead stops at its end).
    pub block_count: u64,
    /// Largest window the cache can afford now, in blocks.
    pub window_limit: usize,
    /// Prefetched blocks evicted unused so far (a cache-wide counter).
    pub waste: u64,
}

#[derive(Clone, Debug)]
struct Stream {
    next: u64,
    /// Consecutive blocks this stream has read so far.
    run: u32,
    window: usize,
    issued_until: u64,
    last_use: u64,
    /// [`CacheView::waste`] when this stream last requested blocks.
    waste_seen: u64,
}

/// The stream table. Not thread-safe by itself; the cache keeps it under a
/// mutex.
pub struct ReadAhead {
    config: ReadAheadConfig,
    streams: Vec<Stream>,
    tick: u64,
}

impl ReadAhead {
    pub fn new(config: ReadAheadConfig) -> ReadAhead {
        ReadAhead {
            config,
            streams: Vec::new(),
            tick: 0,
        }
    }

    /// Notes a read of `block` (`missed`: it was not resident); returns a
    /// range `(start, count)` to read ahead, if any.
    pub fn on_read(&mut self, block: u64, missed: bool, view: CacheView) -> Option<(u64, usize)> {
        self.tick += 1;
        let tick = self.tick;
        let block_count = view.block_count;
        let max = self.config.max_window_blocks.min(view.window_limit).max(1);
        let initial = self.config.initial_window_blocks.clamp(1, max);
        // One pass over the table: the stream expecting this block, else one
        // whose prefetched zone holds it, else the least recently used
        // entry (to replace).
        let mut exact = None;
        let mut zone = None;
        let mut oldest = 0;
        for (index, stream) in self.streams.iter().enumerate() {
            if stream.next == block {
                exact = Some(index);
                break;
            }
            if zone.is_none()
                && stream.window > 0
                && block + 1 >= stream.next
                && block < stream.issued_until
            {
                zone = Some(index);
            }
            if stream.last_use < self.streams[oldest].last_use {
                oldest = index;
            }
        }
        if let Some(index) = exact {
            let stream = &mut self.streams[index];
            stream.last_use = tick;
            stream.next = block + 1;
            stream.run = stream.run.saturating_add(1);
            if stream.window == 0 {
                // Three blocks in a row make a stream: two happen by chance
                // too often under random reads of a small area.
                if stream.run < 3 {
                    return None;
                }
                stream.window = initial;
            }
            if missed && block < stream.issued_until && view.waste > stream.waste_seen {
                // Thrashing: what this stream asked for was evicted before
                // the reader got to it. Bet less, from here.
                stream.window = (stream.window / 2).max(initial);
                stream.issued_until = block + 1;
            }
            stream.window = stream.window.min(max);
            // Keep two to three windows requested ahead of the reader, so
            // the device always has the next reads queued even while the
            // reader waits for the oldest one.
            let lead = stream.issued_until.saturating_sub(block + 1);
            if lead > 2 * stream.window as u64 {
                return None;
            }
            if stream.issued_until > block + 1 {
                // The reader reached blocks we prefetched: they are used, so
                // look further ahead next time.
                stream.window = (stream.window * 2).min(max);
            }
            let start = stream.issued_until.max(block + 1);
            let end = (start + stream.window as u64).min(block_count);
            if end <= start {
                return None;
            }
            stream.issued_until = end;
            stream.waste_seen = view.waste;
            return Some((start, (end - start) as usize));
        }
        // Inside a stream's prefetched zone (a re-read or a short skip
        // forward): the stream goes on from here without a new request.
        if let Some(index) = zone {
            let stream = &mut self.streams[index];
            stream.last_use = tick;
            stream.next = block + 1;
            return None;
        }
        let fresh = Stream {
            next: block + 1,
            run: 1,
            window: 0,
            issued_until: block + 1,
            last_use: tick,
            waste_seen: view.waste,
        };
        if self.streams.len() < self.config.streams.max(1) {
            self.streams.push(fresh);
        } else {
            self.streams[oldest] = fresh;
        }
        None
    }

    /// The current window of the stream expecting `block` next (0 if none),
    /// for tests and inspection.
    pub fn window_for(&self, block: u64) -> usize {
        self.streams
            .iter()
            .find(|s| s.next == block)
            .map_or(0, |s| s.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache large enough for any window, that has wasted nothing.
    fn view(block_count: u64) -> CacheView {
        CacheView {
            block_count,
            window_limit: usize::MAX,
            waste: 0,
        }
    }

    #[test]
    fn window_opens_grows_and_collapses() {
        let mut ra = ReadAhead::new(ReadAheadConfig {
            max_window_blocks: 64,
            ..ReadAheadConfig::default()
        });
        assert_eq!(
            ra.on_read(99, true, view(10_000)),
            None,
            "one read is not a stream"
        );
        assert_eq!(ra.on_read(100, true, view(10_000)), None, "nor are two");
        let first = ra
            .on_read(101, true, view(10_000))
            .expect("the third sequential read prefetches");
        assert_eq!(first, (102, 8));
        let mut requested_until = 110;
        let mut largest = 0;
        for block in 102..2_000 {
            if let Some((start, count)) = ra.on_read(block, true, view(10_000)) {
                assert_eq!(start, requested_until, "requests are contiguous");
                requested_until = start + count as u64;
                largest = largest.max(count);
            }
            assert!(
                requested_until > block,
                "read-ahead stays ahead of the reader"
            );
        }
        assert!(largest >= 32, "window grew to {largest}");
        assert_eq!(ra.window_for(2_000), 64);
        // A random read starts over with no window.
        assert_eq!(ra.on_read(7_000, true, view(10_000)), None);
        assert_eq!(ra.window_for(7_001), 0);
    }

    #[test]
    fn random_reads_never_prefetch() {
        let mut ra = ReadAhead::new(ReadAheadConfig::default());
        let mut rng = keel_disk::SimRng::new(1);
        for _ in 0..10_000 {
            let block = rng.below(1 << 40) * 3;
            assert_eq!(ra.on_read(block, true, view(u64::MAX)), None);
        }
    }

    #[test]
    fn interleaved_streams_are_tracked_apart() {
        let mut ra = ReadAhead::new(ReadAheadConfig::default());
        let mut requests = [0, 0];
        for step in 0..100u64 {
            for (index, base) in [0u64, 1_000_000].iter().enumerate() {
                if ra.on_read(base + step, true, view(u64::MAX)).is_some() {
                    requests[index] += 1;
                }
            }
        }
        assert!(requests[0] > 0 && requests[1] > 0, "{requests:?}");
    }

    #[test]
    fn stops_at_the_end_of_the_device() {
        let mut ra = ReadAhead::new(ReadAheadConfig::default());
        for block in 0..100 {
            if let Some((start, count)) = ra.on_read(block, true, view(100)) {
                assert!(start + count as u64 <= 100);
            }
        }
    }

    #[test]
    fn the_window_fits_the_cache() {
        let mut ra = ReadAhead::new(ReadAheadConfig::default());
        let small = CacheView {
            window_limit: 32,
            ..view(1 << 20)
        };
        let mut largest = 0;
        for block in 0..10_000 {
            if let Some((_, count)) = ra.on_read(block, false, small) {
                largest = largest.max(count);
            }
        }
        assert_eq!(largest, 32, "the limit, not the configured 256");
        // The cache shrinks under a running stream: the window follows.
        let smaller = CacheView {
            window_limit: 8,
            ..small
        };
        for block in 10_000..10_100 {
            if let Some((_, count)) = ra.on_read(block, false, smaller) {
                assert!(count <= 8, "request of {count} blocks");
            }
        }
        assert_eq!(ra.window_for(10_100), 8);
    }

    #[test]
    fn thrashing_halves_the_window_and_restarts_at_the_reader() {
        let mut ra = ReadAhead::new(ReadAheadConfig {
            max_window_blocks: 64,
            ..ReadAheadConfig::default()
        });
        let mut requested_until = 0;
        for block in 0..1_000 {
            if let Some((start, count)) = ra.on_read(block, false, view(1 << 20)) {
                requested_until = start + count as u64;
            }
        }
        assert_eq!(ra.window_for(1_000), 64);
        assert!(requested_until > 1_001);
        // A miss inside the requested zone with no eviction of unused
        // prefetches: the reader overtook the prefetcher; nothing shrinks.
        ra.on_read(1_000, true, view(1 << 20));
        assert_eq!(ra.window_for(1_001), 64);
        // Now prefetched blocks were evicted unused, and the reader misses
        // one it asked for: thrashing.
        let wasted = CacheView {
            waste: 100,
            ..view(1 << 20)
        };
        let (start, count) = ra
            .on_read(1_001, true, wasted)
            .expect("requests restart at the reader");
        assert_eq!((start, count), (1_002, 32));
        assert_eq!(ra.window_for(1_002), 32);
        // The same waste is not counted twice.
        for block in 1_002..1_010 {
            ra.on_read(block, true, wasted);
        }
        assert!(ra.window_for(1_010) >= 32);
    }
}
