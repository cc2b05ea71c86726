use keel_disk::DiskError;

/// Result of a cache operation.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// Everything the cache can report. Each variant names the block (or says
/// there is none) and keeps the device's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading a block from the device failed; nothing was cached.
    #[error("cache: reading block {block} failed: {source}")]
    Read {
        block: u64,
        #[source]
        source: DiskError,
    },
    /// Writing a dirty block home failed. The block stays dirty in the cache
    /// and is retried by the next write-back.
    #[error("cache: writing block {block} home failed: {source}")]
    WriteBack {
        block: u64,
        #[source]
        source: DiskError,
    },
    /// The device's durability barrier failed. The device is poisoned, so
    /// nothing unsynced may be assumed to be on disk.
    #[error("cache: flushing the device failed: {source}")]
    Flush {
        #[source]
        source: DiskError,
    },
    /// A block number past the end of the device.
    #[error("cache: block {block} is out of range (device {device} has {block_count} blocks)")]
    OutOfRange {
        device: String,
        block: u64,
        block_count: u64,
    },
    /// A buffer that is not exactly one block.
    #[error("cache: buffer of {len} bytes for block {block} is not one {block_size}-byte block")]
    BadLength {
        block: u64,
        len: usize,
        block_size: usize,
    },
    /// A configuration that cannot work.
    #[error("cache: bad configuration: {0}")]
    Config(String),
}

impl CacheError {
    /// The block this error is about, if any.
    pub fn block(&self) -> Option<u64> {
        match self {
            CacheError::Read { block, .. }
            | CacheError::WriteBack { block, .. }
            | CacheError::OutOfRange { block, .. }
            | CacheError::BadLength { block, .. } => Some(*block),
            CacheError::Flush { .. } | CacheError::Config(_) => None,
        }
    }

    /// The device error underneath, if any.
    pub fn disk_error(&self) -> Option<&DiskError> {
        match self {
            CacheError::Read { source, .. }
            | CacheError::WriteBack { source, .. }
            | CacheError::Flush { source } => Some(source),
            _ => None,
        }
    }

    /// The errno this error maps to, for FUSE and other POSIX front ends.
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::Read { source, .. }
            | CacheError::WriteBack { source, .. }
            | CacheError::Flush { source } => source.errno(),
            CacheError::OutOfRange { .. } | CacheError::BadLength { .. } => 22, // EINVAL
            CacheError::Config(_) => 22,
        }
    }
}
