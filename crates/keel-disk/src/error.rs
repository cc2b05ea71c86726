use std::io;

/// Result of a block-device operation.
pub type Result<T, E = DiskError> = std::result::Result<T, E>;

/// Everything a block device can report. Each variant names the device (and
/// the block, where there is one) so the message alone locates the problem.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file or device could not be opened or created.
    #[error("{device}: cannot open: {source}")]
    Open {
        device: String,
        #[source]
        source: io::Error,
    },
    /// The file exists but cannot be a disk of the requested shape.
    #[error("{device}: {reason}")]
    BadGeometry { device: String, reason: String },
    /// The request reaches past the end of the device.
    #[error("{device}: blocks {start}..{} out of range (device has {block_count} blocks)", start + count)]
    OutOfRange {
        device: String,
        start: u64,
        count: u64,
        block_count: u64,
    },
    /// The buffer is not a whole, non-zero number of blocks.
    #[error("{device}: buffer of {len} bytes is not a non-zero multiple of the {block_size}-byte block size")]
    Misaligned {
        device: String,
        len: usize,
        block_size: usize,
    },
    /// The operating system failed a read or write.
    #[error("{device}: I/O error at block {block}: {source}")]
    Io {
        device: String,
        block: u64,
        #[source]
        source: io::Error,
    },
    /// The durability barrier failed; the device is now poisoned.
    #[error("{device}: flush failed: {source}")]
    Flush {
        device: String,
        #[source]
        source: io::Error,
    },
    /// A sector could not be read (a latent sector error).
    #[error("{device}: unreadable sector in block {block} (media error)")]
    Media { device: String, block: u64 },
    /// The whole device has stopped (fail-stop).
    #[error("{device}: device has failed")]
    DeviceFailed { device: String },
    /// The device was opened read-only and a write or flush was attempted.
    #[error("{device}: device is read-only")]
    ReadOnly { device: String },
    /// The data of a block failed verification and could not be repaired
    /// (reported by checksummed devices such as keel volumes).
    #[error("{device}: block {block} is corrupt and could not be repaired: {detail}")]
    Corrupt {
        device: String,
        block: u64,
        detail: String,
    },
    /// An earlier flush failed, so the state of unflushed writes is unknown.
    #[error(
        "{device}: an earlier flush failed, so unflushed writes may be lost; reopen the device"
    )]
    Poisoned { device: String },
}

impl DiskError {
    /// The device this error is about.
    pub fn device(&self) -> &str {
        match self {
            DiskError::Open { device, .. }
            | DiskError::BadGeometry { device, .. }
            | DiskError::OutOfRange { device, .. }
            | DiskError::Misaligned { device, .. }
            | DiskError::Io { device, .. }
            | DiskError::Flush { device, .. }
            | DiskError::Media { device, .. }
            | DiskError::DeviceFailed { device }
            | DiskError::ReadOnly { device }
            | DiskError::Corrupt { device, .. }
            | DiskError::Poisoned { device } => device,
        }
    }

    /// True when the error says the request itself was wrong (a bug in the
    /// caller), as opposed to the device misbehaving.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            DiskError::OutOfRange { .. } | DiskError::Misaligned { .. }
        )
    }

    /// True when the device as a whole can no longer be trusted (as opposed to
    /// one unreadable block), so a redundant volume should fail the member.
    pub fn is_device_fatal(&self) -> bool {
        matches!(
            self,
            DiskError::DeviceFailed { .. }
                | DiskError::Flush { .. }
                | DiskError::Poisoned { .. }
                | DiskError::ReadOnly { .. }
        )
    }

    /// The errno this error maps to, for FUSE and other POSIX front ends.
    pub fn errno(&self) -> i32 {
        match self {
            DiskError::Open { source, .. }
            | DiskError::Io { source, .. }
            | DiskError::Flush { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            DiskError::OutOfRange { .. } | DiskError::Misaligned { .. } => libc::EINVAL,
            DiskError::ReadOnly { .. } => libc::EROFS,
            _ => libc::EIO,
        }
    }
}
