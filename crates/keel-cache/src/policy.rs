//! Replacement policies: which resident block to give up when the cache is full.
//!
//! A policy sees only block numbers. It is told about every hit
//! ([`Policy::touch`]) and every new resident ([`Policy::insert`]), and is asked
//! for a victim ([`Policy::evict`]) whenever the cache holds more blocks than its
//! capacity. The cache passes a predicate saying which blocks may leave (a
//! pinned, dirty or loading block may not); a policy skips the others as if
//! they had just been used, so a long-pinned block never wedges eviction.
//!
//! The same policy objects run inside [`crate::Cache`] (one per shard) and in
//! the trace benchmark (one for the whole trace), so the hit ratios measured
//! are those of the code that serves the file system.
//!
//! The policies (`docs/cache.md` has the measurements behind the choice):
//!
//! * [`crate::adaptive::Adaptive`], the default: W-TinyLFU,
//!   [`crate::lirs::Lirs`] and LRU kept over one resident set, eviction
//!   decided by whichever a mini-simulation shows ahead.
//! * [`WTinyLfu`]: Window TinyLFU, a small LRU window in front
//!   of a segmented-LRU main area guarded by a frequency sketch, with the
//!   window sized by mini-simulation. A block seen once (a scan) cannot
//!   displace a block seen often, so the working set survives
//!   `find . -exec grep`; loops larger than the cache keep a fixed part of
//!   themselves; recency-friendly workloads get a large window.
//! * [`Lru`]: the lecture's least-recently-used list.
//! * [`S3Fifo`]: three FIFO queues (Yang et al., "FIFO queues are all you
//!   need for cache eviction", SOSP '23):
//!
//!   ```text
//!   miss ──► small (10%) ──evict, used ≥ threshold──► main (90%) ──► evict (used: reinsert, count-1)
//!              │ evict, not used                        ▲
//!              ▼                                        │ miss on a ghost key
//!            ghost (keys only, as many as main holds) ──┘
//!   ```
//!
//!   Scan-resistant and simple, but far behind on loops.
//! * [`crate::lirs::Lirs`]: LIRS, ranking blocks by reuse distance.
//!
//! Every policy keeps two more queues that go before its own choice: blocks
//! read with the use-once hint, and blocks read ahead but not yet used (the
//! oldest of those beyond a quarter of the capacity: the newest are what a
//! sequential reader needs next).
//!
//! [`ArcReference`] is ARC, for the benchmark only.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// How a block is being accessed, as far as replacement cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// An ordinary read or write.
    Normal,
    /// The caller says it will not need the block again: keep it only until
    /// something else needs the room (the lecture's "use once").
    UseOnce,
    /// Brought in by read-ahead, not yet asked for: evicted first. The first
    /// real access (a `touch` with [`Access::Normal`]) makes it an ordinary
    /// block.
    Prefetch,
}

/// Where a policy last found a resident block's metadata, kept by the
/// caller beside the block (the cache keeps it in the block's map entry) and
/// handed back with the next hit, so that a hit can skip the policy's index
/// lookup. Only ever a hint: a policy checks it against the block number
/// before use and looks the block up when it is stale, so a wrong hint
/// costs a lookup and never a wrong answer. One slot per member of a
/// policy made of several ([`crate::adaptive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint(pub [u32; 3]);

impl Hint {
    /// No hint: the first hit looks the block up.
    pub const NONE: Hint = Hint([NIL; 3]);
}

/// A replacement policy over block numbers. See the module documentation.
pub trait Policy: Send {
    /// Short name, as printed by the benchmark.
    fn name(&self) -> &'static str;
    /// The number of blocks the cache will hold; policies size their queues
    /// from it. Does not evict: the cache calls [`Policy::evict`] until it fits.
    fn set_capacity(&mut self, blocks: usize);
    /// Number of resident blocks the policy tracks.
    fn len(&self) -> usize;
    /// True when no block is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True when `key` is resident.
    fn contains(&self, key: u64) -> bool;
    /// A hit on a resident block.
    fn touch(&mut self, key: u64, access: Access);
    /// [`Policy::touch`] with the block's [`Hint`], which the policy checks,
    /// uses and updates. By default the hint is ignored.
    fn touch_hinted(&mut self, key: u64, access: Access, hint: &mut Hint) {
        let _ = hint;
        self.touch(key, access);
    }
    /// A new resident block (`key` must not be resident).
    fn insert(&mut self, key: u64, access: Access);
    /// Forgets a resident block without counting it as an eviction (a load
    /// that failed).
    fn remove(&mut self, key: u64);
    /// Another policy sharing this one's resident set evicted `key` (see
    /// [`crate::adaptive`]): forget it as resident, keeping whatever history
    /// an eviction of one's own would keep. By default, [`Policy::remove`].
    fn evicted_elsewhere(&mut self, key: u64) {
        self.remove(key);
    }
    /// This policy now chooses the victims of a resident set whose
    /// evictions another policy decided until now (see [`crate::adaptive`]):
    /// a chance to rebuild queues that the other policy's choices shaped.
    /// By default, nothing.
    fn on_lead(&mut self) {}
    /// Whether `key` is resident and this policy counts it as a proven part
    /// of its working set: a block it has seen used again since the block
    /// came in, and means to keep (LIRS: a LIR block hit since it came in).
    /// The default policy asks it of a close runner-up before its leader
    /// evicts (`adaptive.rs`, "Hedging"). None, unless a policy says so.
    fn holds_proven(&self, _key: u64) -> bool {
        false
    }
    /// Starts loading what a normal touch of `key`, whose node is `slot`
    /// (its hint), will read: `stage` 0 the node itself, 1 its neighbours
    /// (once the node is in the CPU's cache). Only a hint to the CPU: it
    /// changes no state. By default, nothing.
    fn prefetch(&self, key: u64, slot: u32, stage: u8) {
        let _ = (key, slot, stage);
    }
    /// Chooses a victim among blocks for which `may_evict` is true, forgets
    /// it and returns it; `None` when no resident block may be evicted.
    fn evict(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64>;
    /// Chooses a victim to make room for a block read ahead (a guess that
    /// nobody has asked for yet), like [`Policy::evict`]; `None` when the
    /// policy would rather not give up a block for a guess, and the cache
    /// then skips the prefetch. By default, the same victim as `evict`.
    fn evict_for_prefetch(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.evict(may_evict)
    }
}

/// Which policy a cache (or a benchmark run) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyKind {
    /// Least recently used, as in the lecture.
    Lru,
    /// S3-FIFO (SOSP '23): scan-resistant, simple, weaker on loops.
    S3Fifo,
    /// Window TinyLFU with a window sized by mini-simulation: scan-resistant
    /// (see [`WTinyLfu`]).
    WTinyLfu,
    /// LIRS (SIGMETRICS '02): ranks blocks by reuse distance.
    Lirs,
    /// W-TinyLFU, LIRS and LRU over one resident set, led by whichever a
    /// mini-simulation shows ahead: the default, with the best hit ratios
    /// on the benchmark traces (see [`crate::adaptive`] and `docs/cache.md`).
    #[default]
    Adaptive,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Lru,
        PolicyKind::S3Fifo,
        PolicyKind::Lirs,
        PolicyKind::WTinyLfu,
        PolicyKind::Adaptive,
    ];

    /// A new, empty policy of this kind for `capacity` blocks.
    pub fn build(self, capacity: usize) -> Box<dyn Policy> {
        match self {
            PolicyKind::Lru => Box::new(Lru::new(capacity)),
            PolicyKind::S3Fifo => Box::new(S3Fifo::new(capacity)),
            PolicyKind::WTinyLfu => Box::new(WTinyLfu::new(capacity)),
            PolicyKind::Lirs => Box::new(crate::lirs::Lirs::new(capacity)),
            PolicyKind::Adaptive => Box::new(crate::adaptive::Adaptive::new(capacity)),
        }
    }
    /// Short name (`lru`, `s3fifo`, `wtinylfu`).
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::S3Fifo => "s3fifo",
            PolicyKind::WTinyLfu => "wtinylfu",
            PolicyKind::Lirs => "lirs",
            PolicyKind::Adaptive => "adaptive",
        }
    }
}

