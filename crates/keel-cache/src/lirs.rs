//! LIRS: Low Inter-reference Recency Set (Jiang and Zhang, "LIRS: an
//! efficient low inter-reference recency set replacement policy to improve
//! buffer cache performance", SIGMETRICS '02).
//!
//! LRU ranks a block by how recently it was used. LIRS ranks it by its
//! *reuse distance* (inter-reference recency, IRR): how many other blocks
//! were used between its last two uses. Blocks with a short reuse distance
//! are the LIR set and own almost all of the cache; the rest (HIR) share a
//! small slice, 1% here, and are what gets evicted:
//!
//! ```text
//!  stack S (recency order, top = newest): LIR blocks, resident HIR blocks,
//!          and non-resident HIR blocks remembered for their recency
//!  queue Q: resident HIR blocks, oldest evicted first
//!
//!  hit on LIR             ─► to the top of S
//!  hit on HIR still in S  ─► becomes LIR (its reuse distance beat the
//!                            oldest LIR block's); that block, at the
//!                            bottom of S, becomes HIR and joins Q
//!  hit on HIR not in S    ─► top of S, back of Q: stays HIR
//!  miss                   ─► as a hit on HIR, but the block is new (or
//!                            known from S, non-resident)
//! ```
//!
//! The bottom of S is always a LIR block ("stack pruning" removes HIR
//! entries below the oldest LIR block), so "in S" means "used more recently
//! than the oldest LIR block". A block seen once stays HIR: a scan passes
//! through the 1% slice and never touches the LIR set, a loop larger than
//! the cache keeps a fixed LIR part of itself, and an LRU-friendly workload
//! promotes its reused blocks quickly.
//!
//! Non-resident HIR entries cost memory (a node each); at most
//! [`NON_RESIDENT_FACTOR`] times the capacity are kept, the oldest dropped
//! first.
//!
//! Like every policy, LIRS keeps used-once and prefetched blocks apart and
//! gives them up first ([`crate::policy`]).

use crate::links::{prefetch, slab_insert, Ends, Link, Linked, NIL};
use crate::policy::{prefetch_reserve, Access, BlockMap, Hint, Policy};

/// Status of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Lir,
    /// Resident HIR: in Q.
    HirResident,
    /// Remembered for its recency only: in S and in the non-resident list.
    HirGone,
    /// Read with the use-once hint, not yet used otherwise.
    UseOnce,
    /// Read ahead, not yet used.
    Prefetched,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    key: u64,
    /// Links in the stack S (when `in_s`).
    s: Link,
    /// Links in the node's queue: Q for resident HIR blocks, the
    /// non-resident list for gone ones, the use-once or prefetch list.
    q: Link,
    status: Status,
    in_s: bool,
    /// Used again since it last entered the cache (read-ahead never takes
    /// the room of such a block).
    reused: bool,
}

/// The kinds of list a node is on (its [`Link`]s).
const IN_S: usize = 0;
const IN_QUEUE: usize = 1;

impl Linked for Node {
    fn link(&mut self, kind: usize) -> &mut Link {
        if kind == IN_S {
            &mut self.s
        } else {
            &mut self.q
        }
    }
}

/// Non-resident HIR entries kept, as a multiple of the capacity.
pub const NON_RESIDENT_FACTOR: usize = 2;
/// The HIR slice: this share of the capacity, in percent (at least one
/// block, and two once the cache has 10).
const HIR_PERCENT: usize = 1;

/// Which queue a node's `q` links are threaded on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Queue {
    Q,
    Gone,
    UseOnce,
    Prefetch,
    /// LIR blocks not used again since they entered: they joined the LIR
    /// set while it was filling, with no reuse to show for it.
    Unused,
}

/// LIRS; see the module documentation.
pub struct Lirs {
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: BlockMap<u32>,
    /// Stack S: head is the top (newest), tail the bottom.
    s: Ends,
    /// Queue Q of resident HIR blocks: tail is the front (evicted first).
    q: Ends,
    /// Non-resident HIR entries, oldest at the tail.
    gone: Ends,
    use_once: Ends,
    prefetch: Ends,
    unused: Ends,
    capacity: usize,
    lir_count: usize,
    resident: usize,
}

