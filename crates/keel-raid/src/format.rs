//! On-disk format of a volume member. The byte tables are in
//! `docs/integrity.md`; offsets here are derived from the constants below.
//!
//! ```text
//! member block: 0      1      2 .. 2+B        .. +C              .. +D
//!               [sb A] [sb B] [intent bitmap] [checksum table]   [data blocks]
//! ```

use crate::error::{RaidError, Result};

pub const BLOCK_SIZE: usize = 4096;
pub const MAGIC: &[u8; 8] = b"KEELRAID";
pub const VERSION: u32 = 1;
/// Superblock copies: written alternately (by event parity) so a torn
/// superblock write always leaves the previous one intact.
pub const SUPERBLOCK_COPIES: u64 = 2;
/// crc32c entries per checksum-table block.
pub const CRCS_PER_BLOCK: u64 = (BLOCK_SIZE / 4) as u64;
/// Bits per bitmap block.
pub const BITS_PER_BLOCK: u64 = (BLOCK_SIZE * 8) as u64;
/// Bytes of the fixed superblock header; the slot table follows.
const HEADER_BYTES: usize = 96;
const SLOT_BYTES: usize = 32;
pub const MAX_SLOTS: usize = 64;
const _: () = assert!(HEADER_BYTES + MAX_SLOTS * SLOT_BYTES <= BLOCK_SIZE);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Single,
    Raid1,
    Raid5,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Single => "single",
            Level::Raid1 => "raid1",
            Level::Raid5 => "raid5",
        }
    }
    /// How many members may be lost without losing data.
    pub fn redundancy(self, roles: usize) -> usize {
        match self {
            Level::Single => 0,
            Level::Raid1 => roles - 1,
            Level::Raid5 => 1,
        }
    }
    fn code(self) -> u8 {
        match self {
            Level::Single => 0,
            Level::Raid1 => 1,
            Level::Raid5 => 5,
        }
    }
    fn from_code(code: u8) -> Option<Level> {
        match code {
            0 => Some(Level::Single),
            1 => Some(Level::Raid1),
            5 => Some(Level::Raid5),
            _ => None,
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Level, String> {
        match s {
            "single" => Ok(Level::Single),
            "raid1" => Ok(Level::Raid1),
            "raid5" => Ok(Level::Raid5),
            other => Err(format!(
                "unknown level {other:?} (expected single, raid1 or raid5)"
            )),
        }
    }
}

/// RAID-5 parity placement. Both rotate parity from the last disk to the
/// first; they differ in where the data chunks of a stripe start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Data starts on the disk after parity and wraps (Linux md's default):
    /// consecutive chunks visit every disk, so sequential reads use them all.
    LeftSymmetric,
    /// Data fills the disks left to right, skipping parity: exactly the
    /// drawing in the lecture (D4 D5 D6 P1 D7).
    LeftAsymmetric,
}

impl Layout {
    fn code(self) -> u8 {
        match self {
            Layout::LeftSymmetric => 0,
            Layout::LeftAsymmetric => 1,
        }
    }
    fn from_code(code: u8) -> Option<Layout> {
        match code {
            0 => Some(Layout::LeftSymmetric),
            1 => Some(Layout::LeftAsymmetric),
            _ => None,
        }
    }
}

/// What a physical disk slot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Serves `role` (a member index of the level's layout).
    Active { role: u16 },
    /// Idle, waiting to replace a failed member.
    Spare,
    /// Being rebuilt to serve `role`; member data blocks below `next_block`
    /// are valid.
    Rebuilding { role: u16, next_block: u64 },
    /// Failed: never read or written again.
    Failed,
}

impl SlotState {
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Active { .. } => "active",
            SlotState::Spare => "spare",
            SlotState::Rebuilding { .. } => "rebuilding",
            SlotState::Failed => "failed",
        }
    }
    pub fn role(self) -> Option<u16> {
        match self {
            SlotState::Active { role } | SlotState::Rebuilding { role, .. } => Some(role),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub disk_uuid: [u8; 16],
    pub state: SlotState,
}

/// Sizes of a member's regions, all in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberGeometry {
    pub data_blocks: u64,
    pub region_blocks: u64,
    pub bitmap_blocks: u64,
    pub crc_blocks: u64,
}

