//! The volume: assembly, verified reads with repair, RAID writes, flush,
//! rebuild, scrub and resync. Formats and invariants: `docs/integrity.md`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;

use keel_disk::{BlockDevice, DiskError, FileDisk, FileDiskOptions};

use crate::bitmap::IntentBitmap;
use crate::error::{RaidError, Result};
use crate::format::{
    new_uuid, uuid_string, Layout, Level, MemberGeometry, Slot, SlotState, Superblock, BLOCK_SIZE,
    MAX_SLOTS, SUPERBLOCK_COPIES,
};
use crate::layout::Geometry;
use crate::member::Member;
use crate::xor::xor_into;

mod config;
mod dir;
mod io;
mod rebuild;
mod resync;

pub use dir::MANIFEST;

const LOCK_STRIPES: usize = 1024;
/// Rebuild progress is made durable every this many member blocks.
const REBUILD_PERSIST_BLOCKS: u64 = 4096;
/// Default region covered by one write-intent bit: 1024 blocks (4 MiB).
pub const DEFAULT_REGION_BLOCKS: u64 = 1024;

/// How to open a volume.
#[derive(Clone, Copy, Debug)]
pub struct VolumeOptions {
    /// Run rebuilds onto spares in a background thread.
    pub background_rebuild: bool,
    /// Assemble even when a RAID-5 volume is degraded and was not shut down
    /// cleanly (stripes written at the crash may reconstruct wrongly; see
    /// `docs/integrity.md`).
    pub force: bool,
    /// Open member files with O_DIRECT.
    pub direct: bool,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            background_rebuild: true,
            force: false,
            direct: false,
        }
    }
}

/// A disk offered to assembly: the opened device, or why it could not be opened.
pub type MemberDisk = std::result::Result<Arc<dyn BlockDevice>, String>;

/// What to create.
#[derive(Clone, Debug)]
pub struct CreateSpec {
    pub level: Level,
    pub layout: Layout,
    /// Usable capacity in bytes (rounded up to whole blocks).
    pub size_bytes: u64,
    /// RAID-5 chunk size in bytes (a power of two, at least one block).
    pub chunk_bytes: u64,
}

impl CreateSpec {
    fn validate(&self, members: usize) -> Result<()> {
        let invalid = |m: String| Err(RaidError::Invalid(m));
        match self.level {
            Level::Single if members != 1 => {
                return invalid(format!("level single takes exactly 1 disk, not {members}"))
            }
            Level::Raid1 if members < 2 => {
                return invalid(format!("raid1 needs at least 2 disks, not {members}"))
            }
            Level::Raid5 if members < 3 => {
                return invalid(format!("raid5 needs at least 3 disks, not {members}"))
            }
            _ => {}
        }
        if self.size_bytes == 0 {
            return invalid("volume size must be positive".into());
        }
        if self.chunk_bytes < BLOCK_SIZE as u64
            || !self.chunk_bytes.is_power_of_two()
            || self.chunk_bytes > DEFAULT_REGION_BLOCKS * BLOCK_SIZE as u64
        {
            return invalid(format!(
                "chunk size {} must be a power of two between 4 KiB and 4 MiB",
                self.chunk_bytes
            ));
        }
        Ok(())
    }

    /// Member geometry for `members` disks.
    pub fn member_geometry(&self, members: usize) -> MemberGeometry {
        let logical = self.size_bytes.div_ceil(BLOCK_SIZE as u64);
        let chunk = self.chunk_bytes / BLOCK_SIZE as u64;
        let data = Geometry::member_blocks_for(self.level, members, chunk, logical);
        MemberGeometry::new(data, DEFAULT_REGION_BLOCKS.max(chunk))
    }
}

/// Health of the whole volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    Healthy,
    Degraded,
    Rebuilding,
    Failed,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DiskStatus {
    pub index: usize,
    pub path: String,
    /// `member` or `spare`.
    pub role: String,
    /// Position in the layout for members.
    pub member_index: Option<u16>,
    /// `active`, `spare`, `rebuilding`, `failed` or `missing`.
    pub state: String,
    /// Fraction rebuilt, for a rebuilding disk.
    pub rebuild_progress: Option<f64>,
    /// Why the disk is failed or missing.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VolumeStatus {
    pub level: Level,
    pub layout: Layout,
    pub state: VolumeState,
    pub size_bytes: u64,
    pub chunk_bytes: u64,
    pub uuid: String,
    pub event: u64,
    pub dirty_regions: usize,
    pub repaired_blocks: u64,
    pub disks: Vec<DiskStatus>,
}