impl Lirs {
    pub fn new(capacity: usize) -> Lirs {
        Lirs {
            nodes: Vec::new(),
            free: Vec::new(),
            index: BlockMap::default(),
            s: Ends::EMPTY,
            q: Ends::EMPTY,
            gone: Ends::EMPTY,
            use_once: Ends::EMPTY,
            prefetch: Ends::EMPTY,
            unused: Ends::EMPTY,
            capacity: capacity.max(1),
            lir_count: 0,
            resident: 0,
        }
    }

    /// Most blocks the LIR set may hold.
    fn lir_target(&self) -> usize {
        let hir = if self.capacity >= 10 {
            (self.capacity * HIR_PERCENT / 100).max(2)
        } else {
            1
        };
        self.capacity.saturating_sub(hir).max(1)
    }

    fn queue(&mut self, queue: Queue) -> &mut Ends {
        self.queue_and_nodes(queue).0
    }

    /// A queue's ends together with the nodes it threads through.
    fn queue_and_nodes(&mut self, queue: Queue) -> (&mut Ends, &mut [Node]) {
        let ends = match queue {
            Queue::Q => &mut self.q,
            Queue::Gone => &mut self.gone,
            Queue::UseOnce => &mut self.use_once,
            Queue::Prefetch => &mut self.prefetch,
            Queue::Unused => &mut self.unused,
        };
        (ends, &mut self.nodes)
    }

    /// The queue node `at` is in, by its status (and, for a LIR block,
    /// whether it was used again since it entered).
    fn queue_of(&self, at: u32) -> Option<Queue> {
        let node = &self.nodes[at as usize];
        match node.status {
            Status::Lir if node.reused => None,
            Status::Lir => Some(Queue::Unused),
            Status::HirResident => Some(Queue::Q),
            Status::HirGone => Some(Queue::Gone),
            Status::UseOnce => Some(Queue::UseOnce),
            Status::Prefetched => Some(Queue::Prefetch),
        }
    }

    // --- stack S ---------------------------------------------------------

    fn s_push_top(&mut self, at: u32) {
        self.s.push_head(&mut self.nodes, at, IN_S);
        self.nodes[at as usize].in_s = true;
    }

    fn s_unlink(&mut self, at: u32) {
        self.s.unlink(&mut self.nodes, at, IN_S);
        self.nodes[at as usize].in_s = false;
    }

    fn s_to_top(&mut self, at: u32) {
        if self.nodes[at as usize].in_s {
            self.s_unlink(at);
        }
        self.s_push_top(at);
    }

    // --- the queues ------------------------------------------------------

    fn q_push(&mut self, at: u32, queue: Queue) {
        let (ends, nodes) = self.queue_and_nodes(queue);
        ends.push_head(nodes, at, IN_QUEUE);
    }

    fn q_unlink(&mut self, at: u32, queue: Queue) {
        let (ends, nodes) = self.queue_and_nodes(queue);
        ends.unlink(nodes, at, IN_QUEUE);
    }

    /// Takes a node off whatever queue its status puts it on.
    fn leave_queue(&mut self, at: u32) {
        if let Some(queue) = self.queue_of(at) {
            self.q_unlink(at, queue);
        }
    }

    /// Sets a node's status and puts it at the back of the matching queue.
    fn set_status(&mut self, at: u32, status: Status) {
        self.leave_queue(at);
        let was = self.nodes[at as usize].status;
        if was == Status::Lir {
            self.lir_count -= 1;
        }
        self.nodes[at as usize].status = status;
        if status == Status::Lir {
            self.lir_count += 1;
        }
        if let Some(queue) = self.queue_of(at) {
            self.q_push(at, queue);
        }
    }

    // --- nodes -----------------------------------------------------------

    fn new_node(&mut self, key: u64) -> u32 {
        let node = Node {
            key,
            s: Link::NONE,
            q: Link::NONE,
            // Every caller sets the real status next, through `set_status`.
            status: Status::HirGone,
            in_s: false,
            reused: false,
        };
        let at = slab_insert(&mut self.nodes, &mut self.free, node);
        self.index.insert(key, at);
        // A new node starts as a gone entry, so that `set_status` moves it
        // like any other node.
        self.q_push(at, Queue::Gone);
        at
    }

    fn drop_node(&mut self, at: u32) {
        self.leave_queue(at);
        if self.nodes[at as usize].status == Status::Lir {
            self.lir_count -= 1;
        }
        if self.nodes[at as usize].in_s {
            self.s_unlink(at);
        }
        let key = self.nodes[at as usize].key;
        // A free node is never resident (see `resolve`).
        self.nodes[at as usize].status = Status::HirGone;
        self.index.remove(&key);
        self.free.push(at);
    }

