//! The on-disk format of the log, encoded and decoded without any I/O.
//!
//! The byte tables are in `docs/journal.md`; the offsets here are the only
//! place they are defined in code. Everything is little-endian.
//!
//! ```text
//! log region:  [ superblock | log area: L blocks, addressed by Lsn % L ]
//! transaction: [ descriptor | images.. ]+ [ revoke ]* [ commit ]
//! ```

use std::fmt;

/// Identifier of a transaction: its sequence number in the log. Sequence
/// numbers increase by one per committed transaction and never repeat within
/// an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TxnId(pub u64);

impl TxnId {
    pub fn next(self) -> TxnId {
        TxnId(self.0 + 1)
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn {}", self.0)
    }
}

/// A position in the log, in blocks written since the log was formatted. It
/// never wraps: the block it lives in is `Lsn % log_blocks` of the log area.
/// The LSN of a transaction is the position just past its commit record, so
/// "durable position >= lsn" means "the transaction is durable".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn plus(self, blocks: u64) -> Lsn {
        Lsn(self.0 + blocks)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// First bytes of the superblock.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"KEELJNL1";
/// Version of the format described in `docs/journal.md`.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the superblock covered by its checksum; it all lies in the first
/// sector, which the disk writes atomically, so an update is never torn.
pub const SUPERBLOCK_BYTES: usize = 60;
/// First four bytes of every descriptor, revoke and commit block ("KJNL").
pub const HEADER_MAGIC: [u8; 4] = *b"KJNL";
/// Size of the header shared by descriptor, revoke and commit blocks.
pub const HEADER_SIZE: usize = 32;
/// One descriptor entry: home block (u64), flags (u32), reserved (u32).
pub const DESCRIPTOR_ENTRY_SIZE: usize = 16;
/// One revoke entry: home block (u64).
pub const REVOKE_ENTRY_SIZE: usize = 8;
/// Descriptor entry flag: the logged image had its first four bytes equal to
/// [`HEADER_MAGIC`]; they were zeroed in the log and are restored on replay,
/// so no image in the log can be mistaken for a header block.
pub const ENTRY_ESCAPED: u32 = 1;
/// Smallest block size the format supports (one sector).
pub const MIN_BLOCK_SIZE: usize = 512;

const _: () = assert!(SUPERBLOCK_BYTES <= 512, "superblock must fit one sector");
/// Bytes of a commit record that mean anything: header, transaction
/// checksum, durable-before position, own checksum.
pub const COMMIT_RECORD_BYTES: usize = HEADER_SIZE + 16;
const _: () = assert!(
    COMMIT_RECORD_BYTES <= 512,
    "commit record must fit one sector"
);

/// Kinds of log blocks that carry a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Descriptor = 1,
    Revoke = 2,
    Commit = 3,
}

impl BlockKind {
    fn from_u32(value: u32) -> Option<BlockKind> {
        match value {
            1 => Some(BlockKind::Descriptor),
            2 => Some(BlockKind::Revoke),
            3 => Some(BlockKind::Commit),
            _ => None,
        }
    }
}

/// Descriptor entries that fit in one block.
pub fn descriptor_capacity(block_size: usize) -> usize {
    (block_size - HEADER_SIZE) / DESCRIPTOR_ENTRY_SIZE
}

/// Revoke entries that fit in one block.
pub fn revoke_capacity(block_size: usize) -> usize {
    (block_size - HEADER_SIZE) / REVOKE_ENTRY_SIZE
}

/// Log blocks a transaction of `writes` images and `revokes` revocations takes:
/// descriptors, images, revoke blocks and the commit record.
pub fn transaction_blocks(writes: usize, revokes: usize, block_size: usize) -> u64 {
    let descriptors = writes.div_ceil(descriptor_capacity(block_size));
    let revoke_blocks = revokes.div_ceil(revoke_capacity(block_size));
    (descriptors + writes + revoke_blocks + 1) as u64
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The log superblock: where recovery starts.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `KEELJNL1` |
/// | 8 | 4 | version |
/// | 12 | 4 | block size |
/// | 16 | 8 | log blocks (L, the log area after the superblock) |
/// | 24 | 8 | epoch |
/// | 32 | 8 | tail (Lsn of the oldest transaction not yet home) |
/// | 40 | 8 | tail sequence (TxnId of the transaction at the tail) |
/// | 48 | 8 | head (durable end of the log when this was written) |
/// | 56 | 4 | crc32c of bytes 0..56 |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u32,
    pub log_blocks: u64,
    pub epoch: u64,
    pub tail: Lsn,
    pub tail_sequence: TxnId,
    pub head: Lsn,
}