/// What a scrub found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScrubReport {
    /// Member data blocks read and verified.
    pub checked_blocks: u64,
    /// Blocks rewritten from redundancy (bad checksum, unreadable sector,
    /// stale mirror or parity).
    pub repaired_blocks: u64,
    /// Blocks that could not be repaired.
    pub unrepairable_blocks: u64,
    /// Stripes whose parity disagreed with their data (rewritten).
    pub parity_mismatches: u64,
    /// The first few unrepairable blocks, as messages naming disk and block.
    pub errors: Vec<String>,
}

struct SlotRuntime {
    path: String,
    disk_uuid: [u8; 16],
    state: SlotState,
    member: Option<Arc<Member>>,
    reason: Option<String>,
}

struct Config {
    event: u64,
    slots: Vec<SlotRuntime>,
    failed: Option<String>,
}

#[derive(Default)]
struct Counters {
    repaired: AtomicU64,
}

struct Inner {
    name: String,
    geometry: Geometry,
    member_geometry: MemberGeometry,
    array_uuid: [u8; 16],
    config: RwLock<Config>,
    locks: Vec<RwLock<()>>,
    bitmap: Mutex<IntentBitmap>,
    epoch: AtomicU64,
    counters: Counters,
    /// Reused large buffers: fresh multi-megabyte allocations are mmapped and
    /// page-faulted on every request, which costs more than the I/O.
    buffers: Mutex<Vec<Vec<u8>>>,
    background_rebuild: bool,
    rebuild_thread: Mutex<Option<JoinHandle<()>>>,
    stop: AtomicBool,
    me: Weak<Inner>,
}

/// A checksummed volume over member disks: single, RAID-1 or RAID-5.
/// Implements [`BlockDevice`] over its logical blocks.
pub struct Volume {
    inner: Arc<Inner>,
}

/// One member-level piece of a logical request.
struct Piece {
    chunk: usize,
    member_block: u64,
    blocks: u64,
    buf_offset: usize,
}

fn bytes(blocks: u64) -> usize {
    blocks as usize * BLOCK_SIZE
}

impl Volume {
    // ------------------------------------------------------------------
    // creation and assembly
    // ------------------------------------------------------------------

    /// Creates a volume on `members` (in role order) and `spares`.
    /// Every device must be at least [`CreateSpec::member_geometry`]'s
    /// `total_blocks()` long. `zeroed` says the data areas already read as
    /// zeros (fresh image files); otherwise they are zeroed here.
    pub fn create(
        name: &str,
        spec: &CreateSpec,
        members: Vec<(String, Arc<dyn BlockDevice>)>,
        spares: Vec<(String, Arc<dyn BlockDevice>)>,
        zeroed: bool,
        options: VolumeOptions,
    ) -> Result<Volume> {
        spec.validate(members.len())?;
        let slots_total = members.len() + spares.len();
        if slots_total > MAX_SLOTS {
            return Err(RaidError::Invalid(format!(
                "at most {MAX_SLOTS} disks, not {slots_total}"
            )));
        }
        let geometry = spec.member_geometry(members.len());
        let roles = members.len();
        let mut slots = Vec::new();
        for (i, (path, device)) in members.iter().chain(spares.iter()).enumerate() {
            if device.block_size() != BLOCK_SIZE {
                return Err(RaidError::Invalid(format!(
                    "{path}: block size {} (volumes use {BLOCK_SIZE})",
                    device.block_size()
                )));
            }
            if device.block_count() < geometry.total_blocks() {
                return Err(RaidError::Invalid(format!(
                    "{path}: {} blocks, but a member needs {}",
                    device.block_count(),
                    geometry.total_blocks()
                )));
            }
            let state = if i < roles {
                SlotState::Active { role: i as u16 }
            } else {
                SlotState::Spare
            };
            let member = Member::fresh(path.clone(), device.clone(), geometry);
            if !zeroed {
                zero_data_area(&member)?;
            }
            slots.push(SlotRuntime {
                path: path.clone(),
                disk_uuid: new_uuid(),
                state,
                member: Some(Arc::new(member)),
                reason: None,
            });
        }
        let inner = Inner::new(
            name,
            Geometry {
                level: spec.level,
                layout: spec.layout,
                roles,
                chunk_blocks: spec.chunk_bytes / BLOCK_SIZE as u64,
                member_data_blocks: geometry.data_blocks,
                logical_blocks: spec.size_bytes.div_ceil(BLOCK_SIZE as u64),
            },
            geometry,
            new_uuid(),
            Config {
                event: 0,
                slots,
                failed: None,
            },
            IntentBitmap::new(geometry.regions()),
            options,
        );
        // Tables and an empty bitmap first, then the superblocks that make
        // the disks members: a crash before the superblocks leaves no volume.
        let bitmap = inner.bitmap().image(bytes(geometry.bitmap_blocks));
        for member in inner.all_members() {
            member.write_bitmap(&bitmap)?;
            member.flush()?;
        }
        {
            let mut config = inner.config_write();
            inner.persist_config(&mut config)?;
        }
        Ok(Volume { inner })
    }

