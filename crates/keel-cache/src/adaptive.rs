//! The default policy: W-TinyLFU, LIRS and LRU over one resident set, with
//! eviction decided by whichever of them a mini-simulation shows ahead.
//!
//! It has the best hit ratios of keel's policies on the benchmark traces
//! (96 of 96 points within a point of the best peer of 31 runs, against
//! 79–85 for W-TinyLFU alone). The price is CPU: every access updates three
//! policies' metadata. Two things keep that down. The shard's map hands
//! each member its node number (a [`Hint`]), so a hit does no index
//! lookup. And touches of resident blocks wait for a batch of 32, applied
//! in order with their nodes prefetched, so their memory reads overlap
//! (`Adaptive::drain`; no decision changes). A hit through the cache
//! costs 0.27–0.30 µs on a 64 MiB cache and 0.69–0.77 µs at 1 GiB, against
//! 0.30–0.33 and 0.91–0.96 µs one at a time (`docs/benchmarks/cache.md`).
//!
//! No single policy is within a point of the best on every benchmark trace
//! (`docs/cache.md`). W-TinyLFU, with its adaptive window, is best on skewed
//! popularity (zipf) and keeps a working set through scans; LIRS, which
//! ranks blocks by reuse distance, is best on the mixed looping traces
//! (`cpp`, `multi*`, `ps`), where TinyLFU's frequency estimate cannot tell
//! which part of a loop to keep; LRU is best on the recency-friendly traces
//! (`sprite`, `zigzag`), where LIRS collapses because every block's reuse
//! distance grows with each sweep.
//!
//! ```text
//!   every access ──► W-TinyLFU ─┐ full metadata for the same resident
//!                ├─► LIRS      ─┤ blocks; the leader picks each victim,
//!                └─► LRU       ─┘ the others are told (evicted_elsewhere)
//!   sampled accesses ──► a small shadow copy of each ── hits ──► every
//!        check, the leader becomes the shadow with the most (decayed) hits
//!        (at least one more than the leader's); the new leader rebuilds
//!        its queues (on_lead)
//! ```
//!
//! Every member sees every access and keeps metadata for the same resident
//! blocks, so a change of leader moves no data. A follower's queues are
//! shaped by the leader's evictions, though, and that used to make a new
//! leader do worse than either member alone for a long time: on
//! CloudPhysics w106 at 82 551 blocks, after LIRS led through a phase
//! change, W-TinyLFU took over with protected at 12 000 blocks instead of
//! 59 000 and its window full of frequent blocks LIRS had evicted, and hit
//! 8% less than alone for the rest of the trace (0.905 overall, against
//! 0.944 alone and LIRS's 0.935). So a member taking the lead rebuilds
//! what it can from its own knowledge: W-TinyLFU re-deals the resident
//! blocks among its segments by sketch frequency (0.935 there). With
//! switches that cheap, no margin is needed (0%–0.5% scored best, 3% 84 of
//! 96), and LIRS leads from the start: its cold start keeps the first
//! blocks of a loop, and moving from LIRS to W-TinyLFU is the cheap
//! direction (92 of 96 points before the rule below, against 87 for W-TinyLFU first and 78 for
//! LRU first).
//!
//! The shadows hold at most 128 blocks each and are fed a
//! spatial sample of the blocks (SHARDS, Waldspurger et al., FAST '15), as
//! W-TinyLFU sizes its window.
//!
//! **Before the first hit.** Until some resident block is hit, a new
//! block does not displace an old one: the newest block that may leave is
//! the victim, so the cache keeps the first cache's worth it saw. With no
//! reuse seen, nothing says recent blocks are worth more, and churning
//! destroys what the next pass could hit. On a loop or scan the next pass
//! meets those blocks first. On forward-and-backward sweeps (`zigzag`) it
//! meets them once it has come back past them. There the first backward
//! sweep used to cost a whole sweep, because both LIRS (which promotes
//! the sweep's blocks by their short reuse distance) and LRU (once its
//! shadow led) evicted the first blocks before the sweep reached them.
//! 94 of 96 points, against 92. The rule never acts on a trace that hits
//! before the cache is full (every other benchmark trace: their results
//! are unchanged).
//!
//! **Hedging.** The shadows compare recent hits; they cannot see what a
//! new leader's evictions will cost later. On the LIRS `cpp` trace at 245
//! blocks, LRU's shadow led LIRS's by 0.4% and LRU took the lead. LRU then
//! really did hit more for 1 200 accesses, but in that time it let go half
//! of LIRS's LIR set, the blocks of a loop that came back later. After the
//! lead went back to LIRS, the cache missed each of them once more: 84 of
//! the 102 hits it lost against LIRS alone. So while LRU leads and LIRS's
//! shadow is within [`HEDGE_GAP`] (1.25%) of LRU's, a lead that small being
//! within the shadows' noise, LRU's victim is its oldest block that LIRS
//! does not hold as proven working set (a LIR block hit since it came in),
//! looking at most [`HEDGE_LOOK`] blocks deep. A block passed over goes to
//! the front of LRU's order, as any block LRU may not evict does: a second
//! chance, as CLOCK gives one. Once LIRS is clearly behind,
//! LRU evicts as LRU. `cpp`/245 goes from 0.8365 to 0.8408 (quick_cache
//! 0.8478), and the benchmark meets 96 of 96 points. Hedging always, at any
//! gap, wrecks `zigzag` and `sprite`, where LRU must evict exactly those
//! blocks; gaps of 1% to 2% met all 96, and 2.5% and up lose `sprite`.
//!
//! **Drop-behind.** Blocks read ahead wait among the guesses, apart from
//! the members, until they are used. A first use leaves a block there,
//! now used once, and used-once guesses are the first victims; a second
//! use makes it a member (its first access, as far as they know). A block
//! a sequential stream read once is the lecture's scan, which the cache
//! must not keep; Linux's inactive list treats read-ahead pages the same
//! way. The members never see a stream, so a sequential read costs the
//! reader half the CPU per block (0.6 µs against 1.2 µs). The price: a
//! file read through once and then reused at random, while other misses
//! press, loses its blocks before anything else, and each misses once
//! more before it joins (`docs/cache.md`, "Drop-behind").
//!
//! **Scans.** A one-time scan cannot displace the working set while
//! W-TinyLFU or LIRS leads. After a long recency-friendly phase LRU may
//! lead, and a scan arriving then costs the cache until the shadows move
//! the lead back (about one check); W-TinyLFU alone
//! has the same exposure once its window has grown to the whole cache. A
//! reader that knows it scans should say so with the use-once hint.

