use keel_disk::DiskError;

use crate::format::{Lsn, SuperblockProblem};

/// Result of a journal operation.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// The error a [`HomeStore`](crate::HomeStore) reports, boxed at the journal
/// boundary so any store (the write-back store here, the buffer cache) fits.
pub type StoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the journal can report. Each variant names the device, block
/// or log position involved.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The log device failed.
    #[error("journal log: {0}")]
    Disk(#[from] DiskError),
    /// The home store failed.
    #[error("journal home store: {0}")]
    Store(#[source] StoreError),
    /// The log superblock cannot be used.
    #[error("{device}: journal superblock at block {block}: {problem}")]
    Superblock {
        device: String,
        block: u64,
        problem: SuperblockProblem,
    },
    /// The superblock does not describe this region or device.
    #[error("{device}: journal geometry mismatch: {reason}")]
    Geometry { device: String, reason: String },
    /// The scan stopped at `found`, but the log is known to have been durable
    /// up to `expected` (from the superblock, or from a later commit record):
    /// committed transactions are damaged.
    #[error("{device}: log ends at {found} but was durable up to {expected}; committed transactions are damaged or unreadable")]
    LostLog {
        device: String,
        found: Lsn,
        expected: Lsn,
    },
    /// A logged transaction names a block the home store does not have.
    #[error("logged block {block} is outside the home store ({block_count} blocks)")]
    BlockOutOfRange { block: u64, block_count: u64 },
    /// A block image of the wrong size.
    #[error("image of block {block} is {len} bytes, the block size is {block_size}")]
    WrongImageSize {
        block: u64,
        len: usize,
        block_size: usize,
    },
    /// The transaction cannot fit in the log even when it is empty.
    #[error("transaction needs {blocks} log blocks, the log has {log_blocks}")]
    TransactionTooLarge { blocks: u64, log_blocks: u64 },
    /// An earlier log write, flush or install failed; the journal refuses
    /// further work until it is reopened (and recovered).
    #[error("journal stopped after an earlier failure ({reason}); reopen to recover")]
    Poisoned { reason: String },
}
