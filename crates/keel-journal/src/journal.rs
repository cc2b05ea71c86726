//! The journal: transactions, group commit, checkpoint and recovery, with the
//! I/O at the edges of the decisions made in [`crate::recovery`].
//!
//! Write order of one group commit (the crash analysis is in `docs/journal.md`):
//!
//! 1. the leader encodes every queued transaction (descriptors, images,
//!    revokes, commit record) into one buffer and writes it at the head
//!    (one or two device writes when it wraps);
//! 2. one flush of the log device: **the commit point** of the whole group;
//! 3. the images are installed in the home store, in LSN order;
//! 4. the leader role passes to the oldest queued committer, and every
//!    committer of the group is woken with its LSN.
//!
//! Only the leader touches the head, so groups are written and installed
//! in LSN order; committers never wait on each other except through it.
//!
//! Checkpoint: `HomeStore::checkpoint_sync` (everything installed is home
//! and flushed), then the superblock with the new tail, then a flush of the
//! log device. Only after that flush is the log space reused.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use keel_disk::BlockDevice;

use crate::error::{JournalError, Result};
use crate::format::{
    encode_transaction, transaction_blocks, Lsn, Superblock, TxnId, MIN_BLOCK_SIZE,
};
use crate::recovery::{plan_redo, scan_log, LogSpace, ScanOutcome, StopReason};
use crate::store::HomeStore;

/// Where the log lives on its device: `block_count` blocks from
/// `first_block`. The first is the superblock, the rest the log area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRegion {
    pub first_block: u64,
    pub block_count: u64,
}

impl LogRegion {
    /// The whole device.
    pub fn whole(device: &dyn BlockDevice) -> LogRegion {
        LogRegion {
            first_block: 0,
            block_count: device.block_count(),
        }
    }

    /// Blocks of the log area (the region minus its superblock).
    pub fn log_blocks(&self) -> u64 {
        self.block_count.saturating_sub(1)
    }
}

/// A transaction that has committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub sequence: TxnId,
    /// Position just past its commit record; it is durable.
    pub lsn: Lsn,
}

/// What recovery did when the journal was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Epoch of the log that was scanned (the journal now runs in the next).
    pub scanned_epoch: u64,
    pub tail: Lsn,
    pub end: Lsn,
    /// Committed transactions found and redone.
    pub transactions: usize,
    pub first_sequence: TxnId,
    pub next_sequence: TxnId,
    /// Home blocks written by the redo.
    pub blocks_redone: usize,
    pub stop: StopReason,
}

/// Counters, for `keel inspect` and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub commits: u64,
    /// Group writes (one flush each).
    pub groups: u64,
    pub checkpoints: u64,
    pub log_blocks_written: u64,
}

/// A snapshot of the log's positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalStatus {
    pub epoch: u64,
    pub space: LogSpace,
    pub stats: JournalStats,
}

/// What a queued committer is told.
enum Slot {
    Waiting,
    /// Become the leader: write the next group.
    Lead,
    Done(Result<Vec<Committed>>),
}

/// Where one committer sleeps: each has its own, so finishing a group wakes
/// exactly the committers of that group (and one next leader), not everyone.
struct Waiter {
    slot: Mutex<Slot>,
    ready: Condvar,
}

impl Waiter {
    fn new() -> Arc<Waiter> {
        Arc::new(Waiter {
            slot: Mutex::new(Slot::Waiting),
            ready: Condvar::new(),
        })
    }

    fn set(&self, slot: Slot) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
        self.ready.notify_one();
    }

    fn wait(&self) -> Slot {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        while matches!(*slot, Slot::Waiting) {
            slot = self.ready.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::replace(&mut *slot, Slot::Waiting)
    }
}

/// One transaction's writes and revokes, as queued.
struct TransactionBody {
    writes: Vec<(u64, Arc<[u8]>)>,
    revokes: Vec<u64>,
    blocks: u64,
}

enum Request {
    /// One or more transactions, written consecutively in one group (each
    /// with its own sequence and commit record).
    Commit(Vec<TransactionBody>),
    Checkpoint,
}

struct Queued {
    request: Request,
    blocks: u64,
    waiter: Arc<Waiter>,
}

struct State {
    queue: VecDeque<Queued>,
    /// A thread is writing the log or checkpointing; only it touches the head.
    /// The role passes from leader to a queued committer, never to two.
    leader: bool,
    space: LogSpace,
    poisoned: Option<String>,
    stats: JournalStats,
}