    /// Removes HIR entries from the bottom of S until a LIR block is there.
    /// Gone entries pruned from S are forgotten altogether.
    fn prune(&mut self) {
        while self.s.tail != NIL {
            let bottom = self.s.tail;
            match self.nodes[bottom as usize].status {
                Status::Lir => break,
                Status::HirGone => self.drop_node(bottom),
                _ => self.s_unlink(bottom),
            }
        }
    }

    /// The oldest LIR block (bottom of S) becomes HIR, at the back of Q.
    fn demote_bottom_lir(&mut self) {
        let bottom = self.s.tail;
        if bottom == NIL || self.nodes[bottom as usize].status != Status::Lir {
            return;
        }
        self.s_unlink(bottom);
        self.set_status(bottom, Status::HirResident);
        self.prune();
    }

    fn limit_gone(&mut self) {
        let limit = NON_RESIDENT_FACTOR * self.capacity;
        while self.gone.len > limit {
            let oldest = self.gone.tail;
            self.drop_node(oldest);
        }
    }

    /// A real use of a resident block `at` that is not LIR, or a new block
    /// (`at` a fresh or gone node): the LIRS rules for an HIR reference.
    fn reference_hir(&mut self, at: u32) {
        if self.lir_count < self.lir_target() {
            // Warming up: the LIR set fills first.
            self.s_to_top(at);
            self.set_status(at, Status::Lir);
            return;
        }
        if self.nodes[at as usize].in_s {
            // Its reuse distance is shorter than the oldest LIR block's.
            self.s_to_top(at);
            self.set_status(at, Status::Lir);
            self.demote_bottom_lir();
        } else {
            self.s_to_top(at);
            self.set_status(at, Status::HirResident);
        }
    }

    /// Evicts the oldest evictable block of a queue of resident blocks.
    fn evict_from(&mut self, queue: Queue, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        let mut budget = self.queue(queue).len;
        while budget > 0 {
            budget -= 1;
            let at = self.queue(queue).tail;
            if at == NIL {
                return None;
            }
            let key = self.nodes[at as usize].key;
            if may_evict(key) {
                self.resident -= 1;
                let was_bottom = self.s.tail == at;
                if matches!(queue, Queue::Q | Queue::Unused) && self.nodes[at as usize].in_s {
                    // Remembered: a use soon will show a short reuse
                    // distance.
                    self.set_status(at, Status::HirGone);
                    self.limit_gone();
                } else {
                    self.drop_node(at);
                }
                if was_bottom {
                    // A LIR block left the bottom of S.
                    self.prune();
                }
                return Some(key);
            }
            // In use: to the back of its queue.
            self.q_unlink(at, queue);
            self.q_push(at, queue);
        }
        None
    }

    /// Evicts the oldest LIR block that was never used again since it
    /// entered. Such blocks joined the LIR set while it was filling, with
    /// no reuse to show for it: when the LIR set is not full but the cache
    /// is (read-ahead or use-once blocks hold the rest), they go before the
    /// working set at the bottom of S.
    fn evict_unused_lir(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.evict_from(Queue::Unused, may_evict)
    }

    fn evict_first(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        if let Some(key) = self.evict_from(Queue::UseOnce, may_evict) {
            return Some(key);
        }
        if self.prefetch.len > prefetch_reserve(self.capacity) {
            return self.evict_from(Queue::Prefetch, may_evict);
        }
        None
    }

    fn resident_node(&self, key: u64) -> Option<u32> {
        let at = *self.index.get(&key)?;
        (self.nodes[at as usize].status != Status::HirGone).then_some(at)
    }

    fn touch_node(&mut self, at: u32, access: Access) {
        let status = self.nodes[at as usize].status;
        match access {
            Access::Normal => match status {
                Status::Lir => {
                    // Out of the queue of unused LIR blocks, if there.
                    self.leave_queue(at);
                    self.nodes[at as usize].reused = true;
                    let was_bottom = self.s.tail == at;
                    self.s_to_top(at);
                    if was_bottom {
                        self.prune();
                    }
                }
                Status::HirResident => {
                    self.nodes[at as usize].reused = true;
                    self.reference_hir(at);
                }
                // The first real use of a prefetched or used-once block is
                // its first reference.
                Status::UseOnce | Status::Prefetched => self.reference_hir(at),
                Status::HirGone => {}
            },
            Access::UseOnce => {
                if status == Status::Prefetched {
                    self.set_status(at, Status::UseOnce);
                }
            }
            Access::Prefetch => {}
        }
    }

