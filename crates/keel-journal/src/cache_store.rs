//! The buffer cache as the journal's home store: the real stack,
//! `journal -> cache -> volume`.
//!
//! * `install(block, image, lsn)`: the transaction is already durable in the
//!   log, so the cache is told the durable position first and then receives
//!   the image as a dirty block under the write-ahead rule (`write_after`):
//!   it can go home at the cache's convenience (flusher, eviction, sync).
//! * `read`: the cache holds every installed image until it is home, so a
//!   read through it sees the latest committed version ("all access first
//!   looks in the log").
//! * `checkpoint_sync`: `Cache::sync` writes every dirty block home and
//!   flushes the device; only then does the journal advance its tail.
//!
//! The cache must serve only the home blocks: the log region is written by
//! the journal directly and must not be cached (use a
//! [`keel_disk::Partition`] for each when both live on one volume).

use keel_cache::{Cache, CacheError, ReadHint};

use crate::format::Lsn;
use crate::store::HomeStore;

impl HomeStore for Cache {
    type Error = CacheError;

    fn block_size(&self) -> usize {
        Cache::block_size(self)
    }

    fn block_count(&self) -> u64 {
        Cache::block_count(self)
    }

    fn read(&self, block: u64, buf: &mut [u8]) -> Result<(), CacheError> {
        self.read_into(block, ReadHint::Normal, buf)
    }

    fn install(&self, block: u64, data: &[u8], lsn: Lsn) -> Result<(), CacheError> {
        // The journal installs only durable transactions, in LSN order.
        self.set_durable_lsn(lsn.0);
        self.write_after(block, data, lsn.0)
    }

    fn checkpoint_sync(&self) -> Result<(), CacheError> {
        self.sync()
    }
}