use crate::links::NIL;
use crate::lirs::Lirs;
use crate::policy::{Access, Guesses, Hint, Lru, Policy, WTinyLfu};

/// Blocks simulated by each shadow at most.
const SHADOW_BLOCKS: usize = 128;
/// The leader is reconsidered every this many sampled accesses per 4
/// simulated blocks (with at least 64 blocks counted).
const CHECK_BLOCKS_FACTOR: usize = 2;
/// Weight of the past in the shadows' hit counts, per 4 checks.
const DECAY: f64 = 0.9;
/// A shadow takes the lead when its (decayed) hits exceed the leader's by
/// this many: one hit, so that ties and noise around zero do not move it.
const SWITCH_MARGIN_HITS: f64 = 1.0;
/// Before the first hit, the newest this many blocks are candidates for
/// eviction; when none of them may leave, the leader chooses.
const COLD_LOOK_AT: usize = 8;

/// The members, in the order of [`members`].
const MEMBERS: usize = 3;
const _: () = assert!(
    MEMBERS <= Hint::NONE.0.len(),
    "a hint has a slot per member"
);
const LIRS: usize = 1;
const LRU: usize = 2;
/// Hedging (see the module documentation): while LRU leads and LIRS's
/// shadow is within this fraction of LRU's (decayed) hits, LRU's victims
/// skip blocks LIRS holds as proven working set.
const HEDGE_GAP: f64 = 0.0125;
/// How many of LRU's evictable candidates, oldest first, hedging may skip
/// before it takes the next one whatever LIRS says.
const HEDGE_LOOK: usize = 16;

fn members(capacity: usize) -> [Box<dyn Policy>; MEMBERS] {
    [
        Box::new(WTinyLfu::new(capacity)),
        Box::new(Lirs::new(capacity)),
        Box::new(Lru::new(capacity)),
    ]
}

