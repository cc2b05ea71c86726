//! Recovery decisions, without I/O: scan the log from the tail, decide for
//! each transaction whether it is committed, and plan the redo.
//!
//! The caller supplies a function that reads one log block by [`Lsn`]; every
//! decision is made here, so tests drive it with a vector of blocks. The
//! decision table (one row per [`StopReason`]) is in `docs/journal.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::format::{
    commit_checksum_of, descriptor_capacity, descriptor_entry, revoke_capacity, revoke_entry,
    unescape, BlockKind, CommitRecord, Header, HeaderParse, Lsn, Superblock, TxnId, ENTRY_ESCAPED,
};

/// Why the scan stopped where it did. Every reason is a normal end of the
/// log (a crash leaves exactly this kind of debris); none means corruption
/// of a committed transaction, because a committed transaction's blocks were
/// flushed before its commit returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The block where a transaction should start has no header: never
    /// written, an old image, or torn.
    NoHeader,
    /// A header of an earlier epoch: left from before the last recovery.
    OtherEpoch { found: u64 },
    /// A header of another sequence: left from an earlier lap of the log.
    OtherSequence { found: TxnId },
    /// A header whose kind or count cannot be right (torn or garbage).
    BadHeader { reason: String },
    /// Inside a transaction, a block that should be a header is not one of
    /// this transaction: the transaction was not completely written.
    Incomplete { reason: String },
    /// The commit record's checksum does not match the transaction: some
    /// block of it was torn or never written.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The transaction would extend past the log's capacity.
    PastLogEnd,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::NoHeader => write!(f, "no transaction header"),
            StopReason::OtherEpoch { found } => write!(f, "header of earlier epoch {found}"),
            StopReason::OtherSequence { found } => write!(f, "header of {found} (earlier lap)"),
            StopReason::BadHeader { reason } => write!(f, "bad header: {reason}"),
            StopReason::Incomplete { reason } => write!(f, "incomplete transaction: {reason}"),
            StopReason::ChecksumMismatch { stored, computed } => write!(
                f,
                "commit checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            StopReason::PastLogEnd => write!(f, "transaction runs past the log capacity"),
        }
    }
}

/// One committed transaction found by the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedTransaction {
    pub sequence: TxnId,
    /// Position of its first block.
    pub start: Lsn,
    /// Position just past its commit record (its LSN).
    pub end: Lsn,
    /// Home block and image, in log order.
    pub writes: Vec<(u64, Vec<u8>)>,
    pub revokes: Vec<u64>,
}

/// Everything the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOutcome {
    pub transactions: Vec<ScannedTransaction>,
    /// End of the last committed transaction: the new head and tail.
    pub end: Lsn,
    /// Sequence the next transaction will carry.
    pub next_sequence: TxnId,
    /// Why the scan stopped at `end`.
    pub stop: StopReason,
    /// A commit record past `end` saying the log was durable beyond `end`:
    /// `(its position, its durable-before position)`. Then the stop is not
    /// a crash's debris but damage to durable, committed transactions.
    pub durable_beyond_end: Option<(Lsn, Lsn)>,
}

/// Scans the log described by `superblock`, reading blocks through `read`.
/// Stops at the first transaction that is not completely and validly
/// written; read errors are returned as they are (a media error inside the
/// log is not a normal end of the log, so it is not silently treated as one).
pub fn scan_log<E>(
    superblock: &Superblock,
    mut read: impl FnMut(Lsn, &mut [u8]) -> Result<(), E>,
) -> Result<ScanOutcome, E> {
    let block_size = superblock.block_size as usize;
    let limit = superblock.tail.plus(superblock.log_blocks);
    let mut position = superblock.tail;
    let mut sequence = superblock.tail_sequence;
    let mut transactions = Vec::new();
    let mut block = vec![0u8; block_size];
    let stop = loop {
        match scan_transaction(superblock, position, sequence, limit, &mut block, &mut read)? {
            Ok(transaction) => {
                position = transaction.end;
                sequence = sequence.next();
                transactions.push(transaction);
            }
            Err(stop) => break stop,
        }
    };
    let durable_beyond_end = find_durable_beyond(superblock, position, &mut block, &mut read);
    Ok(ScanOutcome {
        transactions,
        end: position,
        next_sequence: sequence,
        stop,
        durable_beyond_end,
    })
}