/// Why a superblock could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuperblockProblem {
    /// No magic: the region was never formatted as a keel journal.
    NotFormatted,
    /// The checksum does not match (corrupted, since the write is atomic).
    Checksum { stored: u32, computed: u32 },
    /// A version this code does not read.
    Version(u32),
    /// Fields that contradict each other.
    Inconsistent(String),
}

impl fmt::Display for SuperblockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuperblockProblem::NotFormatted => write!(f, "no journal superblock (not formatted)"),
            SuperblockProblem::Checksum { stored, computed } => write!(
                f,
                "superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            SuperblockProblem::Version(version) => {
                write!(f, "unsupported journal version {version}")
            }
            SuperblockProblem::Inconsistent(reason) => {
                write!(f, "inconsistent superblock: {reason}")
            }
        }
    }
}

impl Superblock {
    /// Encodes into `block` (a whole block; bytes past the superblock are zeroed).
    pub fn encode(&self, block: &mut [u8]) {
        block.fill(0);
        block[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        put_u32(block, 8, FORMAT_VERSION);
        put_u32(block, 12, self.block_size);
        put_u64(block, 16, self.log_blocks);
        put_u64(block, 24, self.epoch);
        put_u64(block, 32, self.tail.0);
        put_u64(block, 40, self.tail_sequence.0);
        put_u64(block, 48, self.head.0);
        let crc = crc32c::crc32c(&block[0..56]);
        put_u32(block, 56, crc);
    }

    /// Decodes and checks a superblock. Never panics on any input of at
    /// least [`SUPERBLOCK_BYTES`] bytes; shorter input is `NotFormatted`.
    pub fn decode(block: &[u8]) -> Result<Superblock, SuperblockProblem> {
        if block.len() < SUPERBLOCK_BYTES || block[0..8] != SUPERBLOCK_MAGIC {
            return Err(SuperblockProblem::NotFormatted);
        }
        let stored = get_u32(block, 56);
        let computed = crc32c::crc32c(&block[0..56]);
        if stored != computed {
            return Err(SuperblockProblem::Checksum { stored, computed });
        }
        let version = get_u32(block, 8);
        if version != FORMAT_VERSION {
            return Err(SuperblockProblem::Version(version));
        }
        let superblock = Superblock {
            block_size: get_u32(block, 12),
            log_blocks: get_u64(block, 16),
            epoch: get_u64(block, 24),
            tail: Lsn(get_u64(block, 32)),
            tail_sequence: TxnId(get_u64(block, 40)),
            head: Lsn(get_u64(block, 48)),
        };
        if (superblock.block_size as usize) < MIN_BLOCK_SIZE
            || superblock.block_size as usize % MIN_BLOCK_SIZE != 0
        {
            return Err(SuperblockProblem::Inconsistent(format!(
                "block size {}",
                superblock.block_size
            )));
        }
        if superblock.log_blocks < 2 {
            return Err(SuperblockProblem::Inconsistent(format!(
                "log of {} blocks",
                superblock.log_blocks
            )));
        }
        // Positions, sequences and epochs only grow; values this close to
        // the end of u64 cannot come from a real log, and would overflow.
        let limit = u64::MAX / 2;
        if superblock.head.0 > limit
            || superblock.tail_sequence.0 > limit
            || superblock.epoch > limit
            || superblock.log_blocks > limit
        {
            return Err(SuperblockProblem::Inconsistent(format!(
                "position {}, sequence {} or epoch {} out of range",
                superblock.head.0, superblock.tail_sequence.0, superblock.epoch
            )));
        }
        if superblock.head < superblock.tail
            || superblock.head.0 - superblock.tail.0 > superblock.log_blocks
        {
            return Err(SuperblockProblem::Inconsistent(format!(
                "head {} and tail {} in a log of {} blocks",
                superblock.head.0, superblock.tail.0, superblock.log_blocks
            )));
        }
        Ok(superblock)
    }
}

/// The header of a descriptor, revoke or commit block.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `KJNL` |
/// | 4 | 4 | kind (1 descriptor, 2 revoke, 3 commit) |
/// | 8 | 8 | epoch |
/// | 16 | 8 | sequence (TxnId) |
/// | 24 | 4 | count: entries (descriptor, revoke) or blocks before the commit record |
/// | 28 | 4 | reserved, zero |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: BlockKind,
    pub epoch: u64,
    pub sequence: TxnId,
    pub count: u32,
}