    /// The node of resident `key`: `*hint` if that node still is it (one
    /// slab read instead of an index lookup), else the index's answer, which
    /// becomes the new hint.
    fn resolve(&self, key: u64, hint: &mut u32) -> Option<u32> {
        if let Some(node) = self.nodes.get(*hint as usize) {
            if node.key == key && node.status != Status::HirGone {
                return Some(*hint);
            }
        }
        let at = self.resident_node(key)?;
        *hint = at;
        Some(at)
    }
}

impl Policy for Lirs {
    fn name(&self) -> &'static str {
        "lirs"
    }
    fn prefetch(&self, _key: u64, slot: u32, stage: u8) {
        if stage == 0 {
            prefetch(&self.nodes, slot);
        } else if let Some(node) = self.nodes.get(slot as usize) {
            for at in [node.s.prev, node.s.next, node.q.prev, node.q.next] {
                prefetch(&self.nodes, at);
            }
        }
    }
    fn holds_proven(&self, key: u64) -> bool {
        self.resident_node(key).is_some_and(|at| {
            let node = &self.nodes[at as usize];
            node.status == Status::Lir && node.reused
        })
    }
    fn set_capacity(&mut self, blocks: usize) {
        self.capacity = blocks.max(1);
        // A smaller LIR target: the oldest LIR blocks become HIR, so that
        // eviction (which takes HIR blocks) can shrink the cache.
        while self.lir_count > self.lir_target() {
            let before = self.lir_count;
            self.demote_bottom_lir();
            if self.lir_count == before {
                break;
            }
        }
        self.limit_gone();
    }
    fn len(&self) -> usize {
        self.resident
    }
    fn contains(&self, key: u64) -> bool {
        self.resident_node(key).is_some()
    }
    fn touch(&mut self, key: u64, access: Access) {
        if let Some(at) = self.resident_node(key) {
            self.touch_node(at, access);
        }
    }
    fn touch_hinted(&mut self, key: u64, access: Access, hint: &mut Hint) {
        if let Some(at) = self.resolve(key, &mut hint.0[0]) {
            self.touch_node(at, access);
        }
    }
    fn insert(&mut self, key: u64, access: Access) {
        let at = match self.index.get(&key) {
            Some(&at) => {
                assert!(
                    self.nodes[at as usize].status == Status::HirGone,
                    "block {key} inserted twice"
                );
                at
            }
            None => self.new_node(key),
        };
        self.nodes[at as usize].reused = false;
        self.resident += 1;
        match access {
            Access::Normal => self.reference_hir(at),
            Access::UseOnce => self.set_status(at, Status::UseOnce),
            Access::Prefetch => self.set_status(at, Status::Prefetched),
        }
        // A remembered block that comes back as a guess or a use-once read
        // keeps its place in S; a new one is not in S at all.
        if access != Access::Normal && self.nodes[at as usize].in_s {
            self.s_unlink(at);
            self.prune();
        }
    }
    fn remove(&mut self, key: u64) {
        if let Some(at) = self.resident_node(key) {
            self.resident -= 1;
            self.drop_node(at);
            self.prune();
        }
    }
    fn evicted_elsewhere(&mut self, key: u64) {
        let Some(at) = self.resident_node(key) else {
            return;
        };
        self.resident -= 1;
        let node = self.nodes[at as usize];
        if node.in_s && matches!(node.status, Status::Lir | Status::HirResident) {
            // Gone, but its recency is remembered as if LIRS had evicted it.
            let was_bottom = self.s.tail == at;
            self.set_status(at, Status::HirGone);
            self.limit_gone();
            if was_bottom {
                self.prune();
            }
        } else {
            self.drop_node(at);
            self.prune();
        }
    }
    fn evict(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        if let Some(key) = self.evict_first(may_evict) {
            return Some(key);
        }
        if let Some(key) = self.evict_from(Queue::Q, may_evict) {
            return Some(key);
        }
        // No evictable HIR block: the oldest LIR blocks never used again
        // (they joined the LIR set while it filled), then prefetched blocks
        // nobody has used yet, before the rest of the LIR set. The LIR
        // target leaves no room for read-ahead (99% of the cache), so taking
        // a used LIR block here would let every window of a scan cost the
        // working set a block; read-ahead notices the waste and shrinks its
        // window instead.
        if let Some(key) = self.evict_unused_lir(may_evict) {
            return Some(key);
        }
        if let Some(key) = self.evict_from(Queue::Prefetch, may_evict) {
            return Some(key);
        }
        // Nothing else: the oldest LIR blocks become HIR, one at a time,
        // until one of them can go.
        let mut budget = self.lir_count;
        while budget > 0 {
            budget -= 1;
            let before = self.q.len;
            self.demote_bottom_lir();
            if self.q.len == before {
                break;
            }
            if let Some(key) = self.evict_from(Queue::Q, may_evict) {
                return Some(key);
            }
        }
        None
    }
    fn evict_for_prefetch(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        // A guess may take the room of used-once, stale prefetched and HIR
        // blocks (scan blocks are HIR), and of the oldest LIR blocks that
        // were never used again: the LIR set fills with the first blocks
        // seen, so a long scan from a cold cache would otherwise leave
        // read-ahead only the 1% HIR slice. Never of a LIR block used again.
        if let Some(key) = self.evict_first(may_evict) {
            return Some(key);
        }
        if let Some(key) = self.evict_from(Queue::Q, may_evict) {
            return Some(key);
        }
        self.evict_unused_lir(may_evict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit_ratio(policy: &mut dyn Policy, capacity: usize, trace: &[u64]) -> f64 {
        crate::policy::simulate(policy, capacity, trace) as f64 / trace.len() as f64
    }

    #[test]
    fn a_loop_larger_than_the_cache_keeps_a_fixed_part() {
        // 150 blocks in a loop through 100: LRU gets nothing; LIRS keeps
        // its LIR blocks and hits on them every round.
        let trace: Vec<u64> = (0..40).flat_map(|_| 0..150u64).collect();
        let ratio = hit_ratio(&mut Lirs::new(100), 100, &trace);
        assert!(ratio > 0.6, "{ratio}");
    }

    #[test]
    fn a_scan_passes_through_the_hir_slice() {
        let mut trace: Vec<u64> = (0..30).flat_map(|_| 0..90u64).collect();
        trace.extend(1_000..2_000);
        let mut lirs = Lirs::new(100);
        hit_ratio(&mut lirs, 100, &trace);
        let kept = (0..90).filter(|key| lirs.contains(*key)).count();
        assert!(kept >= 85, "kept {kept} of 90 hot blocks");
    }

    /// Proven means LIR and used again since it came in: not a block
    /// that joined the LIR set while it filled, not an HIR block, not a
    /// block gone.
    #[test]
    fn only_reused_lir_blocks_are_proven() {
        let mut lirs = Lirs::new(10);
        for key in 0..10 {
            lirs.insert(key, Access::Normal);
        }
        assert!((0..10).all(|key| !lirs.holds_proven(key)));
        lirs.touch(0, Access::Normal);
        assert!(lirs.holds_proven(0));
        // 9 is HIR (the LIR target is 8); a hit while in S makes it LIR,
        // and the oldest LIR block (1, never used again) becomes HIR.
        lirs.touch(9, Access::Normal);
        assert!(lirs.holds_proven(9));
        lirs.evicted_elsewhere(0);
        assert!(!lirs.holds_proven(0));
        assert!(!lirs.holds_proven(42));
    }

    #[test]
    fn an_eviction_decided_elsewhere_is_remembered() {
        let mut lirs = Lirs::new(10);
        for key in 0..10 {
            lirs.insert(key, Access::Normal);
        }
        lirs.insert(10, Access::Normal);
        // Another policy chose block 10 (a resident HIR block in S).
        lirs.evicted_elsewhere(10);
        assert!(!lirs.contains(10));
        assert_eq!(lirs.len(), 10);
        // It comes back with a short reuse distance: LIR at once.
        lirs.insert(10, Access::Normal);
        let at = lirs.resident_node(10).unwrap();
        assert_eq!(lirs.nodes[at as usize].status, Status::Lir);
    }

    /// Every live node is in exactly the queue its status (and `reused`)
    /// names, the queues' lengths match, and the counters agree.
    fn check_invariants(lirs: &Lirs) {
        let queues = [
            Queue::Q,
            Queue::Gone,
            Queue::UseOnce,
            Queue::Prefetch,
            Queue::Unused,
        ];
        let mut in_queue = std::collections::HashMap::new();
        for queue in queues {
            let ends = match queue {
                Queue::Q => lirs.q,
                Queue::Gone => lirs.gone,
                Queue::UseOnce => lirs.use_once,
                Queue::Prefetch => lirs.prefetch,
                Queue::Unused => lirs.unused,
            };
            let mut count = 0;
            let mut at = ends.tail;
            while at != NIL {
                count += 1;
                assert!(
                    in_queue.insert(at, queue as u8).is_none(),
                    "node in two queues"
                );
                at = lirs.nodes[at as usize].q.prev;
            }
            assert_eq!(count, ends.len, "queue {} length", queue as u8);
        }
        let (mut lir, mut resident) = (0, 0);
        for &at in lirs.index.values() {
            let node = lirs.nodes[at as usize];
            assert_eq!(
                in_queue.get(&at).copied(),
                lirs.queue_of(at).map(|q| q as u8),
                "block {} ({:?}, reused {})",
                node.key,
                node.status,
                node.reused
            );
            lir += usize::from(node.status == Status::Lir);
            resident += usize::from(node.status != Status::HirGone);
        }
        assert_eq!(lir, lirs.lir_count);
        assert_eq!(resident, lirs.resident);
        if lirs.s.tail != NIL {
            assert_eq!(
                lirs.nodes[lirs.s.tail as usize].status,
                Status::Lir,
                "S ends in a LIR block"
            );
        }
    }

    #[test]
    fn bookkeeping_holds_under_random_operations() {
        // A fixed seed; every failure message names it.
        const SEED: u64 = 23;
        println!("seed {SEED} (shown with a failure)");
        let mut rng = keel_disk::SimRng::new(SEED);
        let mut lirs = Lirs::new(50);
        let mut resident = std::collections::BTreeSet::new();
        for step in 0..30_000 {
            let key = rng.below(150);
            match rng.below(12) {
                0 => {
                    lirs.remove(key);
                    resident.remove(&key);
                }
                1 => {
                    // Another policy's eviction, as when LIRS follows.
                    lirs.evicted_elsewhere(key);
                    resident.remove(&key);
                }
                2 => lirs.on_lead(),
                3 => lirs.set_capacity(10 + rng.below(80) as usize),
                _ => {
                    if lirs.contains(key) {
                        let access = [Access::Normal, Access::Normal, Access::UseOnce]
                            [rng.below(3) as usize];
                        lirs.touch(key, access);
                    } else {
                        let access = [Access::Normal, Access::UseOnce, Access::Prefetch]
                            [rng.below(3) as usize];
                        lirs.insert(key, access);
                        resident.insert(key);
                    }
                    while lirs.len() > 50 {
                        let pinned = rng.below(150);
                        let victim = if rng.below(4) == 0 {
                            lirs.evict_for_prefetch(&mut |k| k != pinned)
                        } else {
                            lirs.evict(&mut |k| k != pinned)
                        };
                        let Some(victim) = victim else { break };
                        assert!(
                            resident.remove(&victim),
                            "seed {SEED}, step {step}: evicted {victim}"
                        );
                    }
                }
            }
            check_invariants(&lirs);
            assert_eq!(lirs.len(), resident.len(), "seed {SEED}, step {step}");
        }
    }

    #[test]
    fn with_no_hir_block_a_never_reused_lir_block_goes_before_the_working_set() {
        // 100 blocks, LIR target 98. A working set of 40 used twice, then
        // 40 blocks used once: all LIR (the set is still filling), the
        // working set at the bottom of S. The rest of the cache is held by
        // guesses the policy does not count, so it has no HIR block to give.
        let mut lirs = Lirs::new(100);
        for _ in 0..2 {
            for key in 0..40 {
                if lirs.contains(key) {
                    lirs.touch(key, Access::Normal);
                } else {
                    lirs.insert(key, Access::Normal);
                }
            }
        }
        for key in 100..140 {
            lirs.insert(key, Access::Normal);
        }
        assert_eq!(lirs.q.len, 0);
        for expected in 100..110 {
            assert_eq!(lirs.evict(&mut |_| true), Some(expected));
        }
        assert!(
            (0..40).all(|key| lirs.contains(key)),
            "the working set stays"
        );
        // A block used again leaves the unused queue: 110 is now kept.
        lirs.touch(110, Access::Normal);
        assert_eq!(lirs.evict(&mut |_| true), Some(111));
    }
}
