//! The block cache itself: frames, shards, pinning, delayed writes and the
//! write-back path (flusher and `sync`).
//!
//! ```text
//!            read/write(block)
//!                  │ hash(block) % shards
//!        ┌─────────┼──────────┐
//!     shard 0   shard 1 …  shard n-1      each: Mutex { map block → Arc<Frame>,
//!        │                                         policy, dirty block → lsn }
//!      Frame { data: RwLock<bytes>, state, prefetched }
//!                          └─ a buffer of its own, or a slot of a read-ahead
//!                             extent (crate::extent)
//! ```
//!
//! Lock order, which every path keeps: a frame's data lock, then its shard's
//! lock. Nobody waits for a data lock while holding a shard lock, so readers,
//! writers, eviction and write-back cannot deadlock. The only exception is
//! taking the write lock of a frame just created under the shard lock, which
//! nobody else can hold yet.
//!
//! A frame is *pinned* while anybody but its shard holds an `Arc` to it (a
//! [`BlockRef`], a [`BlockMut`], a loader, the write-back path): eviction
//! only takes frames whose `Arc` count is one, and no new reference can
//! appear while the eviction holds the shard lock, because references are
//! handed out only under it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use keel_disk::BlockDevice;
use parking_lot::lock_api::{
    GuardNoSend, RawRwLock as _, RawRwLockDowngrade as _, RawRwLockRecursive as _,
};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::error::{CacheError, Result};
use crate::extent::{Extent, FrameBytes, Released};
use crate::policy::{Access, BlockHasher, BlockMap, Hint, Policy, PolicyKind};
use crate::readahead::{CacheView, ReadAhead, ReadAheadConfig};

/// How the cache is built. [`CacheConfig::default`] gives 64 MiB, the
/// adaptive policy (W-TinyLFU, LIRS and LRU), read-ahead on, a flusher
/// every 30 s.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Memory for cached blocks, in bytes (rounded down to whole blocks, at
    /// least one block per shard). Changeable later with [`Cache::resize`].
    pub capacity_bytes: u64,
    /// Replacement policy.
    pub policy: PolicyKind,
    /// Number of independently locked shards; 0 picks one from the capacity.
    pub shards: usize,
    /// How often the background flusher writes dirty blocks home (UNIX's
    /// `update` daemon ran `sync` every 30 s).
    pub flush_interval: Duration,
    /// The flusher also runs when dirty blocks exceed this share of the
    /// capacity, in percent.
    pub dirty_high_water_percent: u8,
    /// Start a background flusher thread. Without it, dirty blocks go home
    /// only on [`Cache::sync`], on [`Cache::resize`] and when the cache fills.
    pub background_flusher: bool,
    /// Largest single write issued by write-back, in blocks (runs of
    /// consecutive dirty blocks are coalesced up to this size).
    pub max_write_blocks: usize,
    /// Read-ahead settings.
    pub read_ahead: ReadAheadConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity_bytes: 64 << 20,
            policy: PolicyKind::default(),
            shards: 0,
            flush_interval: Duration::from_secs(30),
            dirty_high_water_percent: 50,
            background_flusher: true,
            max_write_blocks: 256,
            read_ahead: ReadAheadConfig::default(),
        }
    }
}

/// How a read will use the block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadHint {
    /// An ordinary read; read-ahead watches it for sequential streams.
    #[default]
    Normal,
    /// The caller will not need this block again (a scan, a backup, `grep`
    /// over every file): the block is kept only until the room is needed and
    /// does not displace blocks that are used repeatedly. Read-ahead still
    /// applies.
    UseOnce,
    /// A random access: read-ahead neither watches nor prefetches for it.
    NoReadAhead,
}

/// Counters since the cache was created, and its current size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads and writes that found the block resident (or being loaded).
    pub hits: u64,
    /// Reads that had to go to the device.
    pub misses: u64,
    /// Blocks brought in by read-ahead.
    pub prefetched: u64,
    /// Prefetched blocks that were later used.
    pub prefetch_hits: u64,
    /// Prefetched blocks evicted without ever being used.
    pub prefetch_waste: u64,
    /// Blocks evicted to make room.
    pub evictions: u64,
    /// Blocks written home by write-back.
    pub blocks_written: u64,
    /// Device writes issued by write-back (after coalescing).
    pub write_ios: u64,
    /// Device reads issued (foreground and read-ahead).
    pub read_ios: u64,
    /// Device flushes issued.
    pub flushes: u64,
    /// Resident blocks now.
    pub resident_blocks: u64,
    /// Dirty blocks now.
    pub dirty_blocks: u64,
    /// Capacity now, in blocks.
    pub capacity_blocks: u64,
    /// Memory held by read-ahead extents now, in bytes: windows read ahead
    /// whose blocks are not all used yet, and up to four idle windows kept
    /// for reuse (`docs/cache.md`, "Read-ahead extents").
    pub extent_bytes: u64,
}

impl CacheStats {
    /// Hits over all accesses (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

const LOADING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

/// One cached block: its lock and state in one allocation with the `Arc`
/// count that pins it (the bytes are a second, recycled allocation, or a
/// slot of a read-ahead extent).
struct Frame {
    data: RwLock<FrameBytes>,
    state: AtomicU8,
    /// Brought in by read-ahead and not yet used.
    prefetched: AtomicBool,
    /// The bytes are a slot of a read-ahead extent (mirrors `data`, so a hit
    /// can tell without taking the data lock).
    in_extent: AtomicBool,
}

/// A resident block in a shard's map: its frame, and the policy's [`Hint`]
/// for it. The hint sits beside the frame pointer that a hit reads anyway,
/// so it spares the policy its own index lookups.
struct Entry {
    frame: Arc<Frame>,
    hint: Hint,
}

impl Entry {
    fn new(frame: Arc<Frame>) -> Entry {
        Entry {
            frame,
            hint: Hint::NONE,
        }
    }
}

impl Frame {
    fn new(bytes: FrameBytes, state: u8, prefetched: bool) -> Arc<Frame> {
        Arc::new(Frame {
            in_extent: AtomicBool::new(bytes.in_extent()),
            data: RwLock::new(bytes),
            state: AtomicU8::new(state),
            prefetched: AtomicBool::new(prefetched),
        })
    }
}

// Owned locks on a frame's bytes. `parking_lot`'s `ArcRwLock*Guard`s need the
// lock in an `Arc` of its own (a third allocation and a pointer more to chase
// on every hit); these hold the frame's `Arc` instead and use the raw lock.
// Each constructor takes the lock, each `Drop` releases exactly that lock,
// and the bytes are only reached while it is held.

/// An exclusive lock on a frame's bytes, keeping the frame alive (pinned).
struct FrameWriteLock {
    frame: Arc<Frame>,
    _not_send: std::marker::PhantomData<GuardNoSend>,
}

impl FrameWriteLock {
    /// The lock if it is free now; else the frame back.
    fn try_lock(frame: Arc<Frame>) -> std::result::Result<FrameWriteLock, Arc<Frame>> {
        // SAFETY: as in `lock`.
        if unsafe { frame.data.raw() }.try_lock_exclusive() {
            Ok(FrameWriteLock {
                frame,
                _not_send: std::marker::PhantomData,
            })
        } else {
            Err(frame)
        }
    }