/// Looks past the end of the scan for a commit record of this epoch that
/// was written when the log was already durable beyond `end`. A group is
/// written only after the previous group's flush returned, so such a record
/// proves the blocks at `end` were durable: they are damaged, not debris.
/// Debris of earlier laps cannot match: their positions are before the tail.
/// Read errors here are skipped (debris may sit on a bad sector).
fn find_durable_beyond<E>(
    superblock: &Superblock,
    end: Lsn,
    block: &mut [u8],
    read: &mut impl FnMut(Lsn, &mut [u8]) -> Result<(), E>,
) -> Option<(Lsn, Lsn)> {
    let limit = superblock.tail.plus(superblock.log_blocks);
    let mut position = end.plus(1);
    while position < limit {
        if read(position, block).is_ok() {
            if let HeaderParse::Header(header) = Header::parse(block) {
                if header.kind == BlockKind::Commit && header.epoch == superblock.epoch {
                    if let Some(record) = CommitRecord::parse(block) {
                        if record.durable_before > end && record.durable_before <= position {
                            return Some((position, record.durable_before));
                        }
                    }
                }
            }
        }
        position = position.plus(1);
    }
    None
}

type Scanned = Result<ScannedTransaction, StopReason>;

fn scan_transaction<E>(
    superblock: &Superblock,
    start: Lsn,
    sequence: TxnId,
    limit: Lsn,
    block: &mut [u8],
    read: &mut impl FnMut(Lsn, &mut [u8]) -> Result<(), E>,
) -> Result<Scanned, E> {
    let block_size = block.len();
    let mut position = start;
    let mut running = 0u32;
    let mut writes = Vec::new();
    let mut revokes = Vec::new();
    loop {
        if position >= limit {
            return Ok(Err(StopReason::PastLogEnd));
        }
        read(position, block)?;
        let first = position == start;
        let header = match Header::parse(block) {
            HeaderParse::Header(header) => header,
            HeaderParse::NotAHeader if first => return Ok(Err(StopReason::NoHeader)),
            HeaderParse::NotAHeader => {
                return Ok(Err(StopReason::Incomplete {
                    reason: format!("no header at {position}"),
                }))
            }
            HeaderParse::UnknownKind(kind) => {
                return Ok(Err(StopReason::BadHeader {
                    reason: format!("unknown kind {kind} at {position}"),
                }))
            }
        };
        if header.epoch != superblock.epoch {
            return Ok(Err(if first {
                StopReason::OtherEpoch {
                    found: header.epoch,
                }
            } else {
                StopReason::Incomplete {
                    reason: format!("epoch {} at {position}", header.epoch),
                }
            }));
        }
        if header.sequence != sequence {
            return Ok(Err(if first {
                StopReason::OtherSequence {
                    found: header.sequence,
                }
            } else {
                StopReason::Incomplete {
                    reason: format!("{} at {position}", header.sequence),
                }
            }));
        }
        let count = header.count as usize;
        match header.kind {
            BlockKind::Descriptor => {
                if count == 0 || count > descriptor_capacity(block_size) {
                    return Ok(Err(StopReason::BadHeader {
                        reason: format!("descriptor of {count} entries at {position}"),
                    }));
                }
                running = crc32c::crc32c_append(running, block);
                let entries: Vec<_> = (0..count).map(|i| descriptor_entry(block, i)).collect();
                position = position.plus(1);
                for entry in entries {
                    if entry.flags & !ENTRY_ESCAPED != 0 {
                        return Ok(Err(StopReason::BadHeader {
                            reason: format!("unknown entry flags {:#x}", entry.flags),
                        }));
                    }
                    if position >= limit {
                        return Ok(Err(StopReason::PastLogEnd));
                    }
                    let mut image = vec![0u8; block_size];
                    read(position, &mut image)?;
                    running = crc32c::crc32c_append(running, &image);
                    unescape(&mut image, entry.flags);
                    writes.push((entry.home_block, image));
                    position = position.plus(1);
                }
            }
            BlockKind::Revoke => {
                if count == 0 || count > revoke_capacity(block_size) {
                    return Ok(Err(StopReason::BadHeader {
                        reason: format!("revoke block of {count} entries at {position}"),
                    }));
                }
                running = crc32c::crc32c_append(running, block);
                revokes.extend((0..count).map(|i| revoke_entry(block, i)));
                position = position.plus(1);
            }
            BlockKind::Commit => {
                let blocks_before = position.0 - start.0;
                if count as u64 != blocks_before {
                    return Ok(Err(StopReason::Incomplete {
                        reason: format!(
                            "commit record counts {count} blocks, found {blocks_before}"
                        ),
                    }));
                }
                let computed = commit_checksum_of(running, block);
                let Some(record) = CommitRecord::parse(block) else {
                    return Ok(Err(StopReason::BadHeader {
                        reason: format!("commit record checksum at {position}"),
                    }));
                };
                let stored = record.transaction_checksum;
                if stored != computed {
                    return Ok(Err(StopReason::ChecksumMismatch { stored, computed }));
                }
                // This transaction is committed: it is redone.
                return Ok(Ok(ScannedTransaction {
                    sequence,
                    start,
                    end: position.plus(1),
                    writes,
                    revokes,
                }));
            }
        }
    }
}