    /// Assembles a volume from its disks (any order; `None` for a disk that
    /// could not be opened, with the reason). Members of another array are
    /// refused; missing, unreadable or stale members are recorded as failed
    /// and the volume runs degraded when its redundancy allows.
    pub fn assemble(
        name: &str,
        disks: Vec<(String, MemberDisk)>,
        options: VolumeOptions,
    ) -> Result<Volume> {
        let mut found: Vec<(String, Arc<dyn BlockDevice>, Superblock)> = Vec::new();
        let mut unusable: Vec<(String, String)> = Vec::new();
        for (path, device) in disks {
            match device {
                Err(reason) => unusable.push((path, reason)),
                Ok(device) => match read_superblock(&path, device.as_ref()) {
                    Ok(sb) => found.push((path, device, sb)),
                    Err(e) => unusable.push((path, e.to_string())),
                },
            }
        }
        let newest = found
            .iter()
            .max_by_key(|(_, _, sb)| sb.event)
            .map(|(_, _, sb)| sb.clone())
            .ok_or_else(|| {
                let reasons: Vec<String> =
                    unusable.iter().map(|(p, r)| format!("{p}: {r}")).collect();
                RaidError::Assembly(format!("no usable member disk ({})", reasons.join("; ")))
            })?;
        for (path, _, sb) in &found {
            if sb.array_uuid != newest.array_uuid {
                return Err(RaidError::Assembly(format!(
                    "{path} belongs to another array ({}, expected {})",
                    uuid_string(&sb.array_uuid),
                    uuid_string(&newest.array_uuid)
                )));
            }
            if (
                sb.level,
                sb.roles,
                sb.chunk_blocks,
                sb.member_data_blocks,
                sb.logical_blocks,
            ) != (
                newest.level,
                newest.roles,
                newest.chunk_blocks,
                newest.member_data_blocks,
                newest.logical_blocks,
            ) {
                return Err(RaidError::Assembly(format!(
                    "{path} disagrees with the array's geometry"
                )));
            }
        }
        let member_geometry = newest.geometry();
        let mut slots: Vec<SlotRuntime> = newest
            .slots
            .iter()
            .map(|slot| SlotRuntime {
                path: String::new(),
                disk_uuid: slot.disk_uuid,
                state: slot.state,
                member: None,
                reason: None,
            })
            .collect();
        let mut changed = false;
        for (path, device, sb) in found {
            let Some(index) = slots.iter().position(|s| s.disk_uuid == sb.disk_uuid) else {
                unusable.push((path, "not listed in the array's newest superblock".into()));
                continue;
            };
            slots[index].path = path.clone();
            if device.block_count() < member_geometry.total_blocks() {
                slots[index].reason = Some(format!(
                    "too small: {} blocks, needs {}",
                    device.block_count(),
                    member_geometry.total_blocks()
                ));
                continue;
            }
            if slots[index].state == SlotState::Failed {
                slots[index].reason = Some("marked failed".into());
                continue;
            }
            match Member::load(path.clone(), device, member_geometry) {
                Ok(member) => slots[index].member = Some(Arc::new(member)),
                Err(e) => slots[index].reason = Some(e.to_string()),
            }
        }
        // Unusable paths that match no slot: report them against slots that
        // have no path yet, in order, so status can show where they went.
        for slot in slots.iter_mut().filter(|s| s.path.is_empty()) {
            if let Some((path, reason)) = unusable.pop() {
                slot.path = path;
                slot.reason = Some(reason);
            } else {
                slot.reason = Some("no disk found".into());
            }
        }
        for slot in slots.iter_mut() {
            if slot.member.is_none() && slot.state != SlotState::Failed {
                tracing::warn!(disk = %slot.path, reason = ?slot.reason, "member missing at assembly; marking it failed");
                slot.state = SlotState::Failed;
                changed = true;
            }
        }
        let geometry = Geometry {
            level: newest.level,
            layout: newest.layout,
            roles: newest.roles as usize,
            chunk_blocks: newest.chunk_blocks as u64,
            member_data_blocks: newest.member_data_blocks,
            logical_blocks: newest.logical_blocks,
        };
        let bitmap_images: Vec<Vec<u8>> = slots
            .iter()
            .filter_map(|s| s.member.as_ref())
            .filter_map(|m| m.read_bitmap().ok())
            .collect();
        let bitmap = IntentBitmap::from_images(
            member_geometry.regions(),
            bitmap_images.iter().map(|i| &i[..]),
        );
        let inner = Inner::new(
            name,
            geometry,
            member_geometry,
            newest.array_uuid,
            Config {
                event: newest.event,
                slots,
                failed: None,
            },
            bitmap,
            options,
        );
        {
            let mut config = inner.config_write();
            changed |= inner.assign_spares(&mut config);
            if let Some(reason) = inner.redundancy_lost(&config) {
                return Err(RaidError::VolumeFailed(reason));
            }
            if changed || newest.slots.len() != config.slots.len() {
                inner.persist_config(&mut config)?;
            }
        }
        inner.resync(options.force)?;
        inner.start_rebuild_if_needed();
        Ok(Volume { inner })
    }