    fn lock(frame: Arc<Frame>) -> FrameWriteLock {
        // SAFETY: the lock taken here is released in `drop` (or handed on
        // by `downgrade`), never elsewhere.
        unsafe { frame.data.raw() }.lock_exclusive();
        FrameWriteLock {
            frame,
            _not_send: std::marker::PhantomData,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        self.slot()
    }

    /// The frame's bytes themselves (to swap them).
    fn slot(&mut self) -> &mut FrameBytes {
        // SAFETY: this value holds the exclusive lock.
        unsafe { &mut *self.frame.data.data_ptr() }
    }

    /// Turns the exclusive lock into a shared one without letting a writer
    /// in between (a loader handing the block to its own reader).
    fn downgrade(self) -> FrameReadLock {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the frame `Arc` is moved out
        // exactly once, and the exclusive lock it held becomes the shared
        // lock the returned value releases.
        let frame = unsafe { std::ptr::read(&this.frame) };
        unsafe { frame.data.raw().downgrade() };
        FrameReadLock {
            frame,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for FrameWriteLock {
    fn drop(&mut self) {
        // SAFETY: this value holds the exclusive lock (see `lock`).
        unsafe { self.frame.data.raw().unlock_exclusive() };
    }
}

/// A shared lock on a frame's bytes, keeping the frame alive (pinned).
struct FrameReadLock {
    frame: Arc<Frame>,
    _not_send: std::marker::PhantomData<GuardNoSend>,
}

impl FrameReadLock {
    fn lock(frame: Arc<Frame>) -> FrameReadLock {
        // Recursive: a thread may hold several `BlockRef`s of one block even
        // while a writer waits for it (a plain shared lock would queue
        // behind the writer and wait for itself).
        // SAFETY: released in `drop`, never elsewhere.
        unsafe { frame.data.raw() }.lock_shared_recursive();
        FrameReadLock {
            frame,
            _not_send: std::marker::PhantomData,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: this value holds a shared lock, so nobody writes.
        unsafe { &*self.frame.data.data_ptr() }
    }
}

impl Drop for FrameReadLock {
    fn drop(&mut self) {
        // SAFETY: this value holds a shared lock (see `lock`, `downgrade`).
        unsafe { self.frame.data.raw().unlock_shared() };
    }
}

struct ShardInner {
    map: BlockMap<Entry>,
    policy: Box<dyn Policy>,
    capacity: usize,
    /// Dirty blocks, each with the journal position that must be durable
    /// before it may go home (0: none).
    dirty: BlockMap<u64>,
    /// Counters kept under the shard lock, so hits touch no shared memory.
    hits: u64,
    misses: u64,
    prefetch_hits: u64,
    evictions: u64,
}

/// Aligned to two cache lines so that neighbouring shards' locks do not
/// share one (false sharing would serialize threads working on different
/// shards).
#[repr(align(128))]
struct Shard {
    inner: Mutex<ShardInner>,
}

/// How long a hit spins on a busy shard before it sleeps. A hit that
/// completes the default policy's batch applies it under the shard's lock
/// (32 touches, a few microseconds: [`crate::adaptive`]). parking_lot puts
/// a waiter to sleep after about a microsecond of spinning, and on two
/// threads the sleeps and wake-ups cost more than the waits they replace:
/// ten times the context switches, and two threads slower than one at
/// 64 MiB (`docs/benchmarks/cache.md`, "Throughput of cache hits").
const HIT_SPIN: Duration = Duration::from_micros(20);

impl Shard {
    /// The shard's lock for a lookup: spins for up to [`HIT_SPIN`] before
    /// it waits asleep like any other lock.
    fn lock_spinning(&self) -> MutexGuard<'_, ShardInner> {
        let mut started = None;
        loop {
            for _ in 0..16 {
                if let Some(guard) = self.inner.try_lock() {
                    return guard;
                }
                std::hint::spin_loop();
            }
            if started.get_or_insert_with(Instant::now).elapsed() >= HIT_SPIN {
                return self.inner.lock();
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    prefetched: AtomicU64,
    /// Prefetched blocks evicted before anybody used them. Shared rather
    /// than per shard because read-ahead reads it to notice thrashing (it
    /// changes only on such an eviction, never on a hit).
    prefetch_waste: AtomicU64,
    blocks_written: AtomicU64,
    write_ios: AtomicU64,
    read_ios: AtomicU64,
    flushes: AtomicU64,
}

/// Wakes and stops the background threads.
struct Control {
    state: Mutex<ControlState>,
    /// The flusher, and anyone waiting for read-ahead to finish.
    wake: Condvar,
    /// The read-ahead workers (one is woken per request).
    prefetch_wake: Condvar,
}

#[derive(Default)]
struct ControlState {
    stop: bool,
    flush_requested: bool,
    prefetch_queue: std::collections::VecDeque<(u64, usize)>,
    /// Prefetch requests being carried out right now.
    prefetch_active: usize,
}

/// A block cache over a [`BlockDevice`]. See the crate documentation for the
/// contract; in short:
///
/// * [`read`](Cache::read) returns a pinned, shared view of a block;
///   [`modify`](Cache::modify) an exclusive one. Do not ask for a block
///   exclusively (or [`write`](Cache::write) it) while holding a
///   [`BlockRef`] or [`BlockMut`] of the same block on the same thread, and
///   do not call [`sync`](Cache::sync) or [`resize`](Cache::resize) while
///   holding a [`BlockMut`]: the classic buffer-cache rule, it would wait
///   for itself.
/// * [`write`](Cache::write) is a delayed write: it returns once the cache
///   holds the data. Only [`sync`](Cache::sync) promises durability.
/// * [`write_after`](Cache::write_after) adds the write-ahead rule: the block
///   goes home only once [`set_durable_lsn`](Cache::set_durable_lsn) has
///   reported the journal durable up to the given position.
/// * Dropping the cache does **not** write dirty blocks: like a crash, it
///   loses what was not synced. Call [`sync`](Cache::sync) first.
pub struct Cache {
    device: Arc<dyn BlockDevice>,
    block_size: usize,
    block_count: u64,
    shards: Box<[Shard]>,
    capacity_blocks: AtomicUsize,
    dirty_count: AtomicUsize,
    durable_lsn: AtomicU64,
    /// Serializes write-back passes, so that `sync` cannot flush the device
    /// while another pass still has blocks it took off the dirty lists but
    /// has not written yet.
    writeback: Mutex<()>,
    /// The first write-back error since the last `sync`, which reports it.
    pending_error: Mutex<Option<CacheError>>,
    counters: Counters,
    config: CacheConfig,
    read_ahead: Option<Mutex<ReadAhead>>,
    control: Arc<Control>,
    /// Evicted frames (lock, state and buffer in their two allocations),
    /// reused for new blocks.
    free_frames: Mutex<Vec<Arc<Frame>>>,
    /// Buffers given up by frames whose bytes became an extent's slot, for
    /// frames that need a buffer of their own again.
    free_buffers: Mutex<Vec<Box<[u8]>>>,
    /// Whole read-ahead extents (every slot released), for the next window.
    free_extents: Mutex<Vec<Extent>>,
    /// Bytes of read-ahead extents alive (in frames or in `free_extents`).
    extent_bytes: Arc<AtomicUsize>,
}

/// At most this many free buffers (and free frames) are kept.
const FREE_BUFFERS_MAX: usize = 1024;

/// At most this many whole extents are kept for reuse (4 MiB with the
/// default 1 MiB window): memory idle beyond the capacity, bounded.
const FREE_EXTENTS_MAX: usize = 4;

/// A pinned, shared view of one cached block's bytes. While it lives the
/// block stays resident and nobody can modify it.
pub struct BlockRef {
    lock: FrameReadLock,
    block: u64,
}

impl BlockRef {
    /// The block number.
    pub fn block(&self) -> u64 {
        self.block
    }
}

impl std::ops::Deref for BlockRef {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.lock.bytes()
    }
}

impl std::fmt::Debug for BlockRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRef")
            .field("block", &self.block)
            .finish()
    }
}

/// A pinned, exclusive view of one cached block's bytes. Changes made
/// through it are a delayed write: when it is dropped the block is marked
/// dirty (carrying the journal position set with [`BlockMut::set_lsn`]).
pub struct BlockMut<'a> {
    cache: &'a Cache,
    lock: Option<FrameWriteLock>,
    block: u64,
    lsn: u64,
}

impl BlockMut<'_> {
    /// The block number.
    pub fn block(&self) -> u64 {
        self.block
    }
    /// The block may go home only once the journal is durable up to `lsn`
    /// (see [`Cache::write_after`]).
    pub fn set_lsn(&mut self, lsn: u64) {
        self.lsn = self.lsn.max(lsn);
    }
}

impl std::ops::Deref for BlockMut<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let lock = self.lock.as_ref().expect("the lock lives until drop");
        // SAFETY: `lock` holds the frame's exclusive lock.
        unsafe { &*lock.frame.data.data_ptr() }
    }
}

impl std::ops::DerefMut for BlockMut<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.lock
            .as_mut()
            .expect("the lock lives until drop")
            .bytes()
    }
}