/// One block to write home during redo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedoWrite<'a> {
    pub home_block: u64,
    pub image: &'a [u8],
    /// LSN of the transaction the image comes from.
    pub lsn: Lsn,
}

/// The redo plan: for every home block, the image of the last committed
/// transaction that wrote it, unless a later transaction revoked the block
/// (then the block is left as it is at home: it was freed and may have been
/// reused without the journal). Sorted by home block.
pub fn plan_redo(transactions: &[ScannedTransaction]) -> Vec<RedoWrite<'_>> {
    let mut last_revoke: HashMap<u64, TxnId> = HashMap::new();
    for transaction in transactions {
        for block in &transaction.revokes {
            last_revoke.insert(*block, transaction.sequence);
        }
    }
    let mut latest: BTreeMap<u64, (TxnId, RedoWrite<'_>)> = BTreeMap::new();
    for transaction in transactions {
        for (home_block, image) in &transaction.writes {
            latest.insert(
                *home_block,
                (
                    transaction.sequence,
                    RedoWrite {
                        home_block: *home_block,
                        image,
                        lsn: transaction.end,
                    },
                ),
            );
        }
    }
    latest
        .into_values()
        .filter(|(sequence, write)| {
            last_revoke
                .get(&write.home_block)
                .is_none_or(|revoked_in| revoked_in < sequence)
        })
        .map(|(_, write)| write)
        .collect()
}

/// The log's head/tail/sequence arithmetic, without I/O.
///
/// ```text
///   tail            head
///    |  committed,   |   free   ...wraps...
///    |  not yet home |
/// ```
/// `tail <= head <= tail + log_blocks`; the block of position `p` is
/// `p % log_blocks` of the log area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSpace {
    pub log_blocks: u64,
    pub tail: Lsn,
    pub tail_sequence: TxnId,
    pub head: Lsn,
    pub next_sequence: TxnId,
}

impl LogSpace {
    /// An empty log at `at`, whose next transaction is `sequence`.
    pub fn empty(log_blocks: u64, at: Lsn, sequence: TxnId) -> LogSpace {
        LogSpace {
            log_blocks,
            tail: at,
            tail_sequence: sequence,
            head: at,
            next_sequence: sequence,
        }
    }

