//! The buffer cache: keel's third layer.
//!
//! ```text
//! disk <- raid <- cache (this crate) <- journal <- {fs, kv} <- cluster <- cli
//! ```
//!
//! A [`Cache`] keeps blocks of any [`keel_disk::BlockDevice`] in memory and
//! is where the lecture's buffer-cache mechanisms live:
//!
//! * **Replacement** ([`policy`]): LRU as in the lecture; the scan-resistant
//!   default ([`adaptive`]) keeps W-TinyLFU (with an adaptive window), LIRS
//!   ([`lirs`]) and LRU over one resident set and lets whichever a
//!   mini-simulation shows ahead choose the victims (each is available
//!   alone, and S3-FIFO); a use-once hint ([`ReadHint::UseOnce`]).
//! * **Dynamic size**: [`Cache::resize`] grows or shrinks the cache while it
//!   runs (shrinking writes dirty blocks home before evicting them).
//! * **Read-ahead** ([`readahead`]): per-stream sequential detection, an
//!   adaptive window, background multi-block reads.
//! * **Delayed writes**: [`Cache::write`] returns once the cache has the
//!   bytes; a flusher writes dirty blocks home every `flush_interval` (30 s)
//!   and past a high-water mark, sorted and coalesced (the elevator);
//!   [`Cache::sync`] forces everything allowed home out and flushes the
//!   device.
//! * **Write ordering for the journal**: [`Cache::write_after`] tags a block
//!   with a journal position; it goes home only after
//!   [`Cache::set_durable_lsn`] reports that position durable.
//!
//! Contract (the rules `docs/cache.md` spells out):
//!
//! 1. A [`BlockRef`] pins its block and shares its bytes; a [`BlockMut`] pins
//!    it exclusively. A thread must not take a block exclusively (`modify`,
//!    `write`) while it holds a guard on that same block, nor call `sync` or
//!    `resize` while it holds any `BlockMut`.
//! 2. Nothing is durable until `sync` returns `Ok`; then every write that
//!    returned before `sync` was called, and is allowed home, is durable.
//! 3. A block written with `write_after(.., lsn)` is never written to the
//!    device before `set_durable_lsn(l)` with `l >= lsn`; `sync` skips it
//!    until then.
//! 4. A write-back error (background or foreground) is returned by the next
//!    `sync`; the block stays dirty in memory.
//! 5. Dropping the cache discards dirty blocks, as a crash would.

pub mod adaptive;
mod cache;
mod error;
mod extent;
mod links;
pub mod lirs;
pub mod policy;
pub mod readahead;

pub use cache::{BlockMut, BlockRef, Cache, CacheConfig, CacheStats, ReadHint};
pub use error::{CacheError, Result};
pub use policy::{Access, PolicyKind};
pub use readahead::{CacheView, ReadAheadConfig};

#[cfg(feature = "bench")]
pub mod bench;