/// A redo journal over a log region of `D`, redoing into home store `S`.
pub struct Journal<D: BlockDevice, S: HomeStore> {
    log: D,
    region: LogRegion,
    store: S,
    block_size: usize,
    epoch: u64,
    state: Mutex<State>,
}

fn read_superblock(log: &dyn BlockDevice, region: LogRegion) -> Result<Superblock> {
    let mut block = vec![0u8; log.block_size()];
    log.read_blocks(region.first_block, &mut block)?;
    Superblock::decode(&block).map_err(|problem| JournalError::Superblock {
        device: log.name().to_string(),
        block: region.first_block,
        problem,
    })
}

fn write_superblock(
    log: &dyn BlockDevice,
    region: LogRegion,
    superblock: &Superblock,
) -> Result<()> {
    let mut block = vec![0u8; log.block_size()];
    superblock.encode(&mut block);
    // The superblock fields lie in the first sector, which a crash never tears.
    log.write_blocks(region.first_block, &block)?;
    Ok(())
}

fn check_region(log: &dyn BlockDevice, region: LogRegion) -> Result<()> {
    let geometry = |reason: String| JournalError::Geometry {
        device: log.name().to_string(),
        reason,
    };
    if log.block_size() < MIN_BLOCK_SIZE || log.block_size() % MIN_BLOCK_SIZE != 0 {
        return Err(geometry(format!("block size {}", log.block_size())));
    }
    if region.block_count < 3 {
        return Err(geometry(format!(
            "log region of {} blocks (needs at least 3)",
            region.block_count
        )));
    }
    match region.first_block.checked_add(region.block_count) {
        Some(end) if end <= log.block_count() => Ok(()),
        _ => Err(geometry(format!(
            "log region {}+{} past the end of the device ({} blocks)",
            region.first_block,
            region.block_count,
            log.block_count()
        ))),
    }
}

fn check_geometry<S: HomeStore>(
    log: &dyn BlockDevice,
    region: LogRegion,
    superblock: &Superblock,
    store: &S,
) -> Result<()> {
    let block_size = log.block_size();
    let geometry = |reason: String| JournalError::Geometry {
        device: log.name().to_string(),
        reason,
    };
    if superblock.block_size as usize != block_size {
        return Err(geometry(format!(
            "superblock block size {}, device block size {block_size}",
            superblock.block_size
        )));
    }
    if superblock.log_blocks != region.log_blocks() {
        return Err(geometry(format!(
            "superblock says {} log blocks, region has {}",
            superblock.log_blocks,
            region.log_blocks()
        )));
    }
    if store.block_size() != block_size {
        return Err(geometry(format!(
            "home store block size {} differs from the log's {block_size}",
            store.block_size()
        )));
    }
    Ok(())
}

/// Recovery: scan, redo into the store, make the redo durable, then start
/// the next epoch with an empty log at the end of the scan.
fn recover<S: HomeStore>(
    log: &dyn BlockDevice,
    region: LogRegion,
    superblock: &Superblock,
    store: &S,
) -> Result<(LogSpace, RecoveryReport)> {
    let area = region.first_block + 1;
    let log_blocks = superblock.log_blocks;
    let outcome: ScanOutcome = scan_log(superblock, |lsn, buf| {
        log.read_blocks(area + lsn.0 % log_blocks, buf)
    })?;
    if outcome.end < superblock.head {
        return Err(JournalError::LostLog {
            device: log.name().to_string(),
            found: outcome.end,
            expected: superblock.head,
        });
    }
    if let Some((_, durable_before)) = outcome.durable_beyond_end {
        return Err(JournalError::LostLog {
            device: log.name().to_string(),
            found: outcome.end,
            expected: durable_before,
        });
    }
    let redo = plan_redo(&outcome.transactions);
    for write in &redo {
        if write.home_block >= store.block_count() {
            return Err(JournalError::BlockOutOfRange {
                block: write.home_block,
                block_count: store.block_count(),
            });
        }
        store
            .install(write.home_block, write.image, write.lsn)
            .map_err(|e| JournalError::Store(Box::new(e)))?;
    }
    // Redo is complete once the images are home and flushed; only then may
    // the superblock forget them. A crash before this point redoes again.
    store
        .checkpoint_sync()
        .map_err(|e| JournalError::Store(Box::new(e)))?;
    let space = LogSpace::empty(log_blocks, outcome.end, outcome.next_sequence);
    write_superblock(
        log,
        region,
        &Superblock {
            epoch: superblock.epoch + 1,
            tail: space.tail,
            tail_sequence: space.tail_sequence,
            head: space.head,
            ..*superblock
        },
    )?;
    // IMPORTANT: the new epoch must be durable before any block of it is
    // written, so debris of the old epoch is never read as new.
    log.flush()?;
    let report = RecoveryReport {
        scanned_epoch: superblock.epoch,
        tail: superblock.tail,
        end: outcome.end,
        transactions: outcome.transactions.len(),
        first_sequence: superblock.tail_sequence,
        next_sequence: outcome.next_sequence,
        blocks_redone: redo.len(),
        stop: outcome.stop,
    };
    Ok((space, report))
}