/// What the first bytes of a log block say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderParse {
    Header(Header),
    /// No header magic: an image, a never-written block, or torn garbage.
    NotAHeader,
    /// Header magic with an unknown kind.
    UnknownKind(u32),
}

impl Header {
    pub fn encode(&self, block: &mut [u8]) {
        block[0..4].copy_from_slice(&HEADER_MAGIC);
        put_u32(block, 4, self.kind as u32);
        put_u64(block, 8, self.epoch);
        put_u64(block, 16, self.sequence.0);
        put_u32(block, 24, self.count);
        put_u32(block, 28, 0);
    }

    pub fn parse(block: &[u8]) -> HeaderParse {
        if block.len() < HEADER_SIZE || block[0..4] != HEADER_MAGIC {
            return HeaderParse::NotAHeader;
        }
        let kind = get_u32(block, 4);
        match BlockKind::from_u32(kind) {
            None => HeaderParse::UnknownKind(kind),
            Some(kind) => HeaderParse::Header(Header {
                kind,
                epoch: get_u64(block, 8),
                sequence: TxnId(get_u64(block, 16)),
                count: get_u32(block, 24),
            }),
        }
    }
}

/// One descriptor entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorEntry {
    pub home_block: u64,
    pub flags: u32,
}

/// Reads entry `index` of a descriptor block.
pub fn descriptor_entry(block: &[u8], index: usize) -> DescriptorEntry {
    let at = HEADER_SIZE + index * DESCRIPTOR_ENTRY_SIZE;
    DescriptorEntry {
        home_block: get_u64(block, at),
        flags: get_u32(block, at + 8),
    }
}

/// Reads entry `index` of a revoke block.
pub fn revoke_entry(block: &[u8], index: usize) -> u64 {
    get_u64(block, HEADER_SIZE + index * REVOKE_ENTRY_SIZE)
}

/// The fields of a commit record after its header.
///
/// | offset | size | field |
/// |---|---|---|
/// | 32 | 4 | crc32c of the transaction's blocks before this one, then of bytes 0..32 here |
/// | 36 | 8 | durable before: the log position known durable when the transaction was written |
/// | 44 | 4 | crc32c of bytes 0..44 of this record |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub transaction_checksum: u32,
    pub durable_before: Lsn,
}

impl CommitRecord {
    /// Reads the record's fields if its own checksum holds (the header is
    /// parsed separately with [`Header::parse`]).
    pub fn parse(block: &[u8]) -> Option<CommitRecord> {
        if block.len() < COMMIT_RECORD_BYTES {
            return None;
        }
        let stored = get_u32(block, HEADER_SIZE + 12);
        if stored != crc32c::crc32c(&block[..HEADER_SIZE + 12]) {
            return None;
        }
        Some(CommitRecord {
            transaction_checksum: get_u32(block, HEADER_SIZE),
            durable_before: Lsn(get_u64(block, HEADER_SIZE + 4)),
        })
    }
}

/// Extends the running checksum of a transaction with the commit header, so
/// the stored checksum also covers the commit record's own fields.
pub fn commit_checksum_of(running: u32, commit_block: &[u8]) -> u32 {
    crc32c::crc32c_append(running, &commit_block[..HEADER_SIZE])
}

/// Undoes the escape of a logged image (see [`ENTRY_ESCAPED`]).
pub fn unescape(image: &mut [u8], flags: u32) {
    if flags & ENTRY_ESCAPED != 0 {
        image[0..4].copy_from_slice(&HEADER_MAGIC);
    }
}