impl MemberGeometry {
    pub fn new(data_blocks: u64, region_blocks: u64) -> MemberGeometry {
        let regions = data_blocks.div_ceil(region_blocks);
        MemberGeometry {
            data_blocks,
            region_blocks,
            bitmap_blocks: regions.div_ceil(BITS_PER_BLOCK).max(1),
            crc_blocks: data_blocks.div_ceil(CRCS_PER_BLOCK),
        }
    }
    pub fn regions(&self) -> u64 {
        self.data_blocks.div_ceil(self.region_blocks)
    }
    pub fn bitmap_start(&self) -> u64 {
        SUPERBLOCK_COPIES
    }
    pub fn crc_start(&self) -> u64 {
        self.bitmap_start() + self.bitmap_blocks
    }
    pub fn data_start(&self) -> u64 {
        self.crc_start() + self.crc_blocks
    }
    pub fn total_blocks(&self) -> u64 {
        self.data_start() + self.data_blocks
    }
}

/// The superblock: the array's configuration as this disk last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub array_uuid: [u8; 16],
    pub disk_uuid: [u8; 16],
    /// Incremented on every configuration change; the highest wins.
    pub event: u64,
    pub level: Level,
    pub layout: Layout,
    pub roles: u16,
    pub this_slot: u16,
    pub chunk_blocks: u32,
    pub region_blocks: u32,
    pub member_data_blocks: u64,
    pub logical_blocks: u64,
    pub slots: Vec<Slot>,
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

const STATE_ACTIVE: u8 = 1;
const STATE_SPARE: u8 = 2;
const STATE_REBUILDING: u8 = 3;
const STATE_FAILED: u8 = 4;

impl Superblock {
    pub fn geometry(&self) -> MemberGeometry {
        MemberGeometry::new(self.member_data_blocks, self.region_blocks as u64)
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(self.slots.len() <= MAX_SLOTS);
        let mut b = vec![0u8; BLOCK_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        put_u32(&mut b, 8, VERSION);
        b[16..32].copy_from_slice(&self.array_uuid);
        b[32..48].copy_from_slice(&self.disk_uuid);
        put_u64(&mut b, 48, self.event);
        b[56] = self.level.code();
        b[57] = self.layout.code();
        put_u16(&mut b, 58, self.roles);
        put_u16(&mut b, 60, self.slots.len() as u16);
        put_u16(&mut b, 62, self.this_slot);
        put_u32(&mut b, 64, self.chunk_blocks);
        put_u32(&mut b, 68, self.region_blocks);
        put_u64(&mut b, 72, self.member_data_blocks);
        put_u64(&mut b, 80, self.logical_blocks);
        for (i, slot) in self.slots.iter().enumerate() {
            let at = HEADER_BYTES + i * SLOT_BYTES;
            b[at..at + 16].copy_from_slice(&slot.disk_uuid);
            let (state, role, next) = match slot.state {
                SlotState::Active { role } => (STATE_ACTIVE, role, 0),
                SlotState::Spare => (STATE_SPARE, 0, 0),
                SlotState::Rebuilding { role, next_block } => (STATE_REBUILDING, role, next_block),
                SlotState::Failed => (STATE_FAILED, 0, 0),
            };
            b[at + 16] = state;
            put_u16(&mut b, at + 18, role);
            put_u64(&mut b, at + 24, next);
        }
        let crc = crc32c::crc32c(&b);
        put_u32(&mut b, 12, crc);
        b
    }

    /// Decodes and validates a superblock; `path` names the disk in errors.
    pub fn decode(path: &str, block: &[u8]) -> Result<Superblock> {
        let bad = |reason: String| RaidError::Format {
            path: path.to_string(),
            reason,
        };
        if block.len() != BLOCK_SIZE || &block[0..8] != MAGIC {
            return Err(bad("not a keel volume member (bad magic)".into()));
        }
        let version = get_u32(block, 8);
        if version != VERSION {
            return Err(bad(format!("unsupported member format version {version}")));
        }
        let stored = get_u32(block, 12);
        let mut copy = block.to_vec();
        put_u32(&mut copy, 12, 0);
        let actual = crc32c::crc32c(&copy);
        if stored != actual {
            return Err(bad(format!(
                "superblock checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
            )));
        }
        let level = Level::from_code(block[56])
            .ok_or_else(|| bad(format!("unknown level code {}", block[56])))?;
        let layout = Layout::from_code(block[57])
            .ok_or_else(|| bad(format!("unknown layout code {}", block[57])))?;
        let roles = get_u16(block, 58);
        let slot_count = get_u16(block, 60) as usize;
        let this_slot = get_u16(block, 62);
        let chunk_blocks = get_u32(block, 64);
        let region_blocks = get_u32(block, 68);
        if slot_count == 0 || slot_count > MAX_SLOTS || this_slot as usize >= slot_count {
            return Err(bad(format!(
                "bad slot count {slot_count} / slot {this_slot}"
            )));
        }
        if roles == 0 || roles as usize > slot_count || chunk_blocks == 0 || region_blocks == 0 {
            return Err(bad("bad geometry in superblock".into()));
        }
        let mut slots = Vec::with_capacity(slot_count);
        for i in 0..slot_count {
            let at = HEADER_BYTES + i * SLOT_BYTES;
            let mut disk_uuid = [0u8; 16];
            disk_uuid.copy_from_slice(&block[at..at + 16]);
            let role = get_u16(block, at + 18);
            let state = match block[at + 16] {
                STATE_ACTIVE => SlotState::Active { role },
                STATE_SPARE => SlotState::Spare,
                STATE_REBUILDING => SlotState::Rebuilding {
                    role,
                    next_block: get_u64(block, at + 24),
                },
                STATE_FAILED => SlotState::Failed,
                other => return Err(bad(format!("slot {i} has unknown state {other}"))),
            };
            if let Some(role) = state.role() {
                if role >= roles {
                    return Err(bad(format!("slot {i} serves role {role} of {roles}")));
                }
            }
            slots.push(Slot { disk_uuid, state });
        }
        let mut array_uuid = [0u8; 16];
        array_uuid.copy_from_slice(&block[16..32]);
        let mut disk_uuid = [0u8; 16];
        disk_uuid.copy_from_slice(&block[32..48]);
        Ok(Superblock {
            array_uuid,
            disk_uuid,
            event: get_u64(block, 48),
            level,
            layout,
            roles,
            this_slot,
            chunk_blocks,
            region_blocks,
            member_data_blocks: get_u64(block, 72),
            logical_blocks: get_u64(block, 80),
            slots,
        })
    }
}

/// 16 random bytes from the kernel, for array and disk identities.
pub fn new_uuid() -> [u8; 16] {
    use std::io::Read;
    let mut uuid = [0u8; 16];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        if urandom.read_exact(&mut uuid).is_ok() {
            return uuid;
        }
    }
    // No /dev/urandom: time and pid are unique enough to tell arrays apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut rng = keel_disk::SimRng::new(nanos as u64 ^ ((std::process::id() as u64) << 32));
    rng.fill(&mut uuid);
    uuid
}

pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            array_uuid: [1; 16],
            disk_uuid: [2; 16],
            event: 7,
            level: Level::Raid5,
            layout: Layout::LeftSymmetric,
            roles: 3,
            this_slot: 1,
            chunk_blocks: 16,
            region_blocks: 1024,
            member_data_blocks: 4096,
            logical_blocks: 8192,
            slots: vec![
                Slot {
                    disk_uuid: [3; 16],
                    state: SlotState::Active { role: 0 },
                },
                Slot {
                    disk_uuid: [2; 16],
                    state: SlotState::Rebuilding {
                        role: 1,
                        next_block: 99,
                    },
                },
                Slot {
                    disk_uuid: [4; 16],
                    state: SlotState::Failed,
                },
                Slot {
                    disk_uuid: [5; 16],
                    state: SlotState::Spare,
                },
            ],
        }
    }

    #[test]
    fn superblock_round_trips() {
        let sb = sample();
        assert_eq!(Superblock::decode("d", &sb.encode()).unwrap(), sb);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let encoded = sample().encode();
        for bit in (0..BLOCK_SIZE * 8).step_by(97) {
            let mut copy = encoded.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(Superblock::decode("d", &copy).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = keel_disk::SimRng::new(11);
        for _ in 0..2000 {
            let mut block = vec![0u8; BLOCK_SIZE];
            rng.fill(&mut block);
            block[0..8].copy_from_slice(MAGIC);
            block[8..12].copy_from_slice(&VERSION.to_le_bytes());
            let _ = Superblock::decode("d", &block);
        }
    }

    #[test]
    fn geometry_regions_follow_each_other() {
        let g = MemberGeometry::new(100_000, 1024);
        assert_eq!(g.bitmap_start(), 2);
        assert_eq!(g.crc_start(), 3);
        assert_eq!(g.crc_blocks, 98);
        assert_eq!(g.data_start(), 101);
        assert_eq!(g.total_blocks(), 100_101);
    }
}