/// Formats a log region: an empty log whose epoch is fresh, so nothing left
/// on the region from an earlier journal can be mistaken for a transaction.
pub fn format_log(log: &dyn BlockDevice, region: LogRegion) -> Result<()> {
    let old_epoch = read_superblock(log, region).map(|s| s.epoch).unwrap_or(0);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format_log_with_epoch(log, region, old_epoch.saturating_add(1).max(clock))
}

/// [`format_log`] with a given epoch (for deterministic tests). The epoch
/// must differ from every epoch an earlier journal on this region used.
pub fn format_log_with_epoch(log: &dyn BlockDevice, region: LogRegion, epoch: u64) -> Result<()> {
    check_region(log, region)?;
    let superblock = Superblock {
        block_size: log.block_size() as u32,
        log_blocks: region.log_blocks(),
        epoch,
        tail: Lsn(0),
        tail_sequence: TxnId(1),
        head: Lsn(0),
    };
    write_superblock(log, region, &superblock)?;
    // IMPORTANT: the log exists only once its superblock is durable.
    log.flush()?;
    Ok(())
}

/// One transaction as [`inspect_log`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionSummary {
    pub sequence: TxnId,
    pub start: Lsn,
    pub end: Lsn,
    pub home_blocks: Vec<u64>,
    pub revoked_blocks: Vec<u64>,
}

/// What the log holds, read without changing anything (for `keel inspect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInspection {
    pub superblock: Superblock,
    /// Committed transactions a recovery would redo, in order.
    pub transactions: Vec<TransactionSummary>,
    pub end: Lsn,
    pub stop: StopReason,
    /// Set when the log is damaged (see `docs/journal.md`, row 15).
    pub durable_beyond_end: Option<(Lsn, Lsn)>,
}

/// Reads the superblock and scans the log, writing nothing.
pub fn inspect_log(log: &dyn BlockDevice, region: LogRegion) -> Result<LogInspection> {
    check_region(log, region)?;
    let superblock = read_superblock(log, region)?;
    let area = region.first_block + 1;
    let log_blocks = superblock.log_blocks;
    let outcome = scan_log(&superblock, |lsn, buf| {
        log.read_blocks(area + lsn.0 % log_blocks, buf)
    })?;
    Ok(LogInspection {
        superblock,
        transactions: outcome
            .transactions
            .iter()
            .map(|t| TransactionSummary {
                sequence: t.sequence,
                start: t.start,
                end: t.end,
                home_blocks: t.writes.iter().map(|(block, _)| *block).collect(),
                revoked_blocks: t.revokes.clone(),
            })
            .collect(),
        end: outcome.end,
        stop: outcome.stop,
        durable_beyond_end: outcome.durable_beyond_end,
    })
}