/// A fast hasher for block numbers (a multiply-xorshift mix; block numbers
/// are not attacker-chosen, so a keyed hash buys nothing).
#[derive(Default, Clone, Copy)]
pub struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(*byte as u64);
        }
    }
    fn write_u64(&mut self, value: u64) {
        let mut z = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 32;
        self.0 = z;
    }
}

/// A `HashMap` keyed by block number with [`BlockHasher`].
pub type BlockMap<V> = HashMap<u64, V, BuildHasherDefault<BlockHasher>>;

use crate::links::{prefetch, slab_insert, Ends, Link, Linked, NIL};

#[derive(Clone, Copy)]
struct Node {
    key: u64,
    link: Link,
    list: u8,
    /// Accesses since insertion (S3-FIFO), capped at 3.
    freq: u8,
}

impl Linked for Node {
    fn link(&mut self, _kind: usize) -> &mut Link {
        &mut self.link
    }
}

/// Doubly-linked lists of nodes in one slab, indexed by `u32`, with a map
/// from key to node. Head is the newest end, tail the eviction end.
struct Lists<const N: usize> {
    nodes: Vec<Node>,
    free: Vec<u32>,
    ends: [Ends; N],
    index: BlockMap<u32>,
}

impl<const N: usize> Lists<N> {
    fn new() -> Self {
        Lists {
            nodes: Vec::new(),
            free: Vec::new(),
            ends: [Ends::EMPTY; N],
            index: BlockMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// See [`Policy::prefetch`].
    fn prefetch(&self, slot: u32, stage: u8) {
        if stage == 0 {
            prefetch(&self.nodes, slot);
        } else if let Some(node) = self.nodes.get(slot as usize) {
            prefetch(&self.nodes, node.link.prev);
            prefetch(&self.nodes, node.link.next);
        }
    }

    fn get(&self, key: u64) -> Option<u32> {
        self.index.get(&key).copied()
    }

    /// The node of `key`: `*hint` if that node still holds `key` (one slab
    /// read instead of an index lookup), else the index's answer, which
    /// becomes the new hint.
    fn resolve(&self, key: u64, hint: &mut u32) -> Option<u32> {
        if let Some(node) = self.nodes.get(*hint as usize) {
            if node.key == key && node.list != FREE {
                return Some(*hint);
            }
        }
        let at = self.get(key)?;
        *hint = at;
        Some(at)
    }

    fn push_head(&mut self, key: u64, list: u8, freq: u8) -> u32 {
        let node = Node {
            key,
            link: Link::NONE,
            list,
            freq,
        };
        let at = slab_insert(&mut self.nodes, &mut self.free, node);
        let previous = self.index.insert(key, at);
        assert!(previous.is_none(), "block {key} inserted twice");
        self.link_head(at, list);
        at
    }

    fn link_head(&mut self, at: u32, list: u8) {
        self.nodes[at as usize].list = list;
        self.ends[list as usize].push_head(&mut self.nodes, at, 0);
    }

    fn unlink(&mut self, at: u32) {
        let list = self.nodes[at as usize].list;
        self.ends[list as usize].unlink(&mut self.nodes, at, 0);
    }

    /// Moves a node to the head of `list`.
    fn move_to_head(&mut self, at: u32, list: u8) {
        self.unlink(at);
        self.link_head(at, list);
    }

    fn remove(&mut self, at: u32) -> u64 {
        self.unlink(at);
        let key = self.nodes[at as usize].key;
        self.nodes[at as usize].list = FREE;
        self.index.remove(&key);
        self.free.push(at);
        key
    }

    fn tail(&self, list: u8) -> Option<u32> {
        self.ends[list as usize].tail()
    }

    /// Evicts the oldest evictable block of `list`, looking at each block
    /// of the list at most once.
    fn evict_tail(&mut self, list: u8, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        let mut budget = self.ends[list as usize].len;
        while budget > 0 {
            budget -= 1;
            let at = self.tail(list)?;
            let key = self.nodes[at as usize].key;
            if may_evict(key) {
                return Some(self.remove(at));
            }
            self.move_to_head(at, list);
        }
        None
    }

    /// The blocks every policy gives up before its own choice: used-once
    /// blocks, then prefetched blocks nobody has asked for beyond the
    /// `reserve` that read-ahead may legitimately have in flight (the
    /// newest prefetches are the ones a sequential reader needs next).
    fn evict_first(
        &mut self,
        prefetch_list: u8,
        reserve: usize,
        may_evict: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        if let Some(key) = self.evict_tail(COLD, may_evict) {
            return Some(key);
        }
        if self.ends[prefetch_list as usize].len > reserve {
            return self.evict_tail(prefetch_list, may_evict);
        }
        None
    }
}

/// Blocks read with the use-once hint: evicted before anything else.
const COLD: u8 = 0;
/// The `list` of a node on the free list: no list.
const FREE: u8 = u8::MAX;

const GUESS_PREFETCH: u8 = 1;

/// Used-once and prefetched-but-unused blocks kept apart from a policy's
/// own queues (the adaptive policy keeps them here, once, instead of in
/// each of its members).
pub(crate) struct Guesses {
    lists: Lists<2>,
}

impl Guesses {
    pub(crate) fn new() -> Guesses {
        Guesses {
            lists: Lists::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lists.len()
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.lists.get(key).is_some()
    }

    /// A new used-once or prefetched block.
    pub(crate) fn insert(&mut self, key: u64, access: Access) {
        let list = if access == Access::Prefetch {
            GUESS_PREFETCH
        } else {
            COLD
        };
        self.lists.push_head(key, list, 0);
    }

    /// An access to `key`: `None` when it is not a guess. Otherwise
    /// `Some(true)` when the block must now join the policy proper (it is
    /// no longer here), and `Some(false)` when it stays a guess:
    ///
    /// * the first use of a prefetched block, normal or use-once, leaves
    ///   it here as used once, to go first ("drop-behind": a block a
    ///   sequential stream read once is the scan the cache must not keep);
    /// * a normal use of a used-once block is its reuse: it joins.
    pub(crate) fn touch(&mut self, key: u64, access: Access) -> Option<bool> {
        let at = self.lists.get(key)?;
        let list = self.lists.nodes[at as usize].list;
        Some(match access {
            Access::Prefetch => false,
            _ if list == GUESS_PREFETCH => {
                self.lists.move_to_head(at, COLD);
                false
            }
            Access::UseOnce => false,
            Access::Normal => {
                self.lists.remove(at);
                true
            }
        })
    }

    /// Forgets `key`; true if it was here.
    pub(crate) fn take(&mut self, key: u64) -> bool {
        match self.lists.get(key) {
            Some(at) => {
                self.lists.remove(at);
                true
            }
            None => false,
        }
    }

    /// A used-once block, else a prefetched one beyond the read-ahead
    /// reserve of a cache of `capacity` blocks.
    pub(crate) fn evict_first(
        &mut self,
        capacity: usize,
        may_evict: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        self.lists
            .evict_first(GUESS_PREFETCH, prefetch_reserve(capacity), may_evict)
    }

    /// Any prefetched block (when nothing else may go).
    pub(crate) fn evict_any(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.lists.evict_tail(GUESS_PREFETCH, may_evict)
    }
}

/// Prefetched blocks may hold at most this share of the capacity before
/// the oldest of them are evicted first (the cache never reads ahead more
/// than a quarter of its capacity at once).
pub(crate) fn prefetch_reserve(capacity: usize) -> usize {
    capacity / 4
}

// ---------------------------------------------------------------------------
// LRU

const LRU_MAIN: u8 = 1;
const LRU_PREFETCH: u8 = 2;

/// Least recently used: one list, a hit moves the block to the head, the
/// victim is the tail. Used-once and stale prefetched blocks go first.
pub struct Lru {
    lists: Lists<3>,
    capacity: usize,
}

impl Lru {
    pub fn new(capacity: usize) -> Lru {
        Lru {
            lists: Lists::new(),
            capacity,
        }
    }

    /// Evicts the most recently used block that may leave, among the
    /// `look_at` most recently used.
    pub(crate) fn evict_newest(
        &mut self,
        look_at: usize,
        may_evict: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        let mut at = self.lists.ends[LRU_MAIN as usize].head;
        for _ in 0..look_at {
            if at == NIL {
                break;
            }
            let node = self.lists.nodes[at as usize];
            if may_evict(node.key) {
                return Some(self.lists.remove(at));
            }
            at = node.link.next;
        }
        None
    }

    fn touch_node(&mut self, at: u32, access: Access) {
        match access {
            Access::Normal => self.lists.move_to_head(at, LRU_MAIN),
            // A use-once hit leaves the block where it is: it must not
            // displace blocks that will be used again.
            Access::UseOnce => {
                if self.lists.nodes[at as usize].list == LRU_PREFETCH {
                    self.lists.move_to_head(at, COLD);
                }
            }
            Access::Prefetch => {}
        }
    }
}

impl Policy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }
    fn prefetch(&self, _key: u64, slot: u32, stage: u8) {
        self.lists.prefetch(slot, stage);
    }
    fn set_capacity(&mut self, blocks: usize) {
        self.capacity = blocks;
    }
    fn len(&self) -> usize {
        self.lists.len()
    }
    fn contains(&self, key: u64) -> bool {
        self.lists.get(key).is_some()
    }
    fn touch(&mut self, key: u64, access: Access) {
        if let Some(at) = self.lists.get(key) {
            self.touch_node(at, access);
        }
    }
    fn touch_hinted(&mut self, key: u64, access: Access, hint: &mut Hint) {
        if let Some(at) = self.lists.resolve(key, &mut hint.0[0]) {
            self.touch_node(at, access);
        }
    }
    fn insert(&mut self, key: u64, access: Access) {
        let list = match access {
            Access::Normal => LRU_MAIN,
            Access::UseOnce => COLD,
            Access::Prefetch => LRU_PREFETCH,
        };
        self.lists.push_head(key, list, 0);
    }
    fn remove(&mut self, key: u64) {
        if let Some(at) = self.lists.get(key) {
            self.lists.remove(at);
        }
    }
    fn evict(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        let reserve = prefetch_reserve(self.capacity);
        if let Some(key) = self.lists.evict_first(LRU_PREFETCH, reserve, may_evict) {
            return Some(key);
        }
        self.lists
            .evict_tail(LRU_MAIN, may_evict)
            .or_else(|| self.lists.evict_tail(LRU_PREFETCH, may_evict))
    }
}

// ---------------------------------------------------------------------------
// S3-FIFO

const SMALL: u8 = 1;
const MAIN: u8 = 2;
const S3_PREFETCH: u8 = 3;

/// S3-FIFO (see the module documentation), with a cold queue in front.
pub struct S3Fifo {
    lists: Lists<4>,
    capacity: usize,
    /// Ghost queue: keys recently evicted from the small queue, oldest first,
    /// each with the sequence number it was added under (a key re-added later
    /// leaves a stale entry behind, skipped when popped).
    ghost_queue: VecDeque<(u64, u64)>,
    ghost: BlockMap<u64>,
    ghost_sequence: u64,
}

/// Share of the capacity given to the small (probationary) queue.
const SMALL_PERCENT: usize = 10;
/// A block leaving the small queue moves to main if used at least this often
/// while there.
const PROMOTE_MIN_FREQ: u8 = 1;
const MAX_FREQ: u8 = 3;

impl S3Fifo {
    pub fn new(capacity: usize) -> S3Fifo {
        S3Fifo {
            lists: Lists::new(),
            capacity: capacity.max(1),
            ghost_queue: VecDeque::new(),
            ghost: BlockMap::default(),
            ghost_sequence: 0,
        }
    }

