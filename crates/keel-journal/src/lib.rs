//! keel's redo journal: atomic, durable multi-block transactions.
//!
//! ```text
//! disk <- raid <- cache <- journal (this crate) <- {fs, kv}
//! ```
//!
//! The lecture's redo logging, step by step:
//!
//! | lecture | here |
//! |---|---|
//! | prepare: write all changes to the log | [`Transaction::write`] collects images; the group leader writes descriptors and images |
//! | commit: one write makes it durable | the commit record (crc32c over the whole transaction), then one flush per group |
//! | redo: copy changes to disk | images installed in the [`HomeStore`] (the buffer cache), written home later |
//! | garbage collection | [`Journal::checkpoint`]: home + flushed, then the superblock tail advances |
//! | recovery | [`Journal::open`]: scan from the tail, redo committed transactions, stop at the first incomplete one |
//! | "all access first looks in the log" | reads go through the home store, which holds committed images until they are home |
//!
//! ```
//! use keel_disk::MemDisk;
//! use keel_journal::{format_log, Journal, LogRegion, WriteBackStore};
//!
//! // The log in blocks 0..65 of one device, home blocks after it.
//! let disk = MemDisk::new(4096, 65 + 256);
//! let region = LogRegion { first_block: 0, block_count: 65 };
//! format_log(&disk, region)?;
//! let store = WriteBackStore::with_region(&disk, 65, 256);
//! let (journal, _recovery) = Journal::open(&disk, region, store)?;
//!
//! let mut txn = journal.begin();
//! txn.write(7, &[1u8; 4096])?;
//! txn.write(8, &[2u8; 4096])?;
//! let committed = txn.commit()?; // durable when this returns
//! assert!(journal.durable_lsn() >= committed.lsn);
//!
//! let mut block = vec![0u8; 4096];
//! journal.read(8, &mut block)?; // the latest committed version
//! assert_eq!(block, [2u8; 4096]);
//! journal.checkpoint()?; // home, flushed, log space reclaimed
//! # Ok::<(), keel_journal::JournalError>(())
//! ```
//!
//! Layout of the code: [`format`] (bytes, no I/O), [`recovery`] (decisions
//! and log arithmetic, no I/O), [`store`] (the home store contract), and
//! `journal` (the I/O edges: group commit, checkpoint, open). The format and
//! the recovery decision table are in `docs/journal.md`.

mod cache_store;
mod error;
pub mod format;
mod journal;
pub mod recovery;
pub mod store;

#[cfg(feature = "bench")]
pub mod bench;

pub use error::{JournalError, Result, StoreError};
pub use format::{Lsn, TxnId};
pub use journal::{
    format_log, format_log_with_epoch, inspect_log, Committed, Journal, JournalStats,
    JournalStatus, LogInspection, LogRegion, RecoveryReport, Transaction, TransactionSummary,
};
pub use recovery::StopReason;
pub use store::{HomeStore, WriteBackStore};