impl Drop for BlockMut<'_> {
    fn drop(&mut self) {
        // Marked dirty while the data lock is still held (data lock, then
        // shard lock), so write-back never sees new bytes with an old lsn.
        self.cache.mark_dirty(self.block, self.lsn);
        self.lock = None;
    }
}

impl Cache {
    /// A cache over `device`. Starts the flusher and read-ahead threads the
    /// configuration asks for.
    pub fn new(device: Arc<dyn BlockDevice>, config: CacheConfig) -> Result<Arc<Cache>> {
        let block_size = device.block_size();
        if block_size == 0 {
            return Err(CacheError::Config(format!(
                "device {} has a block size of 0",
                device.name()
            )));
        }
        if config.max_write_blocks == 0 {
            return Err(CacheError::Config(
                "max_write_blocks must be at least 1".into(),
            ));
        }
        if config.dirty_high_water_percent == 0 || config.dirty_high_water_percent > 100 {
            return Err(CacheError::Config(
                "dirty_high_water_percent must be in 1..=100".into(),
            ));
        }
        let capacity_blocks = (config.capacity_bytes / block_size as u64) as usize;
        if capacity_blocks == 0 {
            return Err(CacheError::Config(format!(
                "capacity of {} bytes holds no {block_size}-byte block",
                config.capacity_bytes
            )));
        }
        let shard_count = if config.shards == 0 {
            (capacity_blocks / 256).clamp(1, 16)
        } else {
            config.shards.min(capacity_blocks)
        };
        let shards: Box<[Shard]> = (0..shard_count)
            .map(|index| {
                let capacity = share(capacity_blocks, shard_count, index);
                Shard {
                    inner: Mutex::new(ShardInner {
                        map: BlockMap::default(),
                        policy: config.policy.build(capacity),
                        capacity,
                        dirty: BlockMap::default(),
                        hits: 0,
                        misses: 0,
                        prefetch_hits: 0,
                        evictions: 0,
                    }),
                }
            })
            .collect();
        let read_ahead = config
            .read_ahead
            .enabled
            .then(|| Mutex::new(ReadAhead::new(config.read_ahead.clone())));
        let cache = Arc::new(Cache {
            block_size,
            block_count: device.block_count(),
            device,
            shards,
            capacity_blocks: AtomicUsize::new(capacity_blocks),
            dirty_count: AtomicUsize::new(0),
            durable_lsn: AtomicU64::new(0),
            writeback: Mutex::new(()),
            pending_error: Mutex::new(None),
            counters: Counters::default(),
            read_ahead,
            control: Arc::new(Control {
                state: Mutex::new(ControlState::default()),
                wake: Condvar::new(),
                prefetch_wake: Condvar::new(),
            }),
            config,
            free_frames: Mutex::new(Vec::new()),
            free_buffers: Mutex::new(Vec::new()),
            free_extents: Mutex::new(Vec::new()),
            extent_bytes: Arc::new(AtomicUsize::new(0)),
        });
        if cache.config.background_flusher {
            let weak = Arc::downgrade(&cache);
            let control = cache.control.clone();
            let interval = cache.config.flush_interval;
            thread::Builder::new()
                .name("keel-cache-flusher".into())
                .spawn(move || flusher_loop(weak, control, interval))
                .map_err(|e| CacheError::Config(format!("cannot start the flusher: {e}")))?;
        }
        if cache.read_ahead.is_some() {
            for index in 0..cache.config.read_ahead.threads.max(1) {
                let weak = Arc::downgrade(&cache);
                let control = cache.control.clone();
                thread::Builder::new()
                    .name(format!("keel-cache-readahead-{index}"))
                    .spawn(move || prefetch_loop(weak, control))
                    .map_err(|e| CacheError::Config(format!("cannot start read-ahead: {e}")))?;
            }
        }
        Ok(cache)
    }