impl<D: BlockDevice, S: HomeStore> Journal<D, S> {
    /// Opens a formatted log and recovers: redoes every committed transaction
    /// into `store`, checkpoints, and starts a new epoch. Safe to repeat after
    /// a crash at any point (recovery is idempotent).
    pub fn open(log: D, region: LogRegion, store: S) -> Result<(Journal<D, S>, RecoveryReport)> {
        check_region(&log, region)?;
        let superblock = read_superblock(&log, region)?;
        check_geometry(&log, region, &superblock, &store)?;
        let block_size = log.block_size();
        let (space, report) = recover(&log, region, &superblock, &store)?;
        let epoch = superblock.epoch + 1;
        let journal = Journal {
            log,
            region,
            store,
            block_size,
            epoch,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                leader: false,
                space,
                poisoned: None,
                stats: JournalStats::default(),
            }),
        };
        Ok((journal, report))
    }

    /// Checkpoints (everything home, the log empty) and closes the journal,
    /// so the next open has nothing to redo.
    pub fn close(self) -> Result<()> {
        self.checkpoint()
    }

    /// Starts a transaction. Nothing is written until it commits.
    pub fn begin(&self) -> Transaction<'_, D, S> {
        Transaction {
            journal: self,
            writes: BTreeMap::new(),
            revokes: BTreeSet::new(),
        }
    }

    /// Reads the latest committed version of a home block.
    pub fn read(&self, block: u64, buf: &mut [u8]) -> Result<()> {
        self.check_block(block, buf.len())?;
        self.store
            .read(block, buf)
            .map_err(|e| JournalError::Store(Box::new(e)))
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn log_device(&self) -> &D {
        &self.log
    }

    pub fn region(&self) -> LogRegion {
        self.region
    }

    /// The durable end of the log: every transaction whose LSN is at or
    /// before it is durable (the position a cache's write-ahead rule checks).
    pub fn durable_lsn(&self) -> Lsn {
        self.lock().space.head
    }

    pub fn status(&self) -> JournalStatus {
        let state = self.lock();
        JournalStatus {
            epoch: self.epoch,
            space: state.space,
            stats: state.stats,
        }
    }

    /// Writes every committed block home and frees the whole log. Goes
    /// through the commit queue, so it runs between two groups.
    pub fn checkpoint(&self) -> Result<()> {
        self.submit(Request::Checkpoint, 0).map(|_| ())
    }

    /// Commits several transactions in one group, in the order given: one
    /// log write and one flush for all of them (unless they exceed the log,
    /// which is refused). Each keeps its own sequence and commit record, so
    /// a crash keeps a prefix of them. Returns when all are durable.
    pub fn commit_all(&self, transactions: Vec<Transaction<'_, D, S>>) -> Result<Vec<Committed>> {
        let bodies: Vec<TransactionBody> = transactions
            .into_iter()
            .map(|transaction| {
                assert!(
                    std::ptr::eq(transaction.journal, self),
                    "commit_all of a transaction begun on another journal"
                );
                transaction.into_body()
            })
            .collect();
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let blocks = bodies.iter().map(|body| body.blocks).sum();
        self.submit(Request::Commit(bodies), blocks)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_block(&self, block: u64, len: usize) -> Result<()> {
        if len != self.block_size {
            return Err(JournalError::WrongImageSize {
                block,
                len,
                block_size: self.block_size,
            });
        }
        if block >= self.store.block_count() {
            return Err(JournalError::BlockOutOfRange {
                block,
                block_count: self.store.block_count(),
            });
        }
        Ok(())
    }

    /// Only the leader calls this; it owns `space` until it gives up the role.
    fn checkpoint_as_leader(&self, space: &mut LogSpace) -> Result<()> {
        self.store
            .checkpoint_sync()
            .map_err(|e| JournalError::Store(Box::new(e)))?;
        let mut advanced = *space;
        advanced.checkpointed();
        write_superblock(
            &self.log,
            self.region,
            &Superblock {
                block_size: self.block_size as u32,
                log_blocks: advanced.log_blocks,
                epoch: self.epoch,
                tail: advanced.tail,
                tail_sequence: advanced.tail_sequence,
                head: advanced.head,
            },
        )?;
        // IMPORTANT: the tail moves only when this flush returns; the log
        // blocks behind it are overwritten only after it.
        self.log.flush()?;
        *space = advanced;
        Ok(())
    }

    fn submit(&self, request: Request, blocks: u64) -> Result<Vec<Committed>> {
        let waiter = Waiter::new();
        let mut state = self.lock();
        if blocks > state.space.log_blocks {
            return Err(JournalError::TransactionTooLarge {
                blocks,
                log_blocks: state.space.log_blocks,
            });
        }
        if let Some(reason) = &state.poisoned {
            return Err(JournalError::Poisoned {
                reason: reason.clone(),
            });
        }
        state.queue.push_back(Queued {
            request,
            blocks,
            waiter: waiter.clone(),
        });
        if !state.leader {
            state.leader = true;
            drop(state);
            return self.lead(&waiter);
        }
        drop(state);
        match waiter.wait() {
            Slot::Done(result) => result,
            Slot::Lead => self.lead(&waiter),
            Slot::Waiting => unreachable!("wait returns only a decided slot"),
        }
    }

    /// Runs as leader: writes groups until this committer's own request is
    /// done, then hands the role to the oldest queued committer, if any.
    fn lead(&self, mine: &Arc<Waiter>) -> Result<Vec<Committed>> {
        loop {
            // Let committers just woken by the previous group queue their
            // next transactions, so this group carries them too.
            std::thread::yield_now();
            let mut state = self.lock();
            debug_assert!(state.leader);
            if let Some(reason) = state.poisoned.clone() {
                // Everyone queued fails; nothing more is written.
                let queued: Vec<Queued> = state.queue.drain(..).collect();
                state.leader = false;
                drop(state);
                for queued in queued {
                    queued.waiter.set(Slot::Done(Err(JournalError::Poisoned {
                        reason: reason.clone(),
                    })));
                }
                return self.take_done(mine);
            }
            let (batch, batch_blocks) = take_group(&mut state);
            let mut space = state.space;
            drop(state);

            let mut checkpoints = 0;
            let result = self.write_group(&batch, batch_blocks, &mut space, &mut checkpoints);

            let mut state = self.lock();
            let results =
                settle_group(&mut state, &batch, batch_blocks, result, space, checkpoints);
            let mine_done = batch.iter().any(|q| Arc::ptr_eq(&q.waiter, mine));
            let next_leader = if mine_done {
                let next = state.queue.front().map(|q| q.waiter.clone());
                state.leader = next.is_some();
                next
            } else {
                None // still queued: keep leading
            };
            drop(state);
            // The next leader first, so its group's write overlaps the
            // wake-ups of this group (this group is installed already).
            if let Some(next) = next_leader {
                next.set(Slot::Lead);
            }
            for (queued, result) in batch.iter().zip(results) {
                queued.waiter.set(Slot::Done(result));
            }
            if mine_done {
                return self.take_done(mine);
            }
        }
    }

    fn take_done(&self, mine: &Waiter) -> Result<Vec<Committed>> {
        match mine.wait() {
            Slot::Done(result) => result,
            _ => unreachable!("a leader's own request is decided before it returns"),
        }
    }

    fn write_group(
        &self,
        batch: &[Queued],
        batch_blocks: u64,
        space: &mut LogSpace,
        checkpoints: &mut u64,
    ) -> Result<Vec<Vec<Committed>>> {
        if space.free() < batch_blocks {
            // A full log waits for a checkpoint; it never fails the commit.
            self.checkpoint_as_leader(space)?;
            *checkpoints += 1;
        }
        let mut planned = *space;
        let group_start = planned.head;
        let mut buffer = Vec::with_capacity(batch_blocks as usize * self.block_size);
        let mut committed = Vec::with_capacity(batch.len());
        for queued in batch {
            let Request::Commit(bodies) = &queued.request else {
                // A checkpoint request: done after the group.
                committed.push(Vec::new());
                continue;
            };
            let mut mine = Vec::with_capacity(bodies.len());
            for body in bodies {
                let (sequence, start) = planned.append(body.blocks);
                let writes: Vec<(u64, &[u8])> = body
                    .writes
                    .iter()
                    .map(|(block, image)| (*block, &image[..]))
                    .collect();
                let blocks = encode_transaction(
                    &mut buffer,
                    self.block_size,
                    self.epoch,
                    sequence,
                    &writes,
                    &body.revokes,
                    group_start,
                );
                assert_eq!(blocks, body.blocks, "encoded size of {sequence}");
                mine.push(Committed {
                    sequence,
                    lsn: start.plus(blocks),
                });
            }
            committed.push(mine);
        }
        let area = self.region.first_block + 1;
        let mut offset_bytes = 0;
        let runs = if batch_blocks > 0 {
            planned.runs(group_start, batch_blocks)
        } else {
            Vec::new()
        };
        for (area_offset, count) in runs {
            let len = count as usize * self.block_size;
            self.log.write_blocks(
                area + area_offset,
                &buffer[offset_bytes..offset_bytes + len],
            )?;
            offset_bytes += len;
        }
        if batch_blocks > 0 {
            // COMMIT POINT: when this flush returns, every commit record of the
            // group is durable, and so is every transaction in it.
            self.log.flush()?;
        }
        *space = planned;
        let mut checkpoint_requested = false;
        for (queued, committed) in batch.iter().zip(&committed) {
            match &queued.request {
                Request::Commit(bodies) => {
                    for (body, committed) in bodies.iter().zip(committed) {
                        for (block, image) in &body.writes {
                            self.store
                                .install(*block, image, committed.lsn)
                                .map_err(|e| JournalError::Store(Box::new(e)))?;
                        }
                    }
                }
                Request::Checkpoint => checkpoint_requested = true,
            }
        }
        if checkpoint_requested {
            self.checkpoint_as_leader(space)?;
            *checkpoints += 1;
        }
        Ok(committed)
    }
}

/// Takes the oldest queued requests that fit in the log together: the next
/// group. Never empty when the queue is not (no request exceeds the log).
fn take_group(state: &mut State) -> (Vec<Queued>, u64) {
    let log_blocks = state.space.log_blocks;
    let mut batch = Vec::new();
    let mut batch_blocks = 0;
    while let Some(front) = state.queue.front() {
        if batch_blocks + front.blocks > log_blocks {
            break;
        }
        batch_blocks += front.blocks;
        batch.extend(state.queue.pop_front());
    }
    (batch, batch_blocks)
}

/// Records the outcome of a group in the shared state and returns each
/// request's result.
fn settle_group(
    state: &mut State,
    batch: &[Queued],
    batch_blocks: u64,
    result: Result<Vec<Vec<Committed>>>,
    space: LogSpace,
    checkpoints: u64,
) -> Vec<Result<Vec<Committed>>> {
    match result {
        Ok(committed) => {
            let commits = batch
                .iter()
                .map(|q| match &q.request {
                    Request::Commit(bodies) => bodies.len() as u64,
                    Request::Checkpoint => 0,
                })
                .sum::<u64>();
            state.space = space;
            state.stats.commits += commits;
            state.stats.groups += (commits > 0) as u64;
            state.stats.log_blocks_written += batch_blocks;
            state.stats.checkpoints += checkpoints;
            committed.into_iter().map(Ok).collect()
        }
        Err(error) => {
            // After a failed write or flush nothing is known about the log's
            // unflushed blocks, so the journal stops (as the device does).
            let reason = error.to_string();
            state.poisoned = Some(reason.clone());
            let mut error = Some(error);
            batch
                .iter()
                .map(|_| match error.take() {
                    Some(error) => Err(error),
                    None => Err(JournalError::Poisoned {
                        reason: reason.clone(),
                    }),
                })
                .collect()
        }
    }
}

/// A transaction: a set of block images and revocations that commit together
/// or not at all. Dropping it without committing aborts it.
pub struct Transaction<'j, D: BlockDevice, S: HomeStore> {
    journal: &'j Journal<D, S>,
    writes: BTreeMap<u64, Arc<[u8]>>,
    revokes: BTreeSet<u64>,
}