    // ------------------------------------------------------------------
    // I/O
    // ------------------------------------------------------------------

    pub fn read(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read(start, buf)
    }

    pub fn write(&self, start: u64, buf: &[u8]) -> Result<()> {
        self.inner.write(start, buf)
    }

    pub fn sync(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Flushes, clears the write-intent bitmap and stops the background
    /// rebuild (its progress is durable and resumes at the next assembly).
    pub fn close(self) -> Result<()> {
        self.inner.stop_rebuild();
        self.inner.flush()?;
        let image = {
            let mut bitmap = self.inner.bitmap();
            bitmap.clear_all();
            bitmap.image(bytes(self.inner.member_geometry.bitmap_blocks))
        };
        for member in self.inner.live_members() {
            member.write_bitmap(&image)?;
            member.device.flush()?;
        }
        Ok(())
    }

    pub fn geometry(&self) -> Geometry {
        self.inner.geometry
    }

    /// Layout of each member disk (where the data area starts, and so on).
    pub fn member_geometry(&self) -> MemberGeometry {
        self.inner.member_geometry
    }

    pub fn status(&self) -> VolumeStatus {
        self.inner.status()
    }

    /// Marks disk slot `index` failed (like `mdadm --fail`). A spare, if any,
    /// takes its role and is rebuilt.
    pub fn fail_disk(&self, index: usize) -> Result<()> {
        let slots = self.inner.config_read().slots.len();
        if index >= slots {
            return Err(RaidError::Invalid(format!(
                "no disk {index} (the volume has {slots})"
            )));
        }
        self.inner
            .fail_slot(index, "failed by the administrator".into());
        match self.inner.config_read().failed.clone() {
            Some(reason) => Err(RaidError::VolumeFailed(reason)),
            None => Ok(()),
        }
    }

    /// Rebuilds every rebuilding disk in this thread, calling `progress`
    /// with (blocks done, blocks total).
    pub fn rebuild(&self, mut progress: impl FnMut(u64, u64)) -> Result<()> {
        self.inner.stop_rebuild();
        let total = self.inner.member_geometry.data_blocks;
        while let Some(slot) = self.inner.next_rebuilding_slot() {
            loop {
                let done = self.inner.rebuild_step(slot)?;
                progress(done.min(total), total);
                if done >= total {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Waits for the background rebuild, if one is running.
    pub fn wait_for_rebuild(&self) {
        let handle = self
            .inner
            .rebuild_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Reads every block of every member, verifies checksums, mirrors and
    /// parity, and repairs what redundancy allows.
    pub fn scrub(&self, progress: impl FnMut(u64, u64)) -> Result<ScrubReport> {
        self.inner.scrub(progress)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.inner.stop_rebuild();
    }
}

fn zero_data_area(member: &Member) -> Result<()> {
    let zeros = vec![0u8; bytes(256)];
    let mut block = 0;
    while block < member.geometry.data_blocks {
        let n = (member.geometry.data_blocks - block).min(256);
        member
            .device
            .write_blocks(member.geometry.data_start() + block, &zeros[..bytes(n)])?;
        block += n;
    }
    Ok(())
}

fn read_superblock(path: &str, device: &dyn BlockDevice) -> Result<Superblock> {
    if device.block_size() != BLOCK_SIZE || device.block_count() < SUPERBLOCK_COPIES {
        return Err(RaidError::Format {
            path: path.to_string(),
            reason: "too small to be a volume member".into(),
        });
    }
    let mut best: Option<Superblock> = None;
    let mut first_error = None;
    for copy in 0..SUPERBLOCK_COPIES {
        let mut block = vec![0u8; BLOCK_SIZE];
        let decoded = device
            .read_blocks(copy, &mut block)
            .map_err(RaidError::from)
            .and_then(|_| Superblock::decode(path, &block));
        match decoded {
            Ok(sb) => {
                if best.as_ref().is_none_or(|b| sb.event > b.event) {
                    best = Some(sb);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    best.ok_or_else(|| first_error.expect("two copies were tried"))
}

// ----------------------------------------------------------------------
// the engine
// ----------------------------------------------------------------------

impl Inner {
    fn new(
        name: &str,
        geometry: Geometry,
        member_geometry: MemberGeometry,
        array_uuid: [u8; 16],
        config: Config,
        bitmap: IntentBitmap,
        options: VolumeOptions,
    ) -> Arc<Inner> {
        Arc::new_cyclic(|me| Inner {
            name: name.to_string(),
            geometry,
            member_geometry,
            array_uuid,
            config: RwLock::new(config),
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            bitmap: Mutex::new(bitmap),
            epoch: AtomicU64::new(IDLE_START_EPOCH),
            counters: Counters::default(),
            buffers: Mutex::new(Vec::new()),
            background_rebuild: options.background_rebuild,
            rebuild_thread: Mutex::new(None),
            stop: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn config_read(&self) -> RwLockReadGuard<'_, Config> {
        self.config.read().unwrap_or_else(|e| e.into_inner())
    }
    fn config_write(&self) -> RwLockWriteGuard<'_, Config> {
        self.config.write().unwrap_or_else(|e| e.into_inner())
    }
    fn bitmap(&self) -> MutexGuard<'_, IntentBitmap> {
        self.bitmap.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// A buffer of `len` bytes (contents unspecified) from the pool.
    fn take_buffer(&self, len: usize) -> Vec<u8> {
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        buffer.resize(len, 0);
        buffer
    }

    fn give_buffers(&self, buffers: impl IntoIterator<Item = Vec<u8>>) {
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        for buffer in buffers {
            if pool.len() < 4 * MAX_SLOTS {
                pool.push(buffer);
            }
        }
    }

    fn lock(&self, unit: u64) -> &RwLock<()> {
        &self.locks[(unit % LOCK_STRIPES as u64) as usize]
    }

    fn all_members(&self) -> Vec<Arc<Member>> {
        self.config_read()
            .slots
            .iter()
            .filter_map(|s| s.member.clone())
            .collect()
    }

    /// Members that hold data or may soon (everything but failed slots).
    fn live_members(&self) -> Vec<Arc<Member>> {
        self.config_read()
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Failed)
            .filter_map(|s| s.member.clone())
            .collect()
    }

    /// Slots serving `role`: (slot, member, member blocks below which it is valid).
    fn role_members(&self, role: usize) -> Vec<(usize, Arc<Member>, u64)> {
        let config = self.config_read();
        let mut out = Vec::new();
        for (index, slot) in config.slots.iter().enumerate() {
            let Some(member) = slot.member.clone() else {
                continue;
            };
            match slot.state {
                SlotState::Active { role: r } if r as usize == role => {
                    out.push((index, member, u64::MAX))
                }
                SlotState::Rebuilding {
                    role: r,
                    next_block,
                } if r as usize == role => out.push((index, member, next_block)),
                _ => {}
            }
        }
        // Active members first.
        out.sort_by_key(|(_, _, valid)| std::cmp::Reverse(*valid));
        out
    }

    fn check_failed(&self) -> Result<()> {
        match &self.config_read().failed {
            Some(reason) => Err(RaidError::VolumeFailed(reason.clone())),
            None => Ok(()),
        }
    }

    fn check_range(&self, start: u64, len: usize) -> Result<u64> {
        if len == 0 || !len.is_multiple_of(BLOCK_SIZE) {
            return Err(RaidError::Invalid(format!(
                "{}: buffer of {len} bytes is not a whole number of {BLOCK_SIZE}-byte blocks",
                self.name
            )));
        }
        let count = (len / BLOCK_SIZE) as u64;
        if start
            .checked_add(count)
            .is_none_or(|end| end > self.geometry.logical_blocks)
        {
            return Err(RaidError::Invalid(format!(
                "{}: blocks {start}..{} out of range (volume has {} blocks)",
                self.name,
                start.saturating_add(count),
                self.geometry.logical_blocks
            )));
        }
        Ok(count)
    }

    /// Splits a logical range into lock units and member pieces.
    fn pieces(&self, start: u64, count: u64) -> Vec<(u64, Vec<Piece>)> {
        let mut units: Vec<(u64, Vec<Piece>)> = Vec::new();
        let mut block = start;
        let end = start + count;
        while block < end {
            let place = self.geometry.place(block);
            let run = match self.geometry.level {
                Level::Raid5 => {
                    let in_chunk = place.member_block % self.geometry.chunk_blocks;
                    self.geometry.chunk_blocks - in_chunk
                }
                _ => self.geometry.unit_blocks() - block % self.geometry.unit_blocks(),
            }
            .min(end - block);
            let piece = Piece {
                chunk: place.chunk,
                member_block: place.member_block,
                blocks: run,
                buf_offset: bytes(block - start),
            };
            match units.last_mut() {
                Some((unit, pieces)) if *unit == place.unit => pieces.push(piece),
                _ => units.push((place.unit, vec![piece])),
            }
            block += run;
        }
        units
    }
}

/// Epochs start above the idle distance so regions never written read as idle.
const IDLE_START_EPOCH: u64 = crate::bitmap::IDLE_FLUSHES;

impl BlockDevice for Volume {
    fn name(&self) -> &str {
        &self.inner.name
    }
    fn block_size(&self) -> usize {
        BLOCK_SIZE
    }
    fn block_count(&self) -> u64 {
        self.inner.geometry.logical_blocks
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> keel_disk::Result<()> {
        self.read(start, buf)
            .map_err(|e| self.inner.to_disk_error(start, e))
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> keel_disk::Result<()> {
        self.write(start, buf)
            .map_err(|e| self.inner.to_disk_error(start, e))
    }
    fn flush(&self) -> keel_disk::Result<()> {
        self.sync().map_err(|e| self.inner.to_disk_error(0, e))
    }
}

impl Inner {
    fn to_disk_error(&self, start: u64, error: RaidError) -> DiskError {
        match error {
            RaidError::Disk(e) => e,
            RaidError::Unrepairable { logical_block, .. } => DiskError::Corrupt {
                device: self.name.clone(),
                block: logical_block,
                detail: error.to_string(),
            },
            RaidError::VolumeFailed(_) => DiskError::DeviceFailed {
                device: format!("{} ({error})", self.name),
            },
            other => DiskError::Corrupt {
                device: self.name.clone(),
                block: start,
                detail: other.to_string(),
            },
        }
    }
}