    fn small_target(&self) -> usize {
        (self.capacity * SMALL_PERCENT / 100).max(1)
    }

    fn ghost_capacity(&self) -> usize {
        self.capacity
    }

    fn ghost_add(&mut self, key: u64) {
        self.ghost_sequence += 1;
        self.ghost.insert(key, self.ghost_sequence);
        self.ghost_queue.push_back((key, self.ghost_sequence));
        while self.ghost.len() > self.ghost_capacity() {
            match self.ghost_queue.pop_front() {
                Some((old, sequence)) => {
                    if self.ghost.get(&old) == Some(&sequence) {
                        self.ghost.remove(&old);
                    }
                }
                None => break,
            }
        }
        // Stale entries can pile up when keys cycle through the ghost often.
        if self.ghost_queue.len() > 2 * self.ghost_capacity() + 16 {
            let ghost = &self.ghost;
            self.ghost_queue
                .retain(|(key, sequence)| ghost.get(key) == Some(sequence));
        }
    }

    /// Evicts from one queue. Returns `Ok(key)` on eviction, `Err(moved)`
    /// when the queue's tail moved on without an eviction.
    fn evict_small(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<Option<u64>> {
        let at = self.lists.tail(SMALL)?;
        let node = self.lists.nodes[at as usize];
        if node.freq >= PROMOTE_MIN_FREQ {
            self.lists.nodes[at as usize].freq = 0;
            self.lists.move_to_head(at, MAIN);
            return Some(None);
        }
        if !may_evict(node.key) {
            self.lists.move_to_head(at, MAIN);
            return Some(None);
        }
        let key = self.lists.remove(at);
        self.ghost_add(key);
        Some(Some(key))
    }

    fn evict_main(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<Option<u64>> {
        let at = self.lists.tail(MAIN)?;
        let node = self.lists.nodes[at as usize];
        if node.freq > 0 {
            self.lists.nodes[at as usize].freq = node.freq - 1;
            self.lists.move_to_head(at, MAIN);
            return Some(None);
        }
        if !may_evict(node.key) {
            self.lists.move_to_head(at, MAIN);
            return Some(None);
        }
        Some(Some(self.lists.remove(at)))
    }
}

impl Policy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }
    fn set_capacity(&mut self, blocks: usize) {
        self.capacity = blocks.max(1);
    }
    fn len(&self) -> usize {
        self.lists.len()
    }
    fn contains(&self, key: u64) -> bool {
        self.lists.get(key).is_some()
    }
    fn touch(&mut self, key: u64, access: Access) {
        let Some(at) = self.lists.get(key) else {
            return;
        };
        let node = &mut self.lists.nodes[at as usize];
        match access {
            Access::Normal => {
                if node.list == COLD || node.list == S3_PREFETCH {
                    // First real use of a prefetched or use-once block: it
                    // starts its life now, on probation.
                    self.lists.move_to_head(at, SMALL);
                } else if node.freq < MAX_FREQ {
                    node.freq += 1;
                }
            }
            Access::UseOnce => {
                if node.list == S3_PREFETCH {
                    self.lists.move_to_head(at, COLD);
                }
            }
            Access::Prefetch => {}
        }
    }
    fn insert(&mut self, key: u64, access: Access) {
        match access {
            Access::Normal => {
                if self.ghost.remove(&key).is_some() {
                    self.lists.push_head(key, MAIN, 0);
                } else {
                    self.lists.push_head(key, SMALL, 0);
                }
            }
            Access::UseOnce => {
                self.lists.push_head(key, COLD, 0);
            }
            Access::Prefetch => {
                self.lists.push_head(key, S3_PREFETCH, 0);
            }
        }
    }
    fn remove(&mut self, key: u64) {
        if let Some(at) = self.lists.get(key) {
            self.lists.remove(at);
        }
    }
    fn evict(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        let reserve = prefetch_reserve(self.capacity);
        if let Some(key) = self.lists.evict_first(S3_PREFETCH, reserve, may_evict) {
            return Some(key);
        }
        self.evict_queues(may_evict)
            .or_else(|| self.lists.evict_tail(S3_PREFETCH, may_evict))
    }
}

impl S3Fifo {
    fn evict_queues(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        // Every resident block can be looked at up to MAX_FREQ + 2 times
        // (count down, promotion, skip) before we give up.
        let mut budget = (self.lists.len() + 1) * (MAX_FREQ as usize + 3);
        while budget > 0 {
            budget -= 1;
            let small_len = self.lists.ends[SMALL as usize].len;
            let main_len = self.lists.ends[MAIN as usize].len;
            let from_small = small_len > 0 && (small_len >= self.small_target() || main_len == 0);
            let step = if from_small {
                self.evict_small(may_evict)
            } else {
                self.evict_main(may_evict)
            };
            match step {
                Some(Some(key)) => return Some(key),
                Some(None) => continue,
                None => return None,
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// W-TinyLFU

/// A count-min sketch of 4-bit counters: an approximate access frequency
/// for every block ever seen, in a few bytes per cached block. Every
/// `sample_size` increments all counters are halved, so the past fades.
struct FrequencySketch {
    /// 64-byte lines of four 16-counter rows: a block's four counters sit
    /// in one cache line (Caffeine's layout), one memory access per lookup.
    table: Vec<u8>,
    line_mask: u64,
    additions: usize,
    sample_size: usize,
}

/// Counters for each cached block: few collisions, so a block seen once
/// rarely looks popular.
const SKETCH_COUNTERS_PER_BLOCK: usize = 64;

/// Counters are halved after this many increments per cached block (10
/// in Caffeine and moka; a longer memory keeps loops stable).
const SKETCH_RESET_FACTOR: usize = 20;

/// The sketch is sized and aged as if the cache held at least this many
/// blocks. A cache of a dozen blocks would otherwise halve its counts every
/// few hundred accesses and forget which blocks matter (on the LIRS `cpp`
/// trace at 12 blocks: 0.120 without the floor, 0.143 with it).
const SKETCH_MIN_BLOCKS: usize = 64;

impl FrequencySketch {
    fn new(capacity: usize) -> Self {
        let sized_for = capacity.max(SKETCH_MIN_BLOCKS);
        let lines = (sized_for * SKETCH_COUNTERS_PER_BLOCK / 64).next_power_of_two();
        FrequencySketch {
            table: vec![0u8; lines * 64],
            line_mask: lines as u64 - 1,
            additions: 0,
            sample_size: Self::sample_size_for(capacity),
        }
    }

    /// Additions between two halvings of every count, for a cache of
    /// `capacity` blocks (never below [`SKETCH_MIN_BLOCKS`]'s).
    fn sample_size_for(capacity: usize) -> usize {
        SKETCH_RESET_FACTOR * capacity.max(SKETCH_MIN_BLOCKS)
    }

    /// The four counter positions of `key`.
    fn slots(&self, key: u64) -> [usize; 4] {
        let mut z = key.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 31;
        z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 29;
        let line = ((z & self.line_mask) as usize) * 64;
        let high = z >> 40;
        std::array::from_fn(|row| line + row * 16 + ((high >> (4 * row)) & 15) as usize)
    }

    fn frequency(&self, key: u64) -> u8 {
        self.slots(key)
            .iter()
            .map(|slot| self.table[*slot])
            .min()
            .unwrap_or(0)
    }

    fn increment(&mut self, key: u64) {
        let mut added = false;
        for slot in self.slots(key) {
            let counter = &mut self.table[slot];
            if *counter < 15 {
                *counter += 1;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.sample_size {
                for counter in self.table.iter_mut() {
                    *counter >>= 1;
                }
                self.additions /= 2;
            }
        }
    }
}

const WINDOW: u8 = 1;
const PROBATION: u8 = 2;
const PROTECTED: u8 = 3;
const W_PREFETCH: u8 = 4;

/// The queues of a W-TinyLFU cache with a given window size: an LRU
/// window, and a segmented-LRU main area (probation and protected) guarded
/// by the TinyLFU admission contest. Frequencies come from outside, so the
/// real cache and its shadow simulations share one sketch.
struct Segments {
    lists: Lists<5>,
    capacity: usize,
    window_target: usize,
}

impl Segments {
    fn new(capacity: usize, window_fraction: f64) -> Segments {
        let mut segments = Segments {
            lists: Lists::new(),
            capacity: capacity.max(1),
            window_target: 1,
        };
        segments.set_window(window_fraction);
        segments
    }

    /// The window's share, rounded. Below 50 blocks the 1% window is no
    /// window at all: a new block contests main's victim at its first
    /// eviction (TinyLFU as moka runs it). A floor of one block made it 8%
    /// of a 12-block cache, one frequent block fewer in main: `cpp` at 12
    /// blocks 0.1424 with the floor, 0.1497 without.
    fn set_window(&mut self, fraction: f64) {
        let target = (self.capacity as f64 * fraction).round() as usize;
        self.window_target = target.min(self.capacity);
    }

    fn main_target(&self) -> usize {
        self.capacity.saturating_sub(self.window_target)
    }

    fn protected_target(&self) -> usize {
        self.main_target() * 4 / 5
    }

    /// Re-deals the resident blocks by estimated frequency: the most
    /// frequent fill protected, the next probation, the least frequent the
    /// window, each list ordered most frequent at the head. On a tie the
    /// block resident longer ranks higher, as in the TinyLFU contest, where
    /// a newcomer must be strictly more frequent to displace a block (and
    /// what keeps a loop's blocks in place: newest first cost `lirs-loop` at
    /// 202 blocks 3.0 points). Used when this policy
    /// takes over evictions from another (`Policy::on_lead`): a follower's
    /// segments hold whatever the leader kept — frequent blocks the leader
    /// had evicted come back through the window and sit there while they
    /// are hit, and protected keeps blocks the leader favoured — and
    /// W-TinyLFU's own mechanisms undo that only slowly.
    fn rebuild_by_frequency(&mut self, sketch: &FrequencySketch) {
        let mut by_frequency: [Vec<u32>; 16] = Default::default();
        // Oldest first: the window's blocks, then probation's, then
        // protected's, each from its tail.
        for list in [WINDOW, PROBATION, PROTECTED] {
            let mut at = self.lists.ends[list as usize].tail;
            while at != NIL {
                let node = self.lists.nodes[at as usize];
                by_frequency[sketch.frequency(node.key).min(15) as usize].push(at);
                at = node.link.prev;
            }
        }
        let protected = self.protected_target();
        let main = self.main_target();
        let ranked: Vec<u32> = by_frequency.iter().rev().flatten().copied().collect();
        // From the least frequent up, so each list ends most frequent first.
        for (rank, &at) in ranked.iter().enumerate().rev() {
            let list = if rank < protected {
                PROTECTED
            } else if rank < main {
                PROBATION
            } else {
                WINDOW
            };
            self.lists.move_to_head(at, list);
        }
    }

    fn main_len(&self) -> usize {
        self.lists.ends[PROBATION as usize].len + self.lists.ends[PROTECTED as usize].len
    }

    /// A victim to make room for a prefetched block, which has no
    /// frequency of its own yet: used-once and stale prefetched blocks
    /// first, then the oldest window or probation block that looks like
    /// part of a scan: not used again since it entered the cache, and
    /// estimated by the sketch at most [`PREFETCH_DISPLACES_FREQ`]. Never a
    /// protected block, nor one used again or seen more often: a guess must
    /// not cost the working set. `None` when there is no such block.
    fn evict_for_prefetch(
        &mut self,
        sketch: &FrequencySketch,
        may_evict: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        let reserve = prefetch_reserve(self.capacity);
        if let Some(key) = self.lists.evict_first(W_PREFETCH, reserve, may_evict) {
            return Some(key);
        }
        // The window's overflow first (its oldest blocks are the next
        // candidates anyway), then probation, then what the window keeps.
        let window_over = self.lists.ends[WINDOW as usize].len > self.window_target;
        let order: [u8; 2] = if window_over || self.main_len() == 0 {
            [WINDOW, PROBATION]
        } else {
            [PROBATION, WINDOW]
        };
        for list in order {
            let mut at = self.lists.ends[list as usize].tail;
            let mut looked = 0;
            while at != NIL && looked < PREFETCH_VICTIM_SEARCH {
                looked += 1;
                let Node {
                    key,
                    link: Link { prev, .. },
                    freq: reused,
                    ..
                } = self.lists.nodes[at as usize];
                if reused == 0 && sketch.frequency(key) <= PREFETCH_DISPLACES_FREQ && may_evict(key)
                {
                    return Some(self.lists.remove(at));
                }
                at = prev;
            }
        }
        None
    }

    /// A real (normal) access to a resident block.
    fn hit(&mut self, at: u32) {
        // Marks the block as used again since it entered the cache (the
        // node's `freq` field, otherwise unused here): read-ahead may not
        // take its room.
        self.lists.nodes[at as usize].freq = 1;
        match self.lists.nodes[at as usize].list {
            COLD | WINDOW | W_PREFETCH => self.lists.move_to_head(at, WINDOW),
            PROBATION => {
                self.lists.move_to_head(at, PROTECTED);
                while self.lists.ends[PROTECTED as usize].len > self.protected_target() {
                    let Some(tail) = self.lists.tail(PROTECTED) else {
                        break;
                    };
                    self.lists.move_to_head(tail, PROBATION);
                }
            }
            _ => self.lists.move_to_head(at, PROTECTED),
        }
    }

    /// A new block enters the window; while main has room, the window's
    /// overflow moves on to probation at once (as in Caffeine), so blocks
    /// used again before the cache first fills reach the protected segment.
    fn admit_new(&mut self, key: u64) {
        self.lists.push_head(key, WINDOW, 0);
        while self.lists.ends[WINDOW as usize].len > self.window_target
            && self.main_len() < self.main_target()
        {
            let Some(tail) = self.lists.tail(WINDOW) else {
                break;
            };
            self.lists.move_to_head(tail, PROBATION);
        }
    }

    /// The main-area victim: probation's tail, else protected's.
    fn main_victim(&self) -> Option<u32> {
        self.lists
            .tail(PROBATION)
            .or_else(|| self.lists.tail(PROTECTED))
    }

    fn evict(
        &mut self,
        sketch: &FrequencySketch,
        may_evict: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        let reserve = prefetch_reserve(self.capacity);
        if let Some(key) = self.lists.evict_first(W_PREFETCH, reserve, may_evict) {
            return Some(key);
        }
        self.evict_segments(sketch, may_evict)
            .or_else(|| self.lists.evict_tail(W_PREFETCH, may_evict))
    }

    fn evict_segments(
        &mut self,
        sketch: &FrequencySketch,
        may_evict: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        let mut budget = 3 * (self.lists.len() + 1);
        let mut skipped_candidates = 0;
        while budget > 0 {
            budget -= 1;
            let window_len = self.lists.ends[WINDOW as usize].len;
            let window_over = window_len > self.window_target;
            let main_over = self.main_len() > self.main_target();
            // Neither area over its share happens when blocks outside both
            // (prefetched, used-once) fill the cache: then the window's
            // oldest block contests main's victim as usual, rather than
            // main giving up a block unopposed.
            // Once every window block turned out to be in use, main must
            // give up a block after all.
            let window_usable = skipped_candidates < window_len;
            if window_usable && (window_over || !main_over || self.main_len() == 0) {
                let candidate = self.lists.tail(WINDOW)?;
                let candidate_key = self.lists.nodes[candidate as usize].key;
                let Some(victim) = self.main_victim() else {
                    if window_over && self.main_target() > 0 {
                        self.lists.move_to_head(candidate, PROBATION);
                        continue;
                    }
                    // Everything is in the window: plain LRU.
                    if may_evict(candidate_key) {
                        return Some(self.lists.remove(candidate));
                    }
                    self.lists.move_to_head(candidate, WINDOW);
                    continue;
                };
                if window_over && self.main_len() < self.main_target() {
                    // Main has room: the candidate moves in without a contest.
                    self.lists.move_to_head(candidate, PROBATION);
                    continue;
                }
                let victim_key = self.lists.nodes[victim as usize].key;
                // The TinyLFU contest: the candidate gets in only if it has
                // been seen more often than the block it would replace.
                let admit = sketch.frequency(candidate_key) > sketch.frequency(victim_key);
                let (loser, loser_key, winner) = if admit {
                    (victim, victim_key, candidate)
                } else {
                    (candidate, candidate_key, victim)
                };
                if may_evict(loser_key) {
                    if admit {
                        self.lists.move_to_head(winner, PROBATION);
                    }
                    return Some(self.lists.remove(loser));
                }
                // The loser is in use (pinned, loading): it survives this
                // round. A candidate stays in the window and the next one is
                // tried, so that main does not give up a block unopposed
                // while an idle window block could go instead.
                if admit {
                    self.lists.move_to_head(loser, PROBATION);
                } else {
                    self.lists.move_to_head(loser, WINDOW);
                    skipped_candidates += 1;
                }
                continue;
            }
            // The window fits and main is over its share (the window shrank,
            // or blocks were pinned), or the window is empty: evict from main.
            let victim = self.main_victim()?;
            let key = self.lists.nodes[victim as usize].key;
            if may_evict(key) {
                return Some(self.lists.remove(victim));
            }
            self.lists.move_to_head(victim, PROBATION);
        }
        None
    }
}

/// A prefetched block may displace a window or probation block not used
/// again since it entered the cache and estimated at most this often by
/// the sketch (a block of the same scan), never a more frequent one. The
/// sketch alone cannot tell a block seen once: on a long scan through a
/// small shard, admission lets in whichever scan block collisions made
/// look more frequent than the victim, probation fills with blocks
/// estimated at 3–5, and with a bound of 1, read-ahead found no room
/// halfway through (`read_ahead_fits_a_small_cache`: 20 564 device reads
/// for 32 768 blocks). The "not used again" mark is what tells; the bound
/// keeps a frequent block that was evicted and came back out of reach.
const PREFETCH_DISPLACES_FREQ: u8 = 7;
/// How many blocks from the old end of the window and of probation a
/// prefetch looks at for a victim.
const PREFETCH_VICTIM_SEARCH: usize = 16;

/// Window sizes the shadow simulations try, as fractions of the capacity:
/// from frequency-biased (1%, moka's and Caffeine's starting point) to pure
/// LRU (100%: no main area at all).
const SHADOW_WINDOWS: [f64; 5] = [0.01, 0.1, 0.3, 0.6, 1.0];
/// The shadows simulate at most this many blocks each; larger caches are
/// simulated on a spatial sample of the blocks (SHARDS, Waldspurger et al.,
/// FAST '15), scaled down.
const SHADOW_BLOCKS: usize = 128;

/// The shadows compare hit counts every this many sampled accesses per
/// simulated block.
const SHADOW_PERIOD_FACTOR: usize = 2;
/// Weight of the past in the shadows' hit counts, per period. Long memory:
/// workloads that alternate phases (zigzag) must not drag the window to
/// whichever phase came last.
const SHADOW_DECAY: f64 = 0.9;

/// One shadow simulation: the same algorithm with another window size, on
/// a sample of the accesses, counting its hits.
struct Shadow {
    fraction: f64,
    segments: Segments,
    hits: f64,
}

/// Window TinyLFU (Einziger, Friedman and Manes, "TinyLFU: a highly
/// efficient cache admission policy", TOS 2017), with the window sized by
/// mini-simulation (Einziger et al., "Adaptive software cache management",
/// Middleware '18):
///
/// ```text
///  miss ─► window (LRU) ─tail─► candidate ─┐
///                                          ├─ TinyLFU: the more frequent one stays
///  main: probation (SLRU) ─tail─► victim ──┘
///        │ hit
///        ▼
///        protected (80% of main) ─overflow─► back to probation
/// ```
///
/// Frequencies come from a count-min sketch that remembers blocks long
/// after they left, so a block seen often beats a block seen once: a scan
/// (every block seen once) cannot displace the working set, and a loop
/// larger than the cache keeps a fixed part of it instead of thrashing.
///
/// The window decides how much recency counts. No one size suits every
/// workload (LRU-friendly traces want a big window; loops and skewed
/// popularity a small one), so five shadow caches with windows from 1% to
/// 100% replay a sample of the same accesses, and every period the real
/// cache takes the window of the shadow that hit most.
pub struct WTinyLfu {
    segments: Segments,
    sketch: FrequencySketch,
    shadows: Vec<Shadow>,
    /// A block is simulated by the shadows when its hash is below this
    /// (out of 2^32).
    sample_threshold: u64,
    sampled_accesses: usize,
    period: usize,
    current: usize,
}

impl WTinyLfu {
    fn touch_node(&mut self, key: u64, at: u32, access: Access) {
        let prefetched = self.segments.lists.nodes[at as usize].list == W_PREFETCH;
        if access != Access::Normal {
            if access == Access::UseOnce && prefetched {
                self.segments.lists.move_to_head(at, COLD);
            }
            return;
        }
        if prefetched {
            // The first real use of a block read ahead is its first access:
            // it enters as a miss would have (window, one count).
            self.segments.lists.remove(at);
            self.insert(key, Access::Normal);
            return;
        }
        self.sketch.increment(key);
        self.segments.hit(at);
        self.simulate(key);
    }

    pub fn new(capacity: usize) -> WTinyLfu {
        let capacity = capacity.max(1);
        let mut policy = WTinyLfu {
            segments: Segments::new(capacity, SHADOW_WINDOWS[0]),
            sketch: FrequencySketch::new(capacity),
            shadows: Vec::new(),
            sample_threshold: 0,
            sampled_accesses: 0,
            period: 0,
            current: 0,
        };
        policy.build_shadows();
        policy
    }

    fn build_shadows(&mut self) {
        let capacity = self.segments.capacity;
        let shadow_capacity = capacity.min(SHADOW_BLOCKS);
        self.sample_threshold = ((shadow_capacity as u128) << 32).div_ceil(capacity as u128) as u64;
        self.shadows = SHADOW_WINDOWS
            .iter()
            .map(|&fraction| Shadow {
                fraction,
                segments: Segments::new(shadow_capacity, fraction),
                hits: 0.0,
            })
            .collect();
        self.period = SHADOW_PERIOD_FACTOR * shadow_capacity.max(64);
        self.sampled_accesses = 0;
    }

    fn sampled(&self, key: u64) -> bool {
        let mut z = key.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        z ^= z >> 32;
        (z & 0xFFFF_FFFF) < self.sample_threshold
    }

    /// Replays a normal access in every shadow; every period, adopts the
    /// window of the best shadow.
    fn simulate(&mut self, key: u64) {
        if !self.sampled(key) {
            return;
        }
        let sketch = &self.sketch;
        for shadow in self.shadows.iter_mut() {
            let segments = &mut shadow.segments;
            if let Some(at) = segments.lists.get(key) {
                shadow.hits += 1.0;
                segments.hit(at);
            } else {
                segments.admit_new(key);
                while segments.lists.len() > segments.capacity {
                    if segments.evict(sketch, &mut |_| true).is_none() {
                        break;
                    }
                }
            }
        }
        self.sampled_accesses += 1;
        if self.sampled_accesses >= self.period {
            self.sampled_accesses = 0;
            let mut best = self.current;
            for (index, shadow) in self.shadows.iter().enumerate() {
                // The shadow with the most (decayed) hits wins; a margin of
                // one hit keeps exact ties from moving the window.
                if shadow.hits > self.shadows[best].hits + 1.0 {
                    best = index;
                }
            }
            if best != self.current {
                self.current = best;
                self.segments.set_window(self.shadows[best].fraction);
            }
            // Older periods fade: each counts 0.9 of the one after it.
            for shadow in self.shadows.iter_mut() {
                shadow.hits *= SHADOW_DECAY;
            }
        }
    }

    /// The window size currently in force, as a fraction of the capacity.
    pub fn window_fraction(&self) -> f64 {
        self.shadows[self.current].fraction
    }
}

impl Policy for WTinyLfu {
    fn name(&self) -> &'static str {
        "wtinylfu"
    }
    fn on_lead(&mut self) {
        self.segments.rebuild_by_frequency(&self.sketch);
    }
    fn prefetch(&self, key: u64, slot: u32, stage: u8) {
        self.segments.lists.prefetch(slot, stage);
        if stage == 0 {
            let line = self.sketch.slots(key)[0] as u32;
            prefetch(&self.sketch.table, line);
        }
    }
    fn set_capacity(&mut self, blocks: usize) {
        let blocks = blocks.max(1);
        if blocks == self.segments.capacity {
            return;
        }
        if blocks > self.segments.capacity * 2 || blocks * 2 < self.segments.capacity {
            self.sketch = FrequencySketch::new(blocks);
        } else {
            // The same period a new sketch for this size would have.
            self.sketch.sample_size = FrequencySketch::sample_size_for(blocks);
        }
        self.segments.capacity = blocks;
        let fraction = self.shadows[self.current].fraction;
        self.segments.set_window(fraction);
        self.build_shadows();
        self.current = SHADOW_WINDOWS
            .iter()
            .position(|f| *f == fraction)
            .unwrap_or(0);
    }
    fn len(&self) -> usize {
        self.segments.lists.len()
    }
    fn contains(&self, key: u64) -> bool {
        self.segments.lists.get(key).is_some()
    }
    fn touch(&mut self, key: u64, access: Access) {
        if let Some(at) = self.segments.lists.get(key) {
            self.touch_node(key, at, access);
        }
    }
    fn touch_hinted(&mut self, key: u64, access: Access, hint: &mut Hint) {
        if let Some(at) = self.segments.lists.resolve(key, &mut hint.0[0]) {
            self.touch_node(key, at, access);
        }
    }
    fn insert(&mut self, key: u64, access: Access) {
        match access {
            Access::Normal => {
                self.sketch.increment(key);
                self.segments.admit_new(key);
                self.simulate(key);
            }
            Access::UseOnce => {
                self.segments.lists.push_head(key, COLD, 0);
            }
            Access::Prefetch => {
                self.segments.lists.push_head(key, W_PREFETCH, 0);
            }
        }
    }
    fn remove(&mut self, key: u64) {
        if let Some(at) = self.segments.lists.get(key) {
            self.segments.lists.remove(at);
        }
    }
    fn evict(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.segments.evict(&self.sketch, may_evict)
    }
    fn evict_for_prefetch(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.segments.evict_for_prefetch(&self.sketch, may_evict)
    }
}

// ---------------------------------------------------------------------------
// ARC, as a reference for the benchmark

const ARC_T1: u8 = 0;
const ARC_T2: u8 = 1;
const ARC_B1: u8 = 2;
const ARC_B2: u8 = 3;

/// ARC (Megiddo and Modha, "ARC: a self-tuning, low overhead replacement
/// cache", FAST '03), written from the paper's pseudocode as a reference
/// point for the trace benchmark. The cache does not use it (it is not
/// scan-resistant under repeated scans, and IBM held a patent on it).
pub struct ArcReference {
    lists: Lists<4>,
    capacity: usize,
    /// Target size of T1 (recency side).
    p: f64,
}

impl ArcReference {
    pub fn new(capacity: usize) -> ArcReference {
        ArcReference {
            lists: Lists::new(),
            capacity: capacity.max(1),
            p: 0.0,
        }
    }

    fn len_of(&self, list: u8) -> usize {
        self.lists.ends[list as usize].len
    }

    fn replace(&mut self, in_b2: bool) {
        let t1 = self.len_of(ARC_T1);
        if t1 >= 1 && ((in_b2 && t1 as f64 == self.p.floor()) || t1 as f64 > self.p) {
            if let Some(at) = self.lists.tail(ARC_T1) {
                self.lists.move_to_head(at, ARC_B1);
            }
        } else if let Some(at) = self.lists.tail(ARC_T2) {
            self.lists.move_to_head(at, ARC_B2);
        } else if let Some(at) = self.lists.tail(ARC_T1) {
            self.lists.move_to_head(at, ARC_B1);
        }
    }

    /// One access; true on a hit.
    pub fn access(&mut self, key: u64) -> bool {
        let c = self.capacity;
        if let Some(at) = self.lists.get(key) {
            match self.lists.nodes[at as usize].list {
                ARC_T1 | ARC_T2 => {
                    self.lists.move_to_head(at, ARC_T2);
                    return true;
                }
                ARC_B1 => {
                    let delta = (self.len_of(ARC_B2) as f64 / self.len_of(ARC_B1) as f64).max(1.0);
                    self.p = (self.p + delta).min(c as f64);
                    self.replace(false);
                    self.lists.move_to_head(at, ARC_T2);
                    return false;
                }
                _ => {
                    let delta = (self.len_of(ARC_B1) as f64 / self.len_of(ARC_B2) as f64).max(1.0);
                    self.p = (self.p - delta).max(0.0);
                    self.replace(true);
                    self.lists.move_to_head(at, ARC_T2);
                    return false;
                }
            }
        }
        let l1 = self.len_of(ARC_T1) + self.len_of(ARC_B1);
        let total = l1 + self.len_of(ARC_T2) + self.len_of(ARC_B2);
        if l1 >= c {
            if self.len_of(ARC_T1) < c {
                if let Some(at) = self.lists.tail(ARC_B1) {
                    self.lists.remove(at);
                }
                self.replace(false);
            } else if let Some(at) = self.lists.tail(ARC_T1) {
                self.lists.remove(at);
            }
        } else if total >= c {
            if total >= 2 * c {
                if let Some(at) = self.lists.tail(ARC_B2) {
                    self.lists.remove(at);
                }
            }
            self.replace(false);
        }
        self.lists.push_head(key, ARC_T1, 0);
        false
    }
}

/// Runs a trace through a policy with no pinning and returns the hits
/// (for the policies' unit tests).
#[cfg(test)]
pub(crate) fn simulate(policy: &mut dyn Policy, capacity: usize, trace: &[u64]) -> usize {
    let mut hits = 0;
    for &key in trace {
        if policy.contains(key) {
            hits += 1;
            policy.touch(key, Access::Normal);
        } else {
            policy.insert(key, Access::Normal);
            while policy.len() > capacity {
                policy.evict(&mut |_| true).expect("a victim");
            }
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut lru = Lru::new(3);
        simulate(&mut lru, 3, &[1, 2, 3, 1, 4]);
        assert!(lru.contains(1) && !lru.contains(2) && lru.contains(3) && lru.contains(4));
    }

    /// 1% of 12 blocks is no window: a newcomer seen once contests main's
    /// victim at once and loses. (A one-block window kept it and sent an
    /// older, frequent block into the contest instead.)
    #[test]
    fn a_tiny_cache_has_no_window_at_one_percent() {
        let mut policy = WTinyLfu::new(12);
        let working_set: Vec<u64> = (0..12).cycle().take(60).collect();
        simulate(&mut policy, 12, &working_set);
        assert_eq!(policy.window_fraction(), 0.01);
        policy.insert(100, Access::Normal);
        assert_eq!(policy.evict(&mut |_| true), Some(100));
        assert!((0..12).all(|key| policy.contains(key)));
    }

    #[test]
    fn a_resized_sketch_ages_like_a_new_one() {
        // A small resize keeps the counts but must take the new size's
        // aging period, floor included.
        for (from, to) in [(20, 12), (12, 20), (100, 150), (150, 100)] {
            let mut resized = WTinyLfu::new(from);
            resized.set_capacity(to);
            assert_eq!(
                resized.sketch.sample_size,
                WTinyLfu::new(to).sketch.sample_size,
                "{from} -> {to} blocks"
            );
        }
    }

    #[test]
    fn pinned_blocks_are_skipped_and_all_pinned_gives_none() {
        for kind in PolicyKind::ALL {
            let mut policy = kind.build(4);
            for key in 0..4 {
                policy.insert(key, Access::Normal);
            }
            let victim = policy.evict(&mut |key| key == 2);
            assert_eq!(victim, Some(2), "{}", kind.name());
            assert_eq!(policy.evict(&mut |_| false), None, "{}", kind.name());
            assert_eq!(policy.len(), 3);
        }
    }

    #[test]
    fn s3fifo_keeps_hot_set_through_a_scan() {
        let capacity = 100;
        let mut trace = Vec::new();
        for _round in 0..20 {
            trace.extend(0..50u64);
        }
        // A scan of ten times the cache, each block once.
        trace.extend(1_000..1_000 + 10 * capacity as u64);
        let mut s3 = S3Fifo::new(capacity);
        simulate(&mut s3, capacity, &trace);
        let kept = (0..50).filter(|key| s3.contains(*key)).count();
        assert!(kept >= 45, "S3-FIFO kept only {kept} of 50 hot blocks");
        let mut lru = Lru::new(capacity);
        simulate(&mut lru, capacity, &trace);
        let kept = (0..50).filter(|key| lru.contains(*key)).count();
        assert_eq!(kept, 0, "LRU should lose the hot set to a scan");
    }

    #[test]
    fn used_once_then_stale_prefetches_go_first() {
        for kind in PolicyKind::ALL {
            // Capacity 8: read-ahead may keep 2 unused prefetched blocks.
            let mut policy = kind.build(8);
            policy.insert(1, Access::Normal);
            policy.insert(2, Access::Prefetch);
            policy.insert(3, Access::Prefetch);
            policy.insert(4, Access::Prefetch);
            policy.insert(5, Access::Normal);
            policy.insert(6, Access::UseOnce);
            let name = kind.name();
            assert_eq!(
                policy.evict(&mut |_| true),
                Some(6),
                "{name}: used-once first"
            );
            assert_eq!(
                policy.evict(&mut |_| true),
                Some(2),
                "{name}: oldest prefetch beyond the reserve"
            );
            let third = policy.evict(&mut |_| true);
            assert!(
                matches!(third, Some(1) | Some(5)),
                "{name}: the newest prefetches are kept, got {third:?}"
            );
            // A prefetched block that gets used is an ordinary block (the
            // default's after a second use: its first leaves it used once,
            // see `adaptive.rs`, "Drop-behind"); a use-once hit on one
            // makes it go first.
            policy.touch(3, Access::Normal);
            if kind == PolicyKind::Adaptive {
                policy.touch(3, Access::Normal);
            }
            policy.touch(4, Access::UseOnce);
            assert_eq!(policy.evict(&mut |_| true), Some(4), "{name}");
        }
    }

    #[test]
    fn taking_the_lead_re_deals_segments_by_frequency() {
        // A W-TinyLFU whose segments another policy's evictions shaped
        // (blocks removed from outside, as a follower's are), then asked
        // to lead: afterwards protected holds the most frequent blocks,
        // then probation, then the window.
        // A fixed seed; the failure messages name it.
        const SEED: u64 = 11;
        let mut rng = keel_disk::SimRng::new(SEED);
        let mut w = WTinyLfu::new(200);
        let mut resident = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let key = if rng.below(2) == 0 {
                rng.below(50)
            } else {
                rng.below(2_000)
            };
            if resident.contains(&key) {
                w.touch(key, Access::Normal);
            } else {
                w.insert(key, Access::Normal);
                resident.insert(key);
                while resident.len() > 200 {
                    // The "leader": evicts a resident block at random.
                    let victim = *resident
                        .iter()
                        .nth(rng.below(resident.len() as u64) as usize)
                        .unwrap();
                    resident.remove(&victim);
                    w.evicted_elsewhere(victim);
                }
            }
        }
        let frequencies = |w: &WTinyLfu, list: u8| -> Vec<u8> {
            let mut out = Vec::new();
            let mut at = w.segments.lists.ends[list as usize].head;
            while at != NIL {
                out.push(w.sketch.frequency(w.segments.lists.nodes[at as usize].key));
                at = w.segments.lists.nodes[at as usize].link.next;
            }
            out
        };
        let ordered = |w: &WTinyLfu| {
            let lowest = |v: &Vec<u8>| v.iter().copied().min().unwrap_or(u8::MAX);
            let highest = |v: &Vec<u8>| v.iter().copied().max().unwrap_or(0);
            let (window, probation, protected) = (
                frequencies(w, WINDOW),
                frequencies(w, PROBATION),
                frequencies(w, PROTECTED),
            );
            lowest(&protected) >= highest(&probation) && lowest(&probation) >= highest(&window)
        };
        assert!(
            !ordered(&w),
            "seed {SEED}: the follower's segments are not by frequency"
        );
        w.on_lead();
        assert!(
            ordered(&w),
            "seed {SEED}: segments by frequency after on_lead"
        );
        assert_eq!(w.len(), 200);
        assert_eq!(
            w.segments.lists.ends[PROTECTED as usize].len,
            w.segments.protected_target()
        );
        let protected = frequencies(&w, PROTECTED);
        assert!(
            protected.windows(2).all(|pair| pair[0] >= pair[1]),
            "most frequent at the head: {protected:?}"
        );
    }

    /// A hint may only save a lookup: a policy driven with hints must make
    /// exactly the choices of its twin driven without. The hints here go
    /// stale in every way a cache's can and more: kept across a block's
    /// eviction and return (pointing at a freed node, or at a node reused
    /// for another block), handed to the wrong block, or garbage.
    #[test]
    fn hints_never_change_a_policys_choices() {
        const SEED: u64 = 29;
        println!("seed {SEED} (shown with a failure)");
        let mut rng = keel_disk::SimRng::new(SEED);
        for kind in PolicyKind::ALL {
            let mut plain = kind.build(48);
            let mut hinted = kind.build(48);
            // Never cleared: a block's old hint outlives its eviction.
            let mut hints: HashMap<u64, Hint> = HashMap::new();
            for step in 0..40_000 {
                let key = rng.below(160);
                let access = match rng.below(20) {
                    0 => Access::UseOnce,
                    1 => Access::Prefetch,
                    _ => Access::Normal,
                };
                match rng.below(50) {
                    0 => {
                        plain.remove(key);
                        hinted.remove(key);
                    }
                    1 => {
                        let blocks = 1 + rng.below(96) as usize;
                        plain.set_capacity(blocks);
                        hinted.set_capacity(blocks);
                    }
                    _ => {
                        assert_eq!(
                            plain.contains(key),
                            hinted.contains(key),
                            "{kind:?} step {step}"
                        );
                        if plain.contains(key) {
                            plain.touch(key, access);
                            let mut hint = match rng.below(10) {
                                // Another block's hint.
                                0 => hints.get(&rng.below(160)).copied().unwrap_or(Hint::NONE),
                                // Garbage, in range or not.
                                1 => Hint([
                                    rng.below(300) as u32,
                                    rng.below(300) as u32,
                                    u32::MAX - 1,
                                ]),
                                _ => hints.get(&key).copied().unwrap_or(Hint::NONE),
                            };
                            hinted.touch_hinted(key, access, &mut hint);
                            hints.insert(key, hint);
                        } else {
                            plain.insert(key, access);
                            hinted.insert(key, access);
                        }
                        while plain.len() > 48 {
                            let pinned = rng.below(160);
                            let victim = plain.evict(&mut |k| k != pinned);
                            assert_eq!(
                                victim,
                                hinted.evict(&mut |k| k != pinned),
                                "{kind:?} step {step}"
                            );
                            if victim.is_none() {
                                break;
                            }
                        }
                    }
                }
                assert_eq!(plain.len(), hinted.len(), "{kind:?} step {step}");
            }
        }
    }

    #[test]
    fn lists_stay_consistent_under_random_operations() {
        let mut rng = keel_disk::SimRng::new(7);
        for kind in PolicyKind::ALL {
            let mut policy = kind.build(64);
            let mut resident = std::collections::BTreeSet::new();
            for _ in 0..20_000 {
                let key = rng.below(200);
                match rng.below(10) {
                    0 => {
                        policy.remove(key);
                        resident.remove(&key);
                    }
                    1 => policy.set_capacity(1 + rng.below(128) as usize),
                    _ => {
                        if policy.contains(key) {
                            policy.touch(key, Access::Normal);
                        } else {
                            let access = [Access::Normal, Access::UseOnce, Access::Prefetch]
                                [rng.below(3) as usize];
                            policy.insert(key, access);
                            resident.insert(key);
                        }
                        while policy.len() > 64 {
                            let pinned = rng.below(200);
                            let victim = policy.evict(&mut |k| k != pinned).expect("victim");
                            assert_ne!(victim, pinned);
                            assert!(resident.remove(&victim), "evicted non-resident {victim}");
                        }
                    }
                }
                assert_eq!(policy.len(), resident.len());
            }
            for key in &resident {
                assert!(policy.contains(*key));
            }
        }
    }
}
