use keel_disk::DiskError;

pub type Result<T, E = RaidError> = std::result::Result<T, E>;

/// Errors of the volume layer. Each names the volume member (disk path) and
/// block where one is involved.
#[derive(Debug, thiserror::Error)]
pub enum RaidError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A block failed its checksum (or could not be read) and no redundant
    /// copy could repair it. Nothing is handed up.
    #[error("unrepairable block {logical_block} of the volume (disk {disk}, member block {member_block}): {reason}")]
    Unrepairable {
        logical_block: u64,
        disk: String,
        member_block: u64,
        reason: String,
    },
    /// Too many members are missing or failed for the level's redundancy.
    #[error("volume has failed: {0}")]
    VolumeFailed(String),
    /// Assembly found members that do not form one consistent array.
    #[error("cannot assemble volume: {0}")]
    Assembly(String),
    /// A superblock or manifest is malformed.
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    /// The request itself is wrong (range, size, arguments).
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
