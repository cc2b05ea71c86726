//! keel: a crash-safe storage stack.
//!
//! ```text
//! disk  <-  raid  <-  cache  <-  journal  <-  {fs, kv}  <-  cluster  <-  cli
//! ```
//!
//! This crate re-exports the layers so an embedded user needs one
//! dependency; with `default-features = false` it compiles none of the
//! command-line tool's dependencies. See `docs/ARCHITECTURE.md`.

pub use keel_cache as cache;
pub use keel_disk as disk;
pub use keel_journal as journal;
pub use keel_raid as raid;

pub use keel_disk::{BlockDevice, DiskError, FileDisk, MemDisk, SimDisk};
pub use keel_raid::{Volume, VolumeOptions};