    pub fn used(&self) -> u64 {
        self.head.0 - self.tail.0
    }

    pub fn free(&self) -> u64 {
        self.log_blocks - self.used()
    }

    /// Takes `blocks` at the head for transaction `next_sequence`; returns
    /// its sequence and start. The caller has checked `free() >= blocks`.
    pub fn append(&mut self, blocks: u64) -> (TxnId, Lsn) {
        assert!(
            blocks <= self.free(),
            "log overrun: {blocks} blocks with {} free",
            self.free()
        );
        let taken = (self.next_sequence, self.head);
        self.head = self.head.plus(blocks);
        self.next_sequence = self.next_sequence.next();
        taken
    }

    /// Everything up to the head is home: the whole log is free again.
    pub fn checkpointed(&mut self) {
        self.tail = self.head;
        self.tail_sequence = self.next_sequence;
    }

    /// Offset inside the log area of position `lsn`.
    pub fn area_offset(&self, lsn: Lsn) -> u64 {
        lsn.0 % self.log_blocks
    }

    /// The (at most two) contiguous runs of the log area that hold positions
    /// `start..start + blocks`: `(area offset, blocks)`.
    pub fn runs(&self, start: Lsn, blocks: u64) -> Vec<(u64, u64)> {
        assert!(blocks <= self.log_blocks);
        let offset = self.area_offset(start);
        let first = blocks.min(self.log_blocks - offset);
        let mut runs = vec![(offset, first)];
        if first < blocks {
            runs.push((0, blocks - first));
        }
        runs.retain(|(_, count)| *count > 0);
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_wraps_and_reclaims() {
        let mut space = LogSpace::empty(10, Lsn(0), TxnId(1));
        assert_eq!(space.append(4), (TxnId(1), Lsn(0)));
        assert_eq!(space.append(5), (TxnId(2), Lsn(4)));
        assert_eq!(space.free(), 1);
        space.checkpointed();
        assert_eq!(space.free(), 10);
        assert_eq!(space.tail_sequence, TxnId(3));
        let (_, start) = space.append(3);
        assert_eq!(start, Lsn(9));
        assert_eq!(space.runs(start, 3), vec![(9, 1), (0, 2)]);
        assert_eq!(space.runs(Lsn(20), 10), vec![(0, 10)]);
    }

    fn scanned(sequence: u64, writes: &[(u64, u8)], revokes: &[u64]) -> ScannedTransaction {
        ScannedTransaction {
            sequence: TxnId(sequence),
            start: Lsn(sequence * 10),
            end: Lsn(sequence * 10 + 5),
            writes: writes.iter().map(|(b, f)| (*b, vec![*f; 4])).collect(),
            revokes: revokes.to_vec(),
        }
    }

    #[test]
    fn redo_plan_takes_the_latest_image_and_honours_revokes() {
        let transactions = [
            scanned(1, &[(1, 10), (2, 20), (3, 30)], &[]),
            scanned(2, &[(2, 21)], &[3]), // 3 freed after it was logged
            scanned(3, &[(4, 40)], &[1]), // 1 freed
            scanned(4, &[(1, 11)], &[]),  // 1 reused through the journal
        ];
        let plan = plan_redo(&transactions);
        let blocks: Vec<(u64, u8, Lsn)> = plan
            .iter()
            .map(|w| (w.home_block, w.image[0], w.lsn))
            .collect();
        assert_eq!(
            blocks,
            vec![(1, 11, Lsn(45)), (2, 21, Lsn(25)), (4, 40, Lsn(35))]
        );
    }

    #[test]
    #[should_panic(expected = "log overrun")]
    fn space_refuses_overrun() {
        let mut space = LogSpace::empty(4, Lsn(0), TxnId(1));
        space.append(5);
    }
}