/// Appends the log blocks of one transaction to `out`: descriptor blocks each
/// followed by their images, then revoke blocks, then the commit record whose
/// crc32c covers every block before it and its own header, and which records
/// `durable_before` (see [`CommitRecord`]). Returns the number
/// of blocks appended (always [`transaction_blocks`]).
pub fn encode_transaction(
    out: &mut Vec<u8>,
    block_size: usize,
    epoch: u64,
    sequence: TxnId,
    writes: &[(u64, &[u8])],
    revokes: &[u64],
    durable_before: Lsn,
) -> u64 {
    let start = out.len();
    let descriptor_room = descriptor_capacity(block_size);
    for chunk in writes.chunks(descriptor_room) {
        let descriptor_at = out.len();
        out.resize(descriptor_at + block_size, 0);
        Header {
            kind: BlockKind::Descriptor,
            epoch,
            sequence,
            count: chunk.len() as u32,
        }
        .encode(&mut out[descriptor_at..descriptor_at + block_size]);
        for (index, (home_block, image)) in chunk.iter().enumerate() {
            assert_eq!(image.len(), block_size, "image of block {home_block}");
            let escaped = image[0..4] == HEADER_MAGIC;
            let at = descriptor_at + HEADER_SIZE + index * DESCRIPTOR_ENTRY_SIZE;
            put_u64(out, at, *home_block);
            put_u32(out, at + 8, if escaped { ENTRY_ESCAPED } else { 0 });
            let image_at = out.len();
            out.extend_from_slice(image);
            if escaped {
                out[image_at..image_at + 4].fill(0);
            }
        }
    }
    for chunk in revokes.chunks(revoke_capacity(block_size)) {
        let at = out.len();
        out.resize(at + block_size, 0);
        Header {
            kind: BlockKind::Revoke,
            epoch,
            sequence,
            count: chunk.len() as u32,
        }
        .encode(&mut out[at..at + block_size]);
        for (index, block) in chunk.iter().enumerate() {
            put_u64(out, at + HEADER_SIZE + index * REVOKE_ENTRY_SIZE, *block);
        }
    }
    let blocks_before_commit = (out.len() - start) / block_size;
    let running = crc32c::crc32c(&out[start..]);
    let commit_at = out.len();
    out.resize(commit_at + block_size, 0);
    let commit = &mut out[commit_at..commit_at + block_size];
    Header {
        kind: BlockKind::Commit,
        epoch,
        sequence,
        count: blocks_before_commit as u32,
    }
    .encode(commit);
    let checksum = commit_checksum_of(running, commit);
    put_u32(commit, HEADER_SIZE, checksum);
    put_u64(commit, HEADER_SIZE + 4, durable_before.0);
    let own = crc32c::crc32c(&commit[..HEADER_SIZE + 12]);
    put_u32(commit, HEADER_SIZE + 12, own);
    let blocks = ((out.len() - start) / block_size) as u64;
    debug_assert_eq!(
        blocks,
        transaction_blocks(writes.len(), revokes.len(), block_size)
    );
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trip_and_checksum() {
        let superblock = Superblock {
            block_size: 4096,
            log_blocks: 100,
            epoch: 7,
            tail: Lsn(250),
            tail_sequence: TxnId(31),
            head: Lsn(260),
        };
        let mut block = vec![0u8; 4096];
        superblock.encode(&mut block);
        assert_eq!(Superblock::decode(&block), Ok(superblock));
        block[33] ^= 1;
        assert!(matches!(
            Superblock::decode(&block),
            Err(SuperblockProblem::Checksum { .. })
        ));
        assert_eq!(
            Superblock::decode(&[0u8; 4096]),
            Err(SuperblockProblem::NotFormatted)
        );
    }

    #[test]
    fn transaction_sizes_and_escape() {
        let block_size = 512;
        assert_eq!(descriptor_capacity(block_size), 30);
        assert_eq!(transaction_blocks(0, 0, block_size), 1);
        assert_eq!(transaction_blocks(30, 0, block_size), 32);
        assert_eq!(transaction_blocks(31, 1, block_size), 31 + 2 + 1 + 1);
        let mut image = vec![1u8; block_size];
        image[0..4].copy_from_slice(&HEADER_MAGIC);
        let mut out = Vec::new();
        let blocks = encode_transaction(
            &mut out,
            block_size,
            1,
            TxnId(5),
            &[(9, &image)],
            &[3],
            Lsn(0),
        );
        assert_eq!(blocks, 4);
        assert_eq!(
            Header::parse(&out[block_size..]),
            HeaderParse::NotAHeader,
            "an escaped image must not look like a header"
        );
        let entry = descriptor_entry(&out, 0);
        assert_eq!(entry.home_block, 9);
        let mut logged = out[block_size..2 * block_size].to_vec();
        unescape(&mut logged, entry.flags);
        assert_eq!(logged, image);
    }
}