/// See the module documentation.
pub struct Adaptive {
    /// Used-once and prefetched blocks, kept here once rather than in every
    /// member; a block joins the members at its first real use.
    guesses: Guesses,
    members: [Box<dyn Policy>; MEMBERS],
    shadows: [Box<dyn Policy>; MEMBERS],
    shadow_capacity: usize,
    hits: [f64; MEMBERS],
    leader: usize,
    capacity: usize,
    sample_threshold: u64,
    sampled_accesses: usize,
    check_every: usize,
    decay_per_check: f64,
    /// Until the first hit: the resident blocks in the order they came
    /// in (see "Before the first hit" in the module documentation).
    cold: Option<Lru>,
    /// Normal touches of resident blocks with a full hint, not yet applied
    /// (see `Adaptive::drain`).
    pending: Vec<(u64, Hint)>,
}

/// Touches held back and applied together (see `Adaptive::drain`): 32
/// made one thread 20–35% faster per hit. The shard's lock is held for the
/// whole batch, so a hit waiting for it spins rather than sleeps
/// (`cache.rs`, `HIT_SPIN`).
const BATCH: usize = 32;
/// How many touches ahead a drain starts loading a touch's nodes, and
/// their neighbours (4 and 2 measured the same as 8 and 4).
const PREFETCH_NODES: usize = 4;
const PREFETCH_NEIGHBOURS: usize = 2;

impl Adaptive {
    pub fn new(capacity: usize) -> Adaptive {
        let capacity = capacity.max(1);
        let mut adaptive = Adaptive {
            guesses: Guesses::new(),
            members: members(capacity),
            shadows: members(1),
            shadow_capacity: 1,
            hits: [0.0; MEMBERS],
            leader: LIRS,
            capacity,
            sample_threshold: 0,
            sampled_accesses: 0,
            check_every: 1,
            decay_per_check: DECAY,
            cold: Some(Lru::new(capacity)),
            pending: Vec::with_capacity(BATCH),
        };
        adaptive.build_shadows();
        adaptive
    }

    fn build_shadows(&mut self) {
        let shadow_capacity = self.capacity.min(SHADOW_BLOCKS);
        self.shadow_capacity = shadow_capacity;
        self.shadows = members(shadow_capacity);
        self.sample_threshold =
            ((shadow_capacity as u128) << 32).div_ceil(self.capacity as u128) as u64;
        // Checks four times as often as the decay period: the lead moves as
        // soon as the evidence is in, with the same memory.
        self.check_every = (CHECK_BLOCKS_FACTOR * shadow_capacity.max(64) / 4).max(1);
        self.decay_per_check = DECAY.powf(0.25);
        self.sampled_accesses = 0;
        self.hits = [0.0; MEMBERS];
    }

    fn sampled(&self, key: u64) -> bool {
        let mut z = key.wrapping_mul(0x9FB2_1C65_1E98_DF25);
        z ^= z >> 29;
        (z & 0xFFFF_FFFF) < self.sample_threshold
    }

