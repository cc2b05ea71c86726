//! Checksummed volumes: the layer between the disks and the buffer cache.
//!
//! A [`Volume`] stacks N member disks (plus hot spares) into one logical
//! [`BlockDevice`](keel_disk::BlockDevice) at one of three levels:
//! `single`, `raid1` (N-way mirror) or `raid5` (rotating parity). Every data
//! block on every member is vouched for by a crc32c in that member's
//! checksum table, so every read is verified: a block that fails (bad
//! checksum, unreadable sector) is rebuilt from a mirror or from parity,
//! checked against the checksum it should have, and rewritten. What cannot
//! be repaired is an error naming the disk and block, never data.
//!
//! A write-intent bitmap, on stable storage before any write it announces,
//! marks the regions whose data, checksums and parity may disagree after a
//! crash; assembly resyncs exactly those. That closes the RAID-5 write hole
//! for a crash with all members present, and keeps a crash from making good
//! data look corrupt. See `docs/integrity.md` for the format and the rules.

mod bitmap;
mod error;
pub mod format;
pub mod layout;
mod member;
mod volume;
pub mod xor;

pub use error::{RaidError, Result};
pub use format::{Layout, Level, BLOCK_SIZE};
pub use volume::{
    CreateSpec, DiskStatus, MemberDisk, ScrubReport, Volume, VolumeOptions, VolumeState,
    VolumeStatus, DEFAULT_REGION_BLOCKS, MANIFEST,
};
