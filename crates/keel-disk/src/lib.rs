//! Block devices: the bottom layer of keel.
//!
//! ```text
//! disk (this crate) <- raid <- cache <- journal <- {fs, kv} <- cluster <- cli
//! ```
//!
//! Everything above talks to storage through [`BlockDevice`], a narrow trait of
//! five operations whose guarantees are written on each method. Three devices
//! implement it:
//!
//! * [`FileDisk`]: a disk image file or a real block device, with `pread`/`pwrite`,
//!   `fdatasync` as the durability barrier and optional `O_DIRECT`.
//! * [`MemDisk`]: a vector of bytes, for fast tests.
//! * [`SimDisk`]: a seeded fault model. It keeps the durable image apart from
//!   the writes not yet flushed, so [`SimDisk::crash`] can build any post-crash
//!   image a real disk could leave (any subset of unflushed writes, in any
//!   order, torn at 512-byte sectors), and it injects latent sector errors, bit
//!   rot, misdirected writes and fail-stop. Every crash test in keel runs on it.
//!
//! The fault model these devices promise (and that every layer above assumes)
//! is written down in `docs/fault-model.md`.

mod error;
mod file;
mod mem;
mod partition;
pub mod sim;

pub use error::{DiskError, Result};
pub use file::{FileDisk, FileDiskOptions};
pub use mem::MemDisk;
pub use partition::Partition;
pub use sim::{SimDisk, SimRng};

/// Size of the unit a disk writes atomically: a write may be torn at this
/// granularity by a crash, never inside it.
pub const SECTOR_SIZE: usize = 512;

/// The block size keel uses everywhere above the disk layer.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

/// A device of fixed-size blocks.
///
/// Contract, which every implementation keeps and every layer above relies on:
///
/// * A block is `block_size()` bytes; the device has `block_count()` of them,
///   numbered from 0. Both never change while the device is open.
/// * `read_blocks` / `write_blocks` move `buf.len() / block_size()` consecutive
///   blocks starting at `start`; `buf.len()` must be a non-zero multiple of the
///   block size, and the range must lie inside the device, else the call fails
///   with [`DiskError::OutOfRange`] or [`DiskError::Misaligned`] and touches
///   nothing.
/// * A read returns the latest data written to each block, flushed or not.
/// * A write that returned `Ok` is **not** durable: a crash may drop it, or
///   keep any subset of its sectors ([`SECTOR_SIZE`]), in any order relative
///   to other unflushed writes.
/// * [`flush`](BlockDevice::flush) is the durability barrier: when it returns
///   `Ok`, every write that returned before the flush began is on stable
///   storage. When it fails, nothing may be assumed about the unflushed
///   writes, and the device refuses all later I/O ([`DiskError::Poisoned`]):
///   after a failed fsync the kernel may have dropped dirty pages, so
///   retrying would report success for lost data.
/// * All methods take `&self` and are safe to call from many threads;
///   concurrent writes to the same block leave one of them.
pub trait BlockDevice: Send + Sync {
    /// A human-readable name (usually a path) used in every error message.
    fn name(&self) -> &str;

    /// Size of one block in bytes (a multiple of [`SECTOR_SIZE`]).
    fn block_size(&self) -> usize;

    /// Number of blocks on the device.
    fn block_count(&self) -> u64;

    /// Reads consecutive blocks starting at `start` into `buf`.
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes consecutive blocks starting at `start` from `buf`. Not durable
    /// until the next successful [`flush`](BlockDevice::flush).
    fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<()>;

    /// Makes every earlier write durable (see the trait documentation).
    fn flush(&self) -> Result<()>;

    /// Reads consecutive blocks starting at `start` into several buffers in
    /// turn (scatter), as one request where the device can. Each buffer is a
    /// whole number of blocks.
    fn read_blocks_vectored(&self, start: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        let mut block = start;
        for buf in bufs.iter_mut() {
            self.read_blocks(block, buf)?;
            block += (buf.len() / self.block_size()) as u64;
        }
        Ok(())
    }

    /// Writes several buffers to consecutive blocks starting at `start`
    /// (gather), as one request where the device can. Same durability as
    /// [`write_blocks`](BlockDevice::write_blocks).
    fn write_blocks_vectored(&self, start: u64, bufs: &[&[u8]]) -> Result<()> {
        let mut block = start;
        for buf in bufs {
            self.write_blocks(block, buf)?;
            block += (buf.len() / self.block_size()) as u64;
        }
        Ok(())
    }

    /// Total size in bytes.
    fn size_bytes(&self) -> u64 {
        self.block_count() * self.block_size() as u64
    }
}

/// Checks a request against the device geometry; shared by all devices so
/// every one rejects bad requests with the same errors.
pub fn check_request(
    device: &dyn BlockDevice,
    start: u64,
    len: usize,
) -> Result<std::ops::Range<u64>> {
    let block_size = device.block_size();
    if len == 0 || !len.is_multiple_of(block_size) {
        return Err(DiskError::Misaligned {
            device: device.name().to_string(),
            len,
            block_size,
        });
    }
    let count = (len / block_size) as u64;
    let end = start.checked_add(count);
    match end {
        Some(end) if end <= device.block_count() => Ok(start..end),
        _ => Err(DiskError::OutOfRange {
            device: device.name().to_string(),
            start,
            count,
            block_count: device.block_count(),
        }),
    }
}

macro_rules! forward_block_device {
    ($($wrapper:ty),*) => {$(
        impl<T: BlockDevice + ?Sized> BlockDevice for $wrapper {
            fn name(&self) -> &str { (**self).name() }
            fn block_size(&self) -> usize { (**self).block_size() }
            fn block_count(&self) -> u64 { (**self).block_count() }
            fn read_blocks(&self, start: u64, buf: &mut [u8]) -> Result<()> {
                (**self).read_blocks(start, buf)
            }
            fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<()> {
                (**self).write_blocks(start, buf)
            }
            fn flush(&self) -> Result<()> { (**self).flush() }
            fn read_blocks_vectored(&self, start: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
                (**self).read_blocks_vectored(start, bufs)
            }
            fn write_blocks_vectored(&self, start: u64, bufs: &[&[u8]]) -> Result<()> {
                (**self).write_blocks_vectored(start, bufs)
            }
        }
    )*};
}
forward_block_device!(std::sync::Arc<T>, Box<T>, &T);