    /// The device underneath.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// Size of one block in bytes.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of blocks on the device.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    fn shard(&self, block: u64) -> &Shard {
        &self.shards[self.shard_index(block)]
    }

    fn shard_index(&self, block: u64) -> usize {
        use std::hash::Hasher;
        let mut hasher = BlockHasher::default();
        hasher.write_u64(block);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    fn check_block(&self, block: u64) -> Result<()> {
        if block >= self.block_count {
            return Err(CacheError::OutOfRange {
                device: self.device.name().to_string(),
                block,
                block_count: self.block_count,
            });
        }
        Ok(())
    }

    /// Reads a block and returns it pinned. A hit costs one shard lock; a
    /// miss reads the block from the device (once, however many threads ask
    /// at the same time). Sequential reads start read-ahead.
    pub fn read(&self, block: u64, hint: ReadHint) -> Result<BlockRef> {
        self.check_block(block)?;
        let access = match hint {
            ReadHint::UseOnce => Access::UseOnce,
            ReadHint::Normal | ReadHint::NoReadAhead => Access::Normal,
        };
        loop {
            let (frame, loader, first_use_of_prefetch) = self.lookup_or_insert(block, access);
            // Read-ahead watches misses and the first use of each prefetched
            // block, as Linux's on-demand read-ahead does: a sequential
            // reader shows up in both, while an ordinary hit — the common
            // case, and the one that must scale — never touches the stream
            // table. A miss asks before its own device read, so the prefetch
            // overlaps it.
            if (loader.is_some() || first_use_of_prefetch) && hint != ReadHint::NoReadAhead {
                self.watch_stream(block, loader.is_some());
            }
            if let Some(mut lock) = loader {
                self.counters.read_ios.fetch_add(1, Ordering::Relaxed);
                match self.device.read_blocks(block, lock.bytes()) {
                    Ok(()) => {
                        frame.state.store(READY, Ordering::Release);
                        return Ok(BlockRef {
                            lock: lock.downgrade(),
                            block,
                        });
                    }
                    Err(source) => {
                        self.abandon_load(block, &frame);
                        drop(lock);
                        return Err(CacheError::Read { block, source });
                    }
                }
            }
            // A block read ahead moves out of its extent at its first use:
            // the reader was going to copy it anyway, and the extent, once
            // its window is used, goes back to be read into while it is
            // still warm (`crate::extent`).
            let mut lock = self
                .move_out_of_extent(frame)
                .unwrap_or_else(FrameReadLock::lock);
            if lock.frame.state.load(Ordering::Acquire) == FAILED {
                // The load we waited for failed and the frame is gone; try
                // ourselves (and report our own error if it fails again).
                self.shard(block).inner.lock().hits -= 1;
                continue;
            }
            if lock.frame.in_extent.load(Ordering::Relaxed) {
                // We waited for the load: move now (our `Arc` keeps the
                // frame resident while its lock is let go).
                let frame = lock.frame.clone();
                drop(lock);
                lock = self
                    .move_out_of_extent(frame)
                    .unwrap_or_else(FrameReadLock::lock);
            }
            return Ok(BlockRef { lock, block });
        }
    }

    /// Tells read-ahead about a read it should see, and issues what it
    /// asks for.
    fn watch_stream(&self, block: u64, missed: bool) {
        // The stream table is the one cache-wide lock read-ahead takes, so
        // it is only tried: under contention a read skips detection
        // (streams pick up again at their next block, or anywhere in what
        // they already prefetched).
        if let Some(mut read_ahead) = self.read_ahead.as_ref().and_then(|r| r.try_lock()) {
            let view = CacheView {
                block_count: self.block_count,
                // A stream keeps up to three windows requested: a sixteenth
                // of the cache each stays under the quarter that unused
                // prefetched blocks may hold before they are evicted first.
                window_limit: (self.capacity_blocks.load(Ordering::Relaxed) / 16).max(1),
                waste: self.counters.prefetch_waste.load(Ordering::Relaxed),
            };
            let request = read_ahead.on_read(block, missed, view);
            drop(read_ahead);
            if let Some((start, count)) = request {
                self.request_prefetch(start, count);
            }
        }
    }

    /// Reads a block into `buf` (exactly one block long).
    pub fn read_into(&self, block: u64, hint: ReadHint, buf: &mut [u8]) -> Result<()> {
        self.check_length(block, buf.len())?;
        let data = self.read(block, hint)?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn check_length(&self, block: u64, len: usize) -> Result<()> {
        if len != self.block_size {
            return Err(CacheError::BadLength {
                block,
                len,
                block_size: self.block_size,
            });
        }
        Ok(())
    }

    /// Finds the frame of `block`, or inserts a loading one. Returns the
    /// frame, the write guard to fill when this caller must load it, and
    /// whether this is the first use of a block read ahead.
    #[allow(clippy::type_complexity)]
    fn lookup_or_insert(
        &self,
        block: u64,
        access: Access,
    ) -> (Arc<Frame>, Option<FrameWriteLock>, bool) {
        let shard = self.shard(block);
        let mut evicted = Vec::new();
        let result = {
            let mut inner = shard.lock_spinning();
            let ShardInner { map, policy, .. } = &mut *inner;
            if let Some(entry) = map.get_mut(&block) {
                let frame = entry.frame.clone();
                policy.touch_hinted(block, access, &mut entry.hint);
                // Load first: the common case writes nothing to the frame.
                let first_use = frame.prefetched.load(Ordering::Relaxed)
                    && frame.prefetched.swap(false, Ordering::Relaxed);
                if first_use {
                    inner.prefetch_hits += 1;
                }
                inner.hits += 1;
                (frame, None, first_use)
            } else {
                let frame = self.new_frame(LOADING, false);
                // A fresh lock: taking it cannot wait.
                let guard = FrameWriteLock::lock(frame.clone());
                inner.map.insert(block, Entry::new(frame.clone()));
                inner.misses += 1;
                inner.policy.insert(block, access);
                self.evict_over_capacity(&mut inner, &mut evicted);
                (frame, Some(guard), false)
            }
        };
        // Frames are freed outside the shard lock.
        self.recycle(evicted);
        result
    }

    /// A frame for a new block, in `state`: a recycled one if there is
    /// one. Nobody else holds it. Its bytes are garbage until the caller
    /// fills them (every caller does, under the frame's write lock or before
    /// the frame is visible).
    fn new_frame(&self, state: u8, prefetched: bool) -> Arc<Frame> {
        let recycled = self.free_frames.lock().pop();
        self.reuse_or_allocate(recycled, state, prefetched, true)
    }

    /// A frame from `recycled` if nobody else holds it, else a new one.
    /// With `needs_buffer` its bytes are a block-sized buffer of its own;
    /// without (a frame read ahead, whose bytes will be an extent's slot)
    /// it may have none.
    fn reuse_or_allocate(
        &self,
        recycled: Option<Arc<Frame>>,
        state: u8,
        prefetched: bool,
        needs_buffer: bool,
    ) -> Arc<Frame> {
        if let Some(mut frame) = recycled {
            if let Some(fresh) = Arc::get_mut(&mut frame) {
                *fresh.state.get_mut() = state;
                *fresh.prefetched.get_mut() = prefetched;
                let bytes = fresh.data.get_mut();
                if needs_buffer && bytes.len() != self.block_size {
                    // Recycled frames hold no slots (`recycle` released
                    // them), so this drops nothing that matters.
                    *bytes = FrameBytes::Own(self.take_buffer());
                }
                return frame;
            }
        }
        let bytes = if needs_buffer {
            FrameBytes::Own(self.take_buffer())
        } else {
            FrameBytes::empty()
        };
        Frame::new(bytes, state, prefetched)
    }

    /// A block-sized buffer: a free one, or a new one.
    fn take_buffer(&self) -> Box<[u8]> {
        self.free_buffers
            .lock()
            .pop()
            .unwrap_or_else(|| vec![0u8; self.block_size].into_boxed_slice())
    }

    /// Keeps what a frame's bytes gave back, within the pools' bounds.
    fn give_back(&self, released: Released) {
        if let Some(buffer) = released.buffer {
            self.give_back_buffer(buffer);
        }
        self.give_back_extent(released.extent);
    }

    fn give_back_buffer(&self, buffer: Box<[u8]>) {
        if buffer.len() == self.block_size {
            let mut free = self.free_buffers.lock();
            if free.len() < FREE_BUFFERS_MAX {
                free.push(buffer);
            }
        }
    }

    fn give_back_extent(&self, extent: Option<Extent>) {
        if let Some(extent) = extent.filter(|extent| extent.len() == self.window_bytes()) {
            let mut free = self.free_extents.lock();
            if free.len() < FREE_EXTENTS_MAX {
                free.push(extent);
            }
        }
    }

    /// Bytes of a full read-ahead window (the size of pooled extents).
    fn window_bytes(&self) -> usize {
        // Saturating: a configured window larger than memory only means no
        // extent is ever pooled (read-ahead windows are also bounded by a
        // sixteenth of the capacity, so none is that large).
        (self.config.read_ahead.max_window_blocks.max(1)).saturating_mul(self.block_size)
    }

    /// An extent for `blocks` blocks: a pooled one for a full window, else
    /// a new one of exactly that size.
    fn take_extent(&self, blocks: usize) -> Extent {
        let bytes = blocks * self.block_size;
        if bytes == self.window_bytes() {
            if let Some(extent) = self.free_extents.lock().pop() {
                return extent;
            }
        }
        Extent::new(bytes, &self.extent_bytes)
    }

    /// Moves a frame's bytes out of a read-ahead extent into a buffer of its
    /// own (the caller holds the frame's exclusive lock): a block that has
    /// been used or written never keeps its window's extent alive.
    fn own_bytes(&self, frame: &Frame, bytes: &mut FrameBytes) {
        let FrameBytes::Slot { spare, .. } = bytes else {
            return;
        };
        // The buffer the frame had before it took the slot, if any.
        let mut own = if spare.len() == self.block_size {
            std::mem::take(spare)
        } else {
            self.take_buffer()
        };
        own.copy_from_slice(bytes);
        let slot = std::mem::replace(bytes, FrameBytes::Own(own));
        frame.in_extent.store(false, Ordering::Relaxed);
        self.give_back(slot.release());
    }

    /// [`own_bytes`](Self::own_bytes) at a use of the block, if its bytes
    /// are in an extent and its lock is free right now: returns the lock,
    /// downgraded to shared for the reader. Otherwise gives the frame back
    /// (another reader uses the slot meanwhile, and the next use tries
    /// again).
    fn move_out_of_extent(
        &self,
        frame: Arc<Frame>,
    ) -> std::result::Result<FrameReadLock, Arc<Frame>> {
        if !frame.in_extent.load(Ordering::Relaxed) {
            return Err(frame);
        }
        let lock = FrameWriteLock::try_lock(frame)?;
        let frame: &Frame = &lock.frame;
        // SAFETY: `lock` holds the frame's exclusive lock.
        let bytes = unsafe { &mut *frame.data.data_ptr() };
        self.own_bytes(frame, bytes);
        Ok(lock.downgrade())
    }

    /// Up to `count` recycled frames, taken under one lock.
    fn take_frames(&self, count: usize) -> Vec<Arc<Frame>> {
        let mut free = self.free_frames.lock();
        let keep = free.len().saturating_sub(count);
        free.split_off(keep)
    }

    /// Keeps evicted (or unused) frames for reuse; called outside the shard
    /// lock. Only frames nobody else holds are kept.
    fn recycle(&self, mut evicted: Vec<Arc<Frame>>) {
        if evicted.is_empty() {
            return;
        }
        // Slots go back first, so that no idle frame keeps an extent alive.
        for frame in evicted.iter_mut() {
            if let Some(frame) = Arc::get_mut(frame) {
                if std::mem::take(frame.in_extent.get_mut()) {
                    // The frame keeps its spare buffer, if it had one.
                    let bytes = frame.data.get_mut();
                    let Released { buffer, extent } =
                        std::mem::replace(bytes, FrameBytes::empty()).release();
                    if let Some(buffer) = buffer {
                        *bytes = FrameBytes::Own(buffer);
                    }
                    self.give_back_extent(extent);
                }
            }
        }
        let mut free = self.free_frames.lock();
        for frame in evicted {
            if free.len() >= FREE_BUFFERS_MAX {
                break;
            }
            if Arc::strong_count(&frame) == 1 && Arc::weak_count(&frame) == 0 {
                free.push(frame);
            }
        }
    }

    /// Forgets a frame whose load failed, so the next reader tries again.
    fn abandon_load(&self, block: u64, frame: &Arc<Frame>) {
        frame.state.store(FAILED, Ordering::Release);
        let mut inner = self.shard(block).inner.lock();
        if inner
            .map
            .get(&block)
            .is_some_and(|resident| Arc::ptr_eq(&resident.frame, frame))
        {
            inner.map.remove(&block);
            inner.policy.remove(block);
        }
    }

    /// Evicts until the shard fits, skipping pinned, dirty and loading
    /// frames. If every resident frame is busy the shard stays over capacity
    /// until write-back or unpinning lets it shrink.
    fn evict_over_capacity(&self, inner: &mut ShardInner, evicted: &mut Vec<Arc<Frame>>) {
        Self::evict_down_to(inner, inner.capacity, false, &self.counters, evicted);
    }

    /// Evicts until the shard holds at most `limit` blocks; with
    /// `for_prefetch`, only victims the policy would give up for a block
    /// read ahead ([`Policy::evict_for_prefetch`]). Returns true when the
    /// shard fits.
    fn evict_down_to(
        inner: &mut ShardInner,
        limit: usize,
        for_prefetch: bool,
        counters: &Counters,
        evicted: &mut Vec<Arc<Frame>>,
    ) -> bool {
        while inner.map.len() > limit {
            let ShardInner {
                map, policy, dirty, ..
            } = inner;
            let mut may_evict = |key| {
                map.get(&key).is_some_and(|entry| {
                    Arc::strong_count(&entry.frame) == 1
                        && entry.frame.state.load(Ordering::Acquire) == READY
                        && !dirty.contains_key(&key)
                })
            };
            let victim = if for_prefetch {
                policy.evict_for_prefetch(&mut may_evict)
            } else {
                policy.evict(&mut may_evict)
            };
            let Some(victim) = victim else {
                return false;
            };
            let frame = map
                .remove(&victim)
                .expect("the policy only names resident blocks")
                .frame;
            if frame.prefetched.load(Ordering::Relaxed) {
                counters.prefetch_waste.fetch_add(1, Ordering::Relaxed);
            }
            inner.evictions += 1;
            evicted.push(frame);
        }
        true
    }

    /// Delayed write of a whole block: the cache takes the bytes and the
    /// block goes home at the next write-back. Not durable until
    /// [`sync`](Cache::sync) returns.
    pub fn write(&self, block: u64, data: &[u8]) -> Result<()> {
        self.write_after(block, data, 0)
    }

    /// A delayed write under the write-ahead rule: the block may go home only
    /// once the journal has reported itself durable up to `lsn`
    /// ([`set_durable_lsn`](Cache::set_durable_lsn)). Until then the block
    /// stays dirty and resident, and [`sync`](Cache::sync) leaves it alone.
    /// Later writes to the block keep the largest `lsn` any of them carried.
    pub fn write_after(&self, block: u64, data: &[u8], lsn: u64) -> Result<()> {
        self.check_block(block)?;
        self.check_length(block, data.len())?;
        let shard = self.shard(block);
        let frame = {
            let mut evicted = Vec::new();
            let mut inner = shard.inner.lock();
            let ShardInner { map, policy, .. } = &mut *inner;
            let frame = match map.get_mut(&block) {
                Some(entry) => {
                    policy.touch_hinted(block, Access::Normal, &mut entry.hint);
                    let frame = entry.frame.clone();
                    if frame.prefetched.swap(false, Ordering::Relaxed) {
                        inner.prefetch_hits += 1;
                    }
                    Some(frame)
                }
                None => {
                    // A whole-block write needs no read: the frame is born
                    // ready and dirty.
                    let frame = self.new_frame(READY, false);
                    // Not visible yet: the lock is free.
                    frame.data.write().copy_from_slice(data);
                    inner.map.insert(block, Entry::new(frame));
                    inner.policy.insert(block, Access::Normal);
                    self.mark_dirty_locked(&mut inner, block, lsn);
                    self.evict_over_capacity(&mut inner, &mut evicted);
                    None
                }
            };
            drop(inner);
            self.recycle(evicted);
            frame
        };
        if let Some(frame) = frame {
            let mut guard = frame.data.write();
            if frame.state.load(Ordering::Acquire) == FAILED {
                // We waited on a load that failed; the frame is detached.
                drop(guard);
                return self.write_after(block, data, lsn);
            }
            // A block written stays until written home: bytes of its own.
            self.own_bytes(&frame, &mut guard);
            guard.copy_from_slice(data);
            // Data lock still held: see `BlockMut::drop`.
            self.mark_dirty(block, lsn);
            drop(guard);
        }
        self.after_dirtying();
        Ok(())
    }

    /// Exclusive access to a block's bytes (read from the device if it is
    /// not resident). Dropping the guard marks the block dirty.
    pub fn modify(&self, block: u64) -> Result<BlockMut<'_>> {
        loop {
            let pinned = self.read(block, ReadHint::NoReadAhead)?;
            let frame = pinned.lock.frame.clone();
            drop(pinned);
            let mut lock = FrameWriteLock::lock(frame);
            if lock.frame.state.load(Ordering::Acquire) == FAILED {
                continue;
            }
            if lock.frame.in_extent.load(Ordering::Relaxed) {
                let frame = lock.frame.clone();
                self.own_bytes(&frame, lock.slot());
            }
            return Ok(BlockMut {
                cache: self,
                lock: Some(lock),
                block,
                lsn: 0,
            });
        }
    }

    fn mark_dirty(&self, block: u64, lsn: u64) {
        let mut inner = self.shard(block).inner.lock();
        self.mark_dirty_locked(&mut inner, block, lsn);
    }

    fn mark_dirty_locked(&self, inner: &mut ShardInner, block: u64, lsn: u64) {
        match inner.dirty.get_mut(&block) {
            Some(existing) => *existing = (*existing).max(lsn),
            None => {
                inner.dirty.insert(block, lsn);
                self.dirty_count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Back-pressure after a write: wake the flusher past the high-water
    /// mark; write back in the caller's thread when dirty blocks alone fill
    /// the cache.
    fn after_dirtying(&self) {
        let dirty = self.dirty_count.load(Ordering::Relaxed);
        let capacity = self.capacity_blocks.load(Ordering::Relaxed);
        if dirty > capacity {
            // If another pass is running it is already writing blocks home;
            // waiting for it could wait for a block this thread holds.
            if let Some(_pass) = self.writeback.try_lock() {
                if let Err(error) = self.write_back_locked(false) {
                    self.remember(error);
                }
            }
        } else if dirty * 100 >= capacity * self.config.dirty_high_water_percent as usize {
            let mut state = self.control.state.lock();
            if !state.flush_requested {
                state.flush_requested = true;
                self.control.wake.notify_all();
            }
        }
    }

    /// The journal reports that its log is durable up to `lsn`: blocks
    /// written with [`write_after`](Cache::write_after) at or below it may
    /// now go home. Positions only move forward.
    pub fn set_durable_lsn(&self, lsn: u64) {
        self.durable_lsn.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The journal position last reported durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// Writes every dirty block that is allowed home (its lsn is durable)
    /// and flushes the device; returns when they are durable. Blocks still
    /// waiting for the journal stay dirty and are not waited for.
    ///
    /// Reports the first write-back error since the previous `sync`,
    /// including errors of the background flusher, even if this call's own
    /// writes succeeded: a failed write-back is never swallowed.
    pub fn sync(&self) -> Result<()> {
        let _pass = self.writeback.lock();
        let written = self.write_back_locked(true);
        // IMPORTANT: the durability barrier. Everything written home by this
        // or any earlier pass is on stable storage once this returns Ok.
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        let flushed = self
            .device
            .flush()
            .map_err(|source| CacheError::Flush { source });
        let earlier = self.pending_error.lock().take();
        earlier.map_or(Ok(()), Err)?;
        written?;
        flushed
    }

    fn remember(&self, error: CacheError) {
        let mut pending = self.pending_error.lock();
        if pending.is_none() {
            *pending = Some(error);
        }
    }

    fn write_back(&self) -> Result<()> {
        let _pass = self.writeback.lock();
        self.write_back_locked(true)
    }

    /// One write-back pass (the caller holds `self.writeback`): every dirty
    /// block whose lsn is durable, sorted by block number and coalesced into
    /// runs of up to `max_write_blocks` (the elevator). Failed blocks stay
    /// dirty. Returns the first error.
    ///
    /// `wait`: wait for blocks that someone is modifying (`sync`, `resize`:
    /// everything written before the call must go). Without it, such blocks
    /// are skipped and stay dirty (the flusher and back-pressure, which run
    /// on behalf of threads that may hold a `BlockMut` themselves and must
    /// not wait for it).
    fn write_back_locked(&self, wait: bool) -> Result<()> {
        let durable = self.durable_lsn();
        let mut candidates: Vec<(u64, Arc<Frame>)> = Vec::new();
        for shard in self.shards.iter() {
            let inner = shard.inner.lock();
            for (&block, &lsn) in inner.dirty.iter() {
                if lsn <= durable {
                    if let Some(entry) = inner.map.get(&block) {
                        candidates.push((block, entry.frame.clone()));
                    }
                }
            }
        }
        candidates.sort_unstable_by_key(|(block, _)| *block);
        let mut first_error = None;
        let mut index = 0;
        while index < candidates.len() {
            let mut run_end = index + 1;
            while run_end < candidates.len()
                && run_end - index < self.config.max_write_blocks
                && candidates[run_end].0 == candidates[run_end - 1].0 + 1
            {
                run_end += 1;
            }
            if let Err(error) = self.write_run(&candidates[index..run_end], wait) {
                first_error.get_or_insert(error);
            }
            index = run_end;
        }
        drop(candidates);
        self.trim_all();
        first_error.map_or(Ok(()), Err)
    }

    /// Writes one run of consecutive blocks with a single device write.
    /// Each block is taken off its dirty list while its data lock is held,
    /// so the bytes written are exactly those its lsn describes; a block
    /// re-dirtied since it was collected is written with its new bytes only
    /// if its new lsn is durable too, and otherwise splits the run.
    fn write_run(&self, run: &[(u64, Arc<Frame>)], wait: bool) -> Result<()> {
        let durable = self.durable_lsn();
        let block_size = self.block_size;
        let mut buffer = vec![0u8; run.len() * block_size];
        // (position in run, lsn) of each block taken.
        let mut taken: Vec<(usize, u64)> = Vec::with_capacity(run.len());
        for (position, (block, frame)) in run.iter().enumerate() {
            let data = if wait {
                frame.data.read()
            } else {
                match frame.data.try_read() {
                    Some(data) => data,
                    // Being modified: it stays dirty for the next pass.
                    None => continue,
                }
            };
            let lsn = {
                let mut inner = self.shard(*block).inner.lock();
                match inner.dirty.get(block) {
                    Some(&lsn) if lsn <= durable => {
                        inner.dirty.remove(block);
                        self.dirty_count.fetch_sub(1, Ordering::Relaxed);
                        Some(lsn)
                    }
                    _ => None,
                }
            };
            if let Some(lsn) = lsn {
                buffer[position * block_size..(position + 1) * block_size].copy_from_slice(&data);
                taken.push((position, lsn));
            }
        }
        // Write maximal consecutive stretches of what was taken.
        let mut first_error = None;
        let mut index = 0;
        while index < taken.len() {
            let mut end = index + 1;
            while end < taken.len() && taken[end].0 == taken[end - 1].0 + 1 {
                end += 1;
            }
            let first = taken[index].0;
            let last = taken[end - 1].0;
            let start_block = run[first].0;
            let bytes = &buffer[first * block_size..(last + 1) * block_size];
            self.counters.write_ios.fetch_add(1, Ordering::Relaxed);
            match self.device.write_blocks(start_block, bytes) {
                Ok(()) => {
                    self.counters
                        .blocks_written
                        .fetch_add((end - index) as u64, Ordering::Relaxed);
                }
                Err(source) => {
                    // Keep the blocks dirty: their data is still only here.
                    for &(position, lsn) in &taken[index..end] {
                        let (block, frame) = &run[position];
                        let _data = frame.data.read();
                        self.mark_dirty(*block, lsn);
                    }
                    let block = match &source {
                        keel_disk::DiskError::Io { block, .. }
                        | keel_disk::DiskError::Media { block, .. } => *block,
                        _ => start_block,
                    };
                    first_error.get_or_insert(CacheError::WriteBack { block, source });
                }
            }
            index = end;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Evicts in every shard that is over capacity (after write-back made
    /// blocks clean, or after a shrink).
    fn trim_all(&self) {
        for shard in self.shards.iter() {
            let mut evicted = Vec::new();
            let mut inner = shard.inner.lock();
            if inner.map.len() > inner.capacity {
                self.evict_over_capacity(&mut inner, &mut evicted);
            }
            drop(inner);
            self.recycle(evicted);
        }
    }

    /// Changes the capacity while running. Growing takes effect at once.
    /// Shrinking evicts clean blocks, writes dirty ones home (without a
    /// device flush: eviction needs the device to hold the data, not to
    /// have made it durable) and evicts them too. Pinned blocks and blocks
    /// waiting for the journal cannot leave; the cache stays over its new
    /// capacity until they can.
    pub fn resize(&self, capacity_bytes: u64) -> Result<()> {
        let shard_count = self.shards.len();
        let capacity_blocks = ((capacity_bytes / self.block_size as u64) as usize).max(shard_count);
        self.capacity_blocks
            .store(capacity_blocks, Ordering::Relaxed);
        let mut over = false;
        for (index, shard) in self.shards.iter().enumerate() {
            let capacity = share(capacity_blocks, shard_count, index);
            let mut evicted = Vec::new();
            let mut inner = shard.inner.lock();
            inner.capacity = capacity;
            inner.policy.set_capacity(capacity);
            self.evict_over_capacity(&mut inner, &mut evicted);
            over |= inner.map.len() > inner.capacity;
        }
        if over {
            self.write_back()?;
        }
        Ok(())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let mut stats = CacheStats::default();
        for shard in self.shards.iter() {
            let inner = shard.inner.lock();
            stats.resident_blocks += inner.map.len() as u64;
            stats.hits += inner.hits;
            stats.misses += inner.misses;
            stats.prefetch_hits += inner.prefetch_hits;
            stats.evictions += inner.evictions;
        }
        CacheStats {
            prefetched: c.prefetched.load(Ordering::Relaxed),
            prefetch_waste: c.prefetch_waste.load(Ordering::Relaxed),
            blocks_written: c.blocks_written.load(Ordering::Relaxed),
            write_ios: c.write_ios.load(Ordering::Relaxed),
            read_ios: c.read_ios.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            resident_blocks: stats.resident_blocks,
            dirty_blocks: self.dirty_count.load(Ordering::Relaxed) as u64,
            capacity_blocks: self.capacity_blocks.load(Ordering::Relaxed) as u64,
            extent_bytes: self.extent_bytes.load(Ordering::Relaxed) as u64,
            ..stats
        }
    }

    /// True when `block` is resident (for tests and `keel inspect`).
    pub fn contains(&self, block: u64) -> bool {
        self.shard(block).inner.lock().map.contains_key(&block)
    }

    /// True when `block` is resident and dirty.
    pub fn is_dirty(&self, block: u64) -> bool {
        self.shard(block).inner.lock().dirty.contains_key(&block)
    }

    // ---- read-ahead ------------------------------------------------------

    /// Waits until every read-ahead request issued so far has been carried
    /// out (for tests and benchmarks that want a quiet cache).
    pub fn wait_for_read_ahead(&self) {
        let mut state = self.control.state.lock();
        while !state.stop && (!state.prefetch_queue.is_empty() || state.prefetch_active > 0) {
            self.control.wake.wait(&mut state);
        }
    }

    fn request_prefetch(&self, start: u64, count: usize) {
        let mut state = self.control.state.lock();
        // A bounded queue: read-ahead that cannot keep up is dropped, not
        // queued without limit.
        if state.prefetch_queue.len() < 64 {
            state.prefetch_queue.push_back((start, count));
            self.control.prefetch_wake.notify_one();
        }
    }

    /// Reads `count` blocks from `start` in the background: each stretch of
    /// non-resident blocks is claimed (loading frames, so concurrent readers
    /// wait for this read instead of issuing their own) and read with one
    /// device read.
    fn prefetch(&self, start: u64, count: usize) {
        let end = (start + count as u64).min(self.block_count);
        let max = self.config.read_ahead.max_window_blocks.max(1);
        let mut window_start = start;
        while window_start < end {
            let window_end = (window_start + max as u64).min(end);
            let (slots, room) = self.claim_window(window_start, window_end);
            self.fill_window(window_start, slots);
            if !room {
                // No room for guesses: the reader's own misses bring the
                // rest in.
                return;
            }
            window_start = window_end;
        }
    }

    /// Reads the blocks claimed in a window starting at `first` (one slot
    /// per block: its frame's write lock, or `None` when the block was
    /// resident) into one extent, each run of consecutive claimed blocks
    /// with one device read, and hands them to their readers. The extent's
    /// slots become the frames' bytes: nothing is copied. Every run is read
    /// before any is handed over (the extent is split once); a window has
    /// more than one run only around blocks already resident.
    fn fill_window(&self, first: u64, slots: Vec<Option<FrameWriteLock>>) {
        let claimed = slots.iter().filter(|slot| slot.is_some()).count();
        if claimed == 0 {
            return;
        }
        let mut extent = self.take_extent(claimed);
        // The runs, packed one after the other in the extent: (first block,
        // frames, whether the read succeeded).
        let mut runs: Vec<(u64, Vec<FrameWriteLock>, bool)> = Vec::new();
        let mut slots = slots.into_iter().enumerate().peekable();
        let mut packed = 0;
        while let Some((offset, slot)) = slots.next() {
            let Some(lock) = slot else {
                continue;
            };
            let mut run = vec![lock];
            while let Some((_, Some(_))) = slots.peek() {
                if let Some((_, Some(lock))) = slots.next() {
                    run.push(lock);
                }
            }
            let bytes = run.len() * self.block_size;
            let buffer = &mut extent.as_mut_slice()[packed..packed + bytes];
            self.counters.read_ios.fetch_add(1, Ordering::Relaxed);
            let run_first = first + offset as u64;
            let ok = self.device.read_blocks(run_first, buffer).is_ok();
            packed += bytes;
            runs.push((run_first, run, ok));
        }
        let mut pieces = extent.split(self.block_size);
        let mut given_up = Vec::new();
        for (run_first, mut run, ok) in runs {
            if !ok {
                // Read-ahead is only a guess: a failed prefetch is
                // forgotten, and a real read of the block reports the
                // error itself.
                for (offset, lock) in run.drain(..).enumerate() {
                    pieces.next();
                    self.abandon_load(run_first + offset as u64, &lock.frame);
                    drop(lock);
                }
                continue;
            }
            self.counters
                .prefetched
                .fetch_add(run.len() as u64, Ordering::Relaxed);
            for lock in run.iter_mut() {
                let piece = pieces.next().expect("one slot per claimed block");
                // The frame's own buffer, if it had one, waits beside the
                // slot for when the block leaves the extent.
                let spare = match std::mem::replace(lock.slot(), FrameBytes::empty()) {
                    FrameBytes::Own(buffer) => buffer,
                    other => {
                        given_up.push(other);
                        Box::default()
                    }
                };
                *lock.slot() = piece.with_spare(spare);
                lock.frame.in_extent.store(true, Ordering::Relaxed);
                lock.frame.state.store(READY, Ordering::Release);
            }
            // Released together, after all are filled: a reader waiting on
            // the first block then finds the rest ready instead of sleeping
            // and waking once per block.
            drop(run);
        }
        drop(pieces);
        for old in given_up {
            self.give_back(old.release());
        }
    }

    /// Claims the missing blocks of `[start, end)` as loading, prefetched
    /// frames, taking each shard's lock once. Returns a slot per block (the
    /// frame's write lock, or `None` when the block was resident) and false
    /// when a shard had no room for a guess (read-ahead then stops).
    fn claim_window(&self, start: u64, end: u64) -> (Vec<Option<FrameWriteLock>>, bool) {
        let count = (end - start) as usize;
        let mut slots: Vec<Option<FrameWriteLock>> = (0..count).map(|_| None).collect();
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        for offset in 0..count {
            by_shard[self.shard_index(start + offset as u64)].push(offset);
        }
        let mut frames = self.take_frames(count);
        let mut evicted = Vec::new();
        let mut room = true;
        for (shard, offsets) in self.shards.iter().zip(&by_shard) {
            if offsets.is_empty() {
                continue;
            }
            let mut inner = shard.inner.lock();
            for &offset in offsets {
                let block = start + offset as u64;
                if inner.map.contains_key(&block) {
                    continue;
                }
                // Room for a guess is made only from blocks the policy
                // would give up for one (never the working set).
                let limit = inner.capacity.saturating_sub(1);
                if !Self::evict_down_to(&mut inner, limit, true, &self.counters, &mut evicted) {
                    room = false;
                    break;
                }
                let frame = self.reuse_or_allocate(frames.pop(), LOADING, true, false);
                // A fresh lock: taking it cannot wait.
                let lock = FrameWriteLock::lock(frame.clone());
                inner.map.insert(block, Entry::new(frame));
                inner.policy.insert(block, Access::Prefetch);
                slots[offset] = Some(lock);
            }
            drop(inner);
            if !room {
                break;
            }
        }
        self.recycle(frames);
        self.recycle(evicted);
        (slots, room)
    }
}

/// Share `index` of `total` split `parts` ways (at least 1).
fn share(total: usize, parts: usize, index: usize) -> usize {
    (total / parts + usize::from(index < total % parts)).max(1)
}

impl Drop for Cache {
    fn drop(&mut self) {
        let mut state = self.control.state.lock();
        state.stop = true;
        self.control.wake.notify_all();
        self.control.prefetch_wake.notify_all();
    }
}

/// The background flusher: every `interval`, and whenever dirty blocks pass
/// the high-water mark, writes dirty blocks home and flushes the device.
/// Errors are remembered for the next `sync`.
fn flusher_loop(cache: Weak<Cache>, control: Arc<Control>, interval: Duration) {
    let mut next_due = Instant::now() + interval;
    loop {
        {
            let mut state = control.state.lock();
            loop {
                if state.stop {
                    return;
                }
                if state.flush_requested {
                    state.flush_requested = false;
                    break;
                }
                let now = Instant::now();
                if now >= next_due {
                    break;
                }
                control.wake.wait_for(&mut state, next_due - now);
            }
        }
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let dirty = cache.dirty_count.load(Ordering::Relaxed);
        if dirty > 0 {
            let _pass = cache.writeback.lock();
            if let Err(error) = cache.write_back_locked(false) {
                cache.remember(error);
            }
            cache.counters.flushes.fetch_add(1, Ordering::Relaxed);
            if let Err(source) = cache.device.flush() {
                cache.remember(CacheError::Flush { source });
            }
        }
        next_due = Instant::now() + interval;
        drop(cache);
        // Past the high-water mark with nothing allowed home (all waiting
        // for the journal), do not spin.
        thread::sleep(Duration::from_millis(1));
    }
}

/// A read-ahead worker: takes prefetch requests off the queue.
fn prefetch_loop(cache: Weak<Cache>, control: Arc<Control>) {
    loop {
        let request = {
            let mut state = control.state.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(request) = state.prefetch_queue.pop_front() {
                    state.prefetch_active += 1;
                    break request;
                }
                control.prefetch_wake.wait(&mut state);
            }
        };
        if let Some(cache) = cache.upgrade() {
            cache.prefetch(request.0, request.1);
        }
        let mut state = control.state.lock();
        state.prefetch_active -= 1;
        control.wake.notify_all();
    }
}