    /// Which member decides evictions now: `"wtinylfu"`, `"lirs"` or
    /// `"lru"` (as of the last touch applied: see `Adaptive::drain`).
    pub fn leader(&self) -> &'static str {
        self.members[self.leader].name()
    }

    fn simulate(&mut self, key: u64) {
        if !self.sampled(key) {
            return;
        }
        for (shadow, hits) in self.shadows.iter_mut().zip(self.hits.iter_mut()) {
            if shadow.contains(key) {
                *hits += 1.0;
                shadow.touch(key, Access::Normal);
            } else {
                shadow.insert(key, Access::Normal);
                while shadow.len() > self.shadow_capacity {
                    if shadow.evict(&mut |_| true).is_none() {
                        break;
                    }
                }
            }
        }
        self.sampled_accesses += 1;
        if self.sampled_accesses >= self.check_every {
            self.sampled_accesses = 0;
            let mut best = self.leader;
            for (index, hits) in self.hits.iter().enumerate() {
                if *hits > self.hits[best] {
                    best = index;
                }
            }
            if self.hits[best] > self.hits[self.leader] + SWITCH_MARGIN_HITS {
                self.leader = best;
                self.members[best].on_lead();
            }
            for hits in self.hits.iter_mut() {
                *hits *= self.decay_per_check;
            }
        }
    }

    /// LRU's victim when it leads while LIRS is close behind: the oldest
    /// evictable block that LIRS does not hold as proven working set, among
    /// the oldest [`HEDGE_LOOK`] (after them, the next one whatever it is).
    /// LRU moves each block passed over to the front of its order (its
    /// `evict_tail` does that with every refused block). `None` when
    /// hedging does not apply or found nothing; the leader then chooses as
    /// usual.
    fn evict_hedged(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        if self.leader != LRU || self.hits[LIRS] < self.hits[LRU] * (1.0 - HEDGE_GAP) {
            return None;
        }
        let (others, lru) = self.members.split_at_mut(LRU);
        let lirs = &others[LIRS];
        let mut looked = 0;
        lru[0].evict(&mut |key| {
            if !may_evict(key) {
                return false;
            }
            looked += 1;
            looked > HEDGE_LOOK || !lirs.holds_proven(key)
        })
    }

    fn evicted(&mut self, victim: Option<u64>) -> Option<u64> {
        let key = victim?;
        for (index, member) in self.members.iter_mut().enumerate() {
            if index != self.leader {
                member.evicted_elsewhere(key);
            }
        }
        if let Some(order) = &mut self.cold {
            order.remove(key);
        }
        Some(key)
    }

    /// Applies the held-back touches, in order. Every other change of state
    /// drains first, so the members see exactly the sequence of operations
    /// they would have seen one touch at a time, and make the same
    /// decisions (`batched_touches_make_the_same_decisions`). What does not
    /// wait: the resident set (`contains`, `len`), which touches of
    /// resident blocks do not change; [`Adaptive::leader`] may lag by up
    /// to a batch.
    ///
    /// Held together, the touches' memory reads overlap instead of each
    /// waiting for the last: each touch's hint names its nodes, so they are
    /// prefetched a few touches ahead, and their list neighbours a little
    /// later, once the nodes are in the CPU's cache. A hint slot that went
    /// stale (its node now holds another block) costs an index lookup, as
    /// before, and is not repaired in the caller's copy; a resident block
    /// keeps its nodes, so this does not happen in the cache.
    fn drain(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for index in 0..pending.len() {
            if let Some((key, hint)) = pending.get(index + PREFETCH_NODES) {
                for (member, slot) in self.members.iter().zip(hint.0) {
                    member.prefetch(*key, slot, 0);
                }
            }
            if let Some((key, hint)) = pending.get(index + PREFETCH_NEIGHBOURS) {
                for (member, slot) in self.members.iter().zip(hint.0) {
                    member.prefetch(*key, slot, 1);
                }
            }
            let (key, mut hint) = pending[index];
            self.touch_members(key, Access::Normal, &mut hint);
        }
        self.pending = pending;
        self.pending.clear();
    }

    fn touch_members(&mut self, key: u64, access: Access, hint: &mut Hint) {
        if access == Access::Normal {
            self.hit();
        }
        // Each member keeps its own slot of the hint.
        for (member, slot) in self.members.iter_mut().zip(hint.0.iter_mut()) {
            let mut own = Hint([*slot, NIL, NIL]);
            member.touch_hinted(key, access, &mut own);
            *slot = own.0[0];
        }
        if access == Access::Normal {
            self.simulate(key);
        }
    }

    /// An access to `key` if it is a guess (false if not). Guesses are
    /// apart from the members, so this need not wait for the pending
    /// touches of member blocks.
    fn touch_guess(&mut self, key: u64, access: Access) -> bool {
        match self.guesses.touch(key, access) {
            None => false,
            Some(joins) => {
                if joins {
                    // A used-once block used again: its first access as far
                    // as the members know (`insert` drains first).
                    self.insert(key, Access::Normal);
                }
                true
            }
        }
    }

    /// A real hit: the cold start is over.
    fn hit(&mut self) {
        self.cold = None;
    }

    /// Before the first hit, the newest block that may leave (looking at
    /// a few only, so that a cache filling with dirty or pinned blocks
    /// does not walk them all on every eviction).
    fn evict_cold(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        let key = self.cold.as_mut()?.evict_newest(COLD_LOOK_AT, may_evict)?;
        for member in self.members.iter_mut() {
            member.evicted_elsewhere(key);
        }
        Some(key)
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn set_capacity(&mut self, blocks: usize) {
        self.drain();
        let blocks = blocks.max(1);
        if blocks == self.capacity {
            return;
        }
        self.capacity = blocks;
        for member in self.members.iter_mut() {
            member.set_capacity(blocks);
        }
        self.build_shadows();
    }
    fn len(&self) -> usize {
        self.guesses.len() + self.members[self.leader].len()
    }
    fn contains(&self, key: u64) -> bool {
        self.guesses.contains(key) || self.members[self.leader].contains(key)
    }
    fn touch(&mut self, key: u64, access: Access) {
        if self.touch_guess(key, access) {
            return;
        }
        self.drain();
        if access == Access::Normal {
            self.hit();
        }
        for member in self.members.iter_mut() {
            member.touch(key, access);
        }
        if access == Access::Normal {
            self.simulate(key);
        }
    }
    fn touch_hinted(&mut self, key: u64, access: Access, hint: &mut Hint) {
        if self.touch_guess(key, access) {
            return;
        }
        // A block's first touch fills its hint; from then on its touches
        // can wait for a batch.
        if access == Access::Normal && hint.0.iter().all(|slot| *slot != NIL) {
            self.pending.push((key, *hint));
            if self.pending.len() >= BATCH {
                self.drain();
            }
            return;
        }
        self.drain();
        self.touch_members(key, access, hint);
    }
    fn insert(&mut self, key: u64, access: Access) {
        self.drain();
        if access != Access::Normal {
            self.guesses.insert(key, access);
            return;
        }
        for member in self.members.iter_mut() {
            member.insert(key, access);
        }
        if let Some(order) = &mut self.cold {
            order.insert(key, Access::Normal);
        }
        self.simulate(key);
    }
    fn remove(&mut self, key: u64) {
        self.drain();
        if self.guesses.take(key) {
            return;
        }
        if let Some(order) = &mut self.cold {
            order.remove(key);
        }
        for member in self.members.iter_mut() {
            member.remove(key);
        }
    }
    fn evicted_elsewhere(&mut self, key: u64) {
        self.drain();
        if self.guesses.take(key) {
            return;
        }
        if let Some(order) = &mut self.cold {
            order.remove(key);
        }
        for member in self.members.iter_mut() {
            member.evicted_elsewhere(key);
        }
    }
    fn evict(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.drain();
        if let Some(key) = self.guesses.evict_first(self.capacity, may_evict) {
            return Some(key);
        }
        if self.guesses.len() > 0 {
            // Guesses hold part of the cache, which the members' own targets
            // do not know about (LIRS keeps 99% for its LIR set): first a
            // block the leader would give up for a guess (a scan block),
            // then an unused guess, and only then the leader's full choice,
            // so that read-ahead costs a wasted prefetch (and shrinks its
            // window) rather than the working set.
            let victim = self.members[self.leader].evict_for_prefetch(may_evict);
            if victim.is_some() {
                return self.evicted(victim);
            }
            if let Some(key) = self.guesses.evict_any(may_evict) {
                return Some(key);
            }
        }
        if let Some(key) = self.evict_cold(may_evict) {
            return Some(key);
        }
        let victim = self
            .evict_hedged(may_evict)
            .or_else(|| self.members[self.leader].evict(may_evict));
        if victim.is_some() {
            return self.evicted(victim);
        }
        self.guesses.evict_any(may_evict)
    }
    fn evict_for_prefetch(&mut self, may_evict: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        self.drain();
        if let Some(key) = self.guesses.evict_first(self.capacity, may_evict) {
            return Some(key);
        }
        let victim = self.members[self.leader].evict_for_prefetch(may_evict);
        self.evicted(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_disk::SimRng;

    fn hit_ratio(policy: &mut dyn Policy, capacity: usize, trace: &[u64]) -> f64 {
        crate::policy::simulate(policy, capacity, trace) as f64 / trace.len() as f64
    }

    /// Hot sets that move every phase, each access followed by a block
    /// never seen again: TinyLFU's counts lag the moves; reuse distance
    /// sees them at once.
    fn shifting_hot_sets_with_noise(seed: u64) -> Vec<u64> {
        let mut rng = SimRng::new(seed);
        let mut trace = Vec::new();
        for phase in 0..6u64 {
            for _ in 0..3_000 {
                trace.push(phase * 1_000 + rng.below(250));
                trace.push(100_000 + rng.below(100_000));
            }
        }
        trace
    }

    /// Forward and backward sweeps (the LIRS `zigzag` trace): every
    /// block's reuse distance grows with each sweep, so LIRS keeps the
    /// wrong ones; recency is what pays.
    fn sweeps() -> Vec<u64> {
        let mut trace = Vec::new();
        for _ in 0..10 {
            trace.extend(0..2_000u64);
            trace.extend((0..2_000u64).rev());
        }
        trace
    }

    /// The first backward sweep of `sweeps` (the only one LRU wins by a
    /// whole sweep): every later sweep hits about a cache's worth either
    /// way, this one only if the first sweep's blocks were not churned.
    #[test]
    fn before_the_first_hit_nothing_is_displaced() {
        let mut adaptive = Adaptive::new(1_000);
        let forward: Vec<u64> = (0..2_000).collect();
        assert_eq!(crate::policy::simulate(&mut adaptive, 1_000, &forward), 0);
        // No hit yet: the first cache's worth stayed, each later block left
        // again at once.
        assert!((0..1_000).all(|key| adaptive.contains(key)));
        let backward: Vec<u64> = (0..2_000).rev().collect();
        let hits = crate::policy::simulate(&mut adaptive, 1_000, &backward);
        assert_eq!(hits, 1_000, "the backward sweep finds the first 1 000");
        // The cold start is over: the leader now chooses, and the next new
        // block does not simply leave again.
        assert!(adaptive.cold.is_none());
        adaptive.insert(5_000, Access::Normal);
        adaptive.evict(&mut |_| true).expect("a victim");
        assert!(adaptive.contains(5_000));
    }

    /// Before the first hit the newest blocks go first, but only those the
    /// cache lets go; when none of the newest may leave, the leader
    /// chooses among the others.
    #[test]
    fn the_cold_start_respects_blocks_that_may_not_leave() {
        let mut adaptive = Adaptive::new(20);
        for key in 0..21 {
            adaptive.insert(key, Access::Normal);
        }
        // The newest (20) is pinned: the next newest goes (LIRS would
        // have taken its oldest HIR block, 18).
        assert_eq!(adaptive.evict(&mut |key| key != 20), Some(19));
        adaptive.insert(21, Access::Normal);
        // None of the newest COLD_LOOK_AT may leave: an old block goes.
        let victim = adaptive.evict(&mut |key| key < 3).expect("a victim");
        assert!(victim < 3, "evicted {victim}");
        assert_eq!(adaptive.len(), 20);
        assert_eq!(adaptive.evict(&mut |_| false), None);
    }

    /// Blocks 0..8 are LIR in LIRS and used again (proven), 8 and 9 came
    /// in after them; then LRU is made the leader with LIRS `behind` of its
    /// (decayed) hits, and block 10 needs room.
    fn victim_with_lirs_behind_by(behind: f64) -> u64 {
        let mut adaptive = Adaptive::new(10);
        for key in 0..8 {
            adaptive.insert(key, Access::Normal);
        }
        for key in 0..8 {
            adaptive.touch(key, Access::Normal);
        }
        adaptive.insert(8, Access::Normal);
        adaptive.insert(9, Access::Normal);
        adaptive.drain();
        assert!((0..8).all(|key| adaptive.members[LIRS].holds_proven(key)));
        assert!(!adaptive.members[LIRS].holds_proven(8));
        adaptive.leader = LRU;
        adaptive.hits = [0.0, 1000.0 * (1.0 - behind), 1000.0];
        adaptive.insert(10, Access::Normal);
        adaptive.evict(&mut |_| true).expect("a victim")
    }

    /// While LIRS's shadow is within `HEDGE_GAP` of LRU's, LRU passes over
    /// the blocks LIRS has proven; once LIRS is clearly behind, LRU evicts
    /// its oldest block as usual.
    #[test]
    fn a_close_runner_up_keeps_its_proven_blocks() {
        assert_eq!(victim_with_lirs_behind_by(HEDGE_GAP / 2.0), 8);
        assert_eq!(victim_with_lirs_behind_by(HEDGE_GAP * 2.0), 0);
    }

    /// Hedging passes over at most `HEDGE_LOOK` candidates, and never
    /// leaves the cache without a victim.
    #[test]
    fn hedging_looks_a_bounded_way_and_always_finds_a_victim() {
        let capacity = 3 * HEDGE_LOOK;
        let mut adaptive = Adaptive::new(capacity);
        let lir = capacity * 3 / 4;
        for key in 0..lir as u64 {
            adaptive.insert(key, Access::Normal);
        }
        for key in 0..lir as u64 {
            adaptive.touch(key, Access::Normal);
        }
        adaptive.drain();
        adaptive.leader = LRU;
        adaptive.hits = [0.0, 1000.0, 1000.0];
        // Every candidate is proven: the one after HEDGE_LOOK of them goes.
        adaptive.insert(1_000, Access::Normal);
        assert_eq!(adaptive.evict(&mut |_| true), Some(HEDGE_LOOK as u64));
        // Nothing LRU may evict is unproven, and fewer than HEDGE_LOOK may
        // go: hedging finds nothing, and the leader's own choice stands.
        assert_eq!(adaptive.evict(&mut |key| key == 3 || key == 5), Some(3));
    }

    /// Drop-behind: a prefetched block used once stays out of the members
    /// and goes before any of their blocks; used again, it joins them and
    /// is an ordinary block.
    #[test]
    fn a_prefetched_block_used_once_goes_first_and_joins_on_reuse() {
        let mut adaptive = Adaptive::new(8);
        for key in 0..4 {
            adaptive.insert(key, Access::Normal);
        }
        adaptive.touch(0, Access::Normal);
        for key in 10..14 {
            adaptive.insert(key, Access::Prefetch);
        }
        adaptive.touch(11, Access::Normal);
        adaptive.touch(12, Access::Normal);
        adaptive.touch(12, Access::Normal);
        adaptive.drain();
        for member in &adaptive.members {
            assert!(!member.contains(11), "{}: used once", member.name());
            assert!(member.contains(12), "{}: used twice", member.name());
        }
        assert!(adaptive.contains(11) && adaptive.contains(12));
        // 11 goes first, though 10 and 13 were never used: unused
        // prefetches wait for their reader while within the reserve.
        assert_eq!(adaptive.evict(&mut |_| true), Some(11));
        assert_eq!(adaptive.len(), 7);
        // Once used twice, a block is the members' to keep or evict like
        // any other: the next victim is a member block, not a guess.
        let victim = adaptive.evict(&mut |_| true);
        assert!(matches!(victim, Some(1..=3 | 12)), "got {victim:?}");
    }

    #[test]
    fn follows_lirs_where_reuse_distance_wins() {
        let trace = shifting_hot_sets_with_noise(11);
        let tinylfu = hit_ratio(&mut WTinyLfu::new(300), 300, &trace);
        let lirs = hit_ratio(&mut Lirs::new(300), 300, &trace);
        let mut adaptive = Adaptive::new(300);
        let ratio = hit_ratio(&mut adaptive, 300, &trace);
        assert!(lirs > tinylfu + 0.05, "lirs {lirs} tinylfu {tinylfu}");
        assert_eq!(adaptive.leader(), "lirs");
        assert!(
            ratio > tinylfu + 0.05,
            "adaptive {ratio}, lirs {lirs}, tinylfu {tinylfu}"
        );
    }

    #[test]
    fn leaves_lirs_where_it_collapses() {
        let trace = sweeps();
        let lirs = hit_ratio(&mut Lirs::new(1_000), 1_000, &trace);
        let mut adaptive = Adaptive::new(1_000);
        let ratio = hit_ratio(&mut adaptive, 1_000, &trace);
        assert!(lirs < 0.05, "lirs {lirs}");
        // LRU or W-TinyLFU with a whole-cache window: recency, either way.
        assert_ne!(adaptive.leader(), "lirs");
        assert!(ratio > 0.4, "adaptive {ratio}");
    }

    /// Touches held back for a batch change no decision: the same
    /// operations, once through hints (the cache's path, which batches) and
    /// once without (each touch applied at once), evict the same blocks in
    /// the same order and end with the same leader and resident set.
    #[test]
    fn batched_touches_make_the_same_decisions() {
        for seed in [3, 17, 40] {
            let mut rng = SimRng::new(seed);
            let mut batched = Adaptive::new(96);
            let mut direct = Adaptive::new(96);
            let mut hints: std::collections::HashMap<u64, Hint> = Default::default();
            let mut capacity = 96;
            let mut leaders = std::collections::BTreeSet::new();
            for step in 0..60_000u64 {
                // Phases that favour different members: a loop larger than
                // the cache, skewed popularity, and recency.
                let key = match (step / 10_000) % 3 {
                    0 => step % 130,
                    1 => rng.below(40).min(rng.below(600)),
                    _ => 1_000 + step / 3 % 200 + rng.below(8),
                };
                match rng.below(200) {
                    0 => {
                        batched.remove(key);
                        direct.remove(key);
                        hints.remove(&key);
                    }
                    1 => {
                        capacity = 48 + rng.below(96) as usize;
                        batched.set_capacity(capacity);
                        direct.set_capacity(capacity);
                    }
                    _ => {
                        let kind = rng.below(20);
                        if batched.contains(key) {
                            let access = if kind == 0 {
                                Access::UseOnce
                            } else {
                                Access::Normal
                            };
                            let hint = hints.entry(key).or_insert(Hint::NONE);
                            batched.touch_hinted(key, access, hint);
                            direct.touch(key, access);
                        } else {
                            let access = match kind {
                                0 => Access::UseOnce,
                                1 => Access::Prefetch,
                                _ => Access::Normal,
                            };
                            batched.insert(key, access);
                            direct.insert(key, access);
                            hints.insert(key, Hint::NONE);
                        }
                        let pinned = rng.below(7);
                        while batched.len() > capacity {
                            let may_evict = |k: u64| k % 7 != pinned;
                            let victim = batched.evict(&mut { may_evict });
                            assert_eq!(
                                victim,
                                direct.evict(&mut { may_evict }),
                                "seed {seed} step {step}"
                            );
                            let Some(victim) = victim else { break };
                            hints.remove(&victim);
                        }
                    }
                }
                assert_eq!(batched.len(), direct.len(), "seed {seed} step {step}");
                leaders.insert(direct.leader());
            }
            batched.drain();
            assert_eq!(batched.leader(), direct.leader(), "seed {seed}");
            for key in 0..1_300 {
                assert_eq!(
                    batched.contains(key),
                    direct.contains(key),
                    "seed {seed} key {key}"
                );
            }
            // The phases moved the lead, so switches were batched too.
            assert!(leaders.len() >= 2, "seed {seed}: only {leaders:?} led");
        }
    }

    #[test]
    fn both_members_keep_one_resident_set() {
        let seed = 23;
        let mut rng = SimRng::new(seed);
        let mut adaptive = Adaptive::new(64);
        let mut capacity = 64;
        for step in 0..40_000 {
            let key = rng.below(400);
            match rng.below(20) {
                0 => adaptive.remove(key),
                1 => {
                    capacity = 16 + rng.below(128) as usize;
                    adaptive.set_capacity(capacity);
                }
                _ => {
                    if adaptive.contains(key) {
                        let access = [Access::Normal, Access::UseOnce][rng.below(2) as usize];
                        adaptive.touch(key, access);
                    } else {
                        let access = [
                            Access::Normal,
                            Access::Normal,
                            Access::UseOnce,
                            Access::Prefetch,
                        ][rng.below(4) as usize];
                        adaptive.insert(key, access);
                    }
                    // Some blocks are pinned at each eviction.
                    let pinned = rng.below(400);
                    while adaptive.len() > capacity {
                        if adaptive.evict(&mut |k| k % 7 != pinned % 7).is_none() {
                            break;
                        }
                    }
                }
            }
            let [first, rest @ ..] = &adaptive.members;
            for other in rest {
                let name = other.name();
                assert_eq!(first.len(), other.len(), "seed {seed} step {step}: {name}");
                if step % 1_000 == 0 {
                    for k in 0..400 {
                        assert_eq!(
                            first.contains(k),
                            other.contains(k),
                            "seed {seed} step {step} key {k}: {name}"
                        );
                    }
                }
            }
        }
    }
}