impl<D: BlockDevice, S: HomeStore> Transaction<'_, D, S> {
    /// Sets the new contents of `block` (a whole block).
    pub fn write(&mut self, block: u64, data: &[u8]) -> Result<()> {
        self.journal.check_block(block, data.len())?;
        // Writing a block again cancels a revoke of it in this transaction.
        self.revokes.remove(&block);
        self.writes.insert(block, Arc::from(data));
        Ok(())
    }

    /// Declares `block` freed: logged images of it from earlier transactions
    /// must not be replayed over whatever it is reused for. Also drops this
    /// transaction's own write of it.
    pub fn revoke(&mut self, block: u64) -> Result<()> {
        self.journal.check_block(block, self.journal.block_size)?;
        self.writes.remove(&block);
        self.revokes.insert(block);
        Ok(())
    }

    /// Reads `block` as this transaction sees it: its own write, else the
    /// latest committed version.
    pub fn read(&self, block: u64, buf: &mut [u8]) -> Result<()> {
        if let Some(image) = self.writes.get(&block) {
            self.journal.check_block(block, buf.len())?;
            buf.copy_from_slice(image);
            return Ok(());
        }
        self.journal.read(block, buf)
    }

    /// Number of blocks written so far.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.revokes.is_empty()
    }

    /// Commits: returns only when the transaction is durable in the log.
    /// Concurrent commits share one log write and one flush (group commit).
    pub fn commit(self) -> Result<Committed> {
        let journal = self.journal;
        let body = self.into_body();
        let blocks = body.blocks;
        let mut committed = journal.submit(Request::Commit(vec![body]), blocks)?;
        Ok(committed.remove(0))
    }

    fn into_body(self) -> TransactionBody {
        TransactionBody {
            blocks: transaction_blocks(
                self.writes.len(),
                self.revokes.len(),
                self.journal.block_size,
            ),
            writes: self.writes.into_iter().collect(),
            revokes: self.revokes.into_iter().collect(),
        }
    }

    /// Discards the transaction; nothing of it was written anywhere.
    pub fn abort(self) {}
}
