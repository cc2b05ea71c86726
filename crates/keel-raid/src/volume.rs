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
// directory volumes: DIR/volume.toml lists the disks
// ----------------------------------------------------------------------

/// The manifest file in a volume directory.
pub const MANIFEST: &str = "volume.toml";

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// Member and spare disks, relative to the directory or absolute. The
    /// superblocks on the disks are authoritative; this only says where to look.
    disks: Vec<PathBuf>,
}

impl Volume {
    /// Creates a volume in directory `dir`. With `paths` empty it creates
    /// `disk0.img …` and `spare0.img …` in `dir`; otherwise it uses the given
    /// files or block devices (members first, then `spares` of them).
    pub fn create_dir(
        dir: &Path,
        spec: &CreateSpec,
        disks: usize,
        spares: usize,
        paths: &[PathBuf],
        options: VolumeOptions,
    ) -> Result<Volume> {
        std::fs::create_dir_all(dir).map_err(|source| RaidError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let manifest_path = dir.join(MANIFEST);
        if manifest_path.exists() {
            return Err(RaidError::Invalid(format!(
                "{} already exists: {} holds a volume",
                manifest_path.display(),
                dir.display()
            )));
        }
        spec.validate(disks)?;
        let geometry = spec.member_geometry(disks);
        let mut files = Vec::new();
        let created = paths.is_empty();
        if created {
            files.extend((0..disks).map(|i| PathBuf::from(format!("disk{i}.img"))));
            files.extend((0..spares).map(|i| PathBuf::from(format!("spare{i}.img"))));
        } else {
            if paths.len() != disks + spares {
                return Err(RaidError::Invalid(format!(
                    "{} --disk paths given for {disks} disks and {spares} spares",
                    paths.len()
                )));
            }
            // Paths given by the user are relative to where they stand, so
            // the manifest records them absolute.
            for path in paths {
                files.push(std::fs::canonicalize(path).map_err(|source| RaidError::Io {
                    path: path.display().to_string(),
                    source,
                })?);
            }
        }
        let mut devices: Vec<(String, Arc<dyn BlockDevice>)> = Vec::new();
        for file in &files {
            let path = dir.join(file);
            let disk = if created {
                FileDisk::create(&path, BLOCK_SIZE, geometry.total_blocks())?
            } else {
                FileDisk::open(
                    &path,
                    FileDiskOptions {
                        direct: options.direct,
                        ..FileDiskOptions::default()
                    },
                )?
            };
            devices.push((path.display().to_string(), Arc::new(disk)));
        }
        let spare_devices = devices.split_off(disks);
        let volume = Volume::create(
            &dir.display().to_string(),
            spec,
            devices,
            spare_devices,
            created,
            options,
        )?;
        let text = toml::to_string(&Manifest { disks: files })
            .map_err(|e| RaidError::Invalid(e.to_string()))?;
        write_durably(&manifest_path, text.as_bytes())?;
        Ok(volume)
    }

    /// Assembles the volume in directory `dir`.
    pub fn open_dir(dir: &Path, options: VolumeOptions) -> Result<Volume> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| RaidError::Io {
            path: manifest_path.display().to_string(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| RaidError::Format {
            path: manifest_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let disks = manifest
            .disks
            .iter()
            .map(|file| {
                let path = dir.join(file);
                let device = FileDisk::open(
                    &path,
                    FileDiskOptions {
                        direct: options.direct,
                        ..FileDiskOptions::default()
                    },
                )
                .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
                .map_err(|e| e.to_string());
                (path.display().to_string(), device)
            })
            .collect();
        Volume::assemble(&dir.display().to_string(), disks, options)
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| RaidError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    // IMPORTANT: fsync the directory so the rename (the manifest's name) is durable.
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
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

    // ---------------------------------------------------------------- reads

    fn read(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        let count = self.check_range(start, buf.len())?;
        self.check_failed()?;
        if self.geometry.level == Level::Raid5 && count >= 2 * self.geometry.unit_blocks() {
            return self.read_stripes(start, count, buf);
        }
        for (unit, pieces) in self.pieces(start, count) {
            let _guard = self.lock(unit).read().unwrap_or_else(|e| e.into_inner());
            for piece in pieces {
                let out = &mut buf[piece.buf_offset..piece.buf_offset + bytes(piece.blocks)];
                let role = match self.geometry.level {
                    Level::Raid5 => self.geometry.data_role(unit, piece.chunk),
                    // Mirrors take turns by 64 MiB stretch: a sequential
                    // stream stays on one disk (its readahead keeps working)
                    // while reads spread over the address space spread over
                    // the mirrors.
                    Level::Raid1 => (unit / 64) as usize % self.geometry.roles,
                    Level::Single => 0,
                };
                self.read_role(role, piece.member_block, out)?;
            }
        }
        Ok(())
    }

    /// RAID-5 large reads. Each member reads its data chunks of many
    /// stripes straight into the caller's buffer, one vectored read per run
    /// of consecutive chunks (parity rows are skipped, not read), all members
    /// in parallel; then every block is verified. Anything that fails
    /// verification, and every chunk of a missing member, goes through
    /// [`Inner::read_role`], which reconstructs and repairs.
    fn read_stripes(&self, start: u64, count: u64, buf: &mut [u8]) -> Result<()> {
        const STRIPES_PER_BATCH: usize = 64;
        let units = self.pieces(start, count);
        for group in units.chunks(STRIPES_PER_BATCH) {
            let mut lock_indices: Vec<usize> = group
                .iter()
                .map(|(unit, _)| (unit % LOCK_STRIPES as u64) as usize)
                .collect();
            // Ascending lock order: the only places that hold several locks
            // (here and `write_full_stripes`) take them in this order.
            lock_indices.sort_unstable();
            lock_indices.dedup();
            let _guards: Vec<_> = lock_indices
                .iter()
                .map(|&i| self.locks[i].read().unwrap_or_else(|e| e.into_inner()))
                .collect();
            // Cut the group's part of the buffer into one slice per piece and
            // hand each to the role that holds it.
            let group_start = group[0].1[0].buf_offset;
            let mut rest: &mut [u8] = &mut buf[group_start..];
            let mut per_role: Vec<Vec<(u64, &mut [u8])>> =
                (0..self.geometry.roles).map(|_| Vec::new()).collect();
            for (unit, pieces) in group {
                for piece in pieces {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(bytes(piece.blocks));
                    rest = tail;
                    per_role[self.geometry.data_role(*unit, piece.chunk)]
                        .push((piece.member_block, head));
                }
            }
            let results: Vec<Result<()>> = std::thread::scope(|scope| {
                let handles: Vec<_> = per_role
                    .into_iter()
                    .enumerate()
                    .filter(|(_, pieces)| !pieces.is_empty())
                    .map(|(role, pieces)| scope.spawn(move || self.read_role_pieces(role, pieces)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(RaidError::Invalid("a read thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for result in results {
                result?;
            }
        }
        Ok(())
    }

    /// Reads pieces of one role (ascending member blocks) with one vectored
    /// read per contiguous run, then verifies, falling back to
    /// [`Inner::read_role`] for what fails.
    fn read_role_pieces(&self, role: usize, mut pieces: Vec<(u64, &mut [u8])>) -> Result<()> {
        let end = pieces
            .last()
            .map(|(block, data)| block + (data.len() / BLOCK_SIZE) as u64)
            .unwrap_or(0);
        let reader = self
            .role_members(role)
            .into_iter()
            .find(|(_, _, valid)| *valid >= end);
        let Some((slot, member, _)) = reader else {
            for (block, data) in pieces.iter_mut() {
                self.read_role(role, *block, data)?;
            }
            return Ok(());
        };
        let mut index = 0;
        while index < pieces.len() {
            let mut run_end = index + 1;
            let mut next_block = pieces[index].0 + (pieces[index].1.len() / BLOCK_SIZE) as u64;
            while run_end < pieces.len() && pieces[run_end].0 == next_block {
                next_block += (pieces[run_end].1.len() / BLOCK_SIZE) as u64;
                run_end += 1;
            }
            let first_block = pieces[index].0;
            let read = {
                let mut slices: Vec<&mut [u8]> = pieces[index..run_end]
                    .iter_mut()
                    .map(|(_, d)| &mut **d)
                    .collect();
                member.read_raw_vectored(first_block, &mut slices)
            };
            match read {
                Ok(()) => {
                    for (block, data) in pieces[index..run_end].iter_mut() {
                        for i in 0..(data.len() / BLOCK_SIZE) as u64 {
                            let one = &mut data[bytes(i)..bytes(i + 1)];
                            if !member.verify(*block + i, one) {
                                self.read_role(role, *block + i, one)?;
                            }
                        }
                    }
                }
                Err(e) => {
                    if e.is_device_fatal() {
                        self.fail_slot(slot, e.to_string());
                    }
                    for (block, data) in pieces[index..run_end].iter_mut() {
                        self.read_role(role, *block, data)?;
                    }
                }
            }
            index = run_end;
        }
        Ok(())
    }

    /// Reads member blocks of `role` (RAID-1: of any mirror, starting with
    /// `role`), verifies each against its checksum and repairs what fails.
    fn read_role(&self, role: usize, member_block: u64, out: &mut [u8]) -> Result<()> {
        let count = (out.len() / BLOCK_SIZE) as u64;
        let mut candidates = self.role_members(role);
        if self.geometry.level == Level::Raid1 {
            for other in (0..self.geometry.roles).filter(|r| *r != role) {
                candidates.extend(self.role_members(other));
            }
        }
        let reader = candidates
            .iter()
            .find(|(_, _, valid)| *valid >= member_block + count)
            .cloned();
        let mut bad: Vec<u64> = Vec::new();
        match &reader {
            None => bad.extend(0..count),
            Some((slot, member, _)) => match member.read_raw(member_block, out) {
                Ok(()) => {
                    for i in 0..count {
                        if !member.verify(member_block + i, &out[bytes(i)..bytes(i + 1)]) {
                            bad.push(i);
                        }
                    }
                }
                Err(e) if e.is_device_fatal() => {
                    self.fail_slot(*slot, e.to_string());
                    bad.extend(0..count);
                }
                Err(_) => {
                    // Find which blocks are unreadable, one by one.
                    for i in 0..count {
                        let one = &mut out[bytes(i)..bytes(i + 1)];
                        match member.read_raw(member_block + i, one) {
                            Ok(()) if member.verify(member_block + i, one) => {}
                            _ => bad.push(i),
                        }
                    }
                }
            },
        }
        for i in bad {
            let block = member_block + i;
            let (bad_slot, bad_member) = match &reader {
                Some((slot, member, _)) => (Some(*slot), Some(member.clone())),
                None => (None, None),
            };
            let raw = out[bytes(i)..bytes(i + 1)].to_vec();
            let data =
                self.recover_block(role, block, bad_member.as_deref().map(|m| (m, &raw[..])))?;
            out[bytes(i)..bytes(i + 1)].copy_from_slice(&data);
            if let (Some(slot), Some(member)) = (bad_slot, bad_member) {
                self.repair(slot, &member, block, &data);
            }
        }
        Ok(())
    }

    /// One verified block of `role`, without any repair, if some member has it.
    fn read_verified_block(&self, role: usize, block: u64) -> Option<Vec<u8>> {
        for (_, member, valid) in self.role_members(role) {
            if valid <= block {
                continue;
            }
            let mut data = vec![0u8; BLOCK_SIZE];
            if member.read_raw(block, &mut data).is_ok() && member.verify(block, &data) {
                return Some(data);
            }
        }
        None
    }

    /// Recomputes block `block` of `role` from redundancy. `bad` is the
    /// member copy that failed (with what it returned), used to check the
    /// result against the checksum that member expects.
    fn recover_block(
        &self,
        role: usize,
        block: u64,
        bad: Option<(&Member, &[u8])>,
    ) -> Result<Vec<u8>> {
        let unrepairable = |reason: &str| {
            let disk = bad
                .map(|(m, _)| m.path.clone())
                .unwrap_or_else(|| format!("member {role} (missing)"));
            RaidError::Unrepairable {
                logical_block: self.logical_of(role, block).unwrap_or(u64::MAX),
                disk,
                member_block: block,
                reason: reason.to_string(),
            }
        };
        let data = match self.geometry.level {
            Level::Single => {
                return Err(unrepairable(
                    "checksum mismatch or read error, and a single disk has no redundancy",
                ))
            }
            Level::Raid1 => (0..self.geometry.roles)
                .filter(|r| *r != role)
                .find_map(|r| self.read_verified_block(r, block))
                .ok_or_else(|| unrepairable("no mirror holds a copy that passes its checksum"))?,
            Level::Raid5 => {
                let mut sum = vec![0u8; BLOCK_SIZE];
                for other in (0..self.geometry.roles).filter(|r| *r != role) {
                    let data = self.read_verified_block(other, block).ok_or_else(|| {
                        unrepairable("another block of the same stripe is also lost")
                    })?;
                    xor_into(&mut sum, &data);
                }
                sum
            }
        };
        if let Some((member, raw)) = bad {
            // The reconstruction must match what the failed copy's checksum
            // says, or equal the copy itself (then the checksum entry was the
            // damaged part). Anything else is an inconsistent stripe.
            let matches_checksum = crc32c::crc32c(&data) == member.expected_crc(block);
            if !matches_checksum && data != raw {
                return Err(unrepairable(
                    "reconstruction does not match the block's checksum",
                ));
            }
        }
        Ok(data)
    }

    fn logical_of(&self, role: usize, member_block: u64) -> Option<u64> {
        match self.geometry.level {
            Level::Raid5 => {
                let stripe = member_block / self.geometry.chunk_blocks;
                let chunk = (0..self.geometry.data_chunks())
                    .find(|c| self.geometry.data_role(stripe, *c) == role)?;
                Some(
                    stripe * self.geometry.unit_blocks()
                        + chunk as u64 * self.geometry.chunk_blocks
                        + member_block % self.geometry.chunk_blocks,
                )
            }
            _ => Some(member_block),
        }
    }

    /// Rewrites a block that failed verification with recovered data.
    fn repair(&self, slot: usize, member: &Member, block: u64, data: &[u8]) {
        let result = self.with_intent(block, 1, || {
            member.write(block, data).map_err(RaidError::from)
        });
        match result {
            Ok(()) => {
                self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(disk = %member.path, member_block = block, "repaired block from redundancy");
            }
            Err(e) => self.fail_slot(slot, format!("repair write failed: {e}")),
        }
    }

    // --------------------------------------------------------------- writes

    fn write(&self, start: u64, buf: &[u8]) -> Result<()> {
        let count = self.check_range(start, buf.len())?;
        self.check_failed()?;
        if self.geometry.level == Level::Raid5 {
            // Whole stripes in the middle go out as large full-stripe writes;
            // the partial stripes at either end take the read-modify-write path.
            let unit = self.geometry.unit_blocks();
            let first_full = start.div_ceil(unit) * unit;
            let end_full = (start + count) / unit * unit;
            if end_full >= first_full + 2 * unit {
                let offset = |block: u64| bytes(block - start);
                if first_full > start {
                    self.write(start, &buf[..offset(first_full)])?;
                }
                self.write_full_stripes(
                    first_full / unit,
                    end_full / unit,
                    &buf[offset(first_full)..offset(end_full)],
                )?;
                if start + count > end_full {
                    self.write(end_full, &buf[offset(end_full)..])?;
                }
                return Ok(());
            }
        }
        for (unit, pieces) in self.pieces(start, count) {
            let _guard = self.lock(unit).write().unwrap_or_else(|e| e.into_inner());
            match self.geometry.level {
                Level::Raid5 => self.write_stripe(unit, &pieces, buf)?,
                _ => {
                    for piece in &pieces {
                        let data = &buf[piece.buf_offset..piece.buf_offset + bytes(piece.blocks)];
                        self.with_intent(piece.member_block, piece.blocks, || {
                            for role in 0..self.geometry.roles {
                                self.write_role(role, piece.member_block, data);
                            }
                            Ok(())
                        })?;
                    }
                }
            }
            self.check_failed()?;
        }
        Ok(())
    }

    /// RAID-5 full-stripe writes of stripes `[first, end)` (`buf` holds their
    /// data): parity from the new data alone, no reads, and one large write
    /// per member, issued in parallel.
    fn write_full_stripes(&self, first: u64, end: u64, buf: &[u8]) -> Result<()> {
        const STRIPES_PER_BATCH: u64 = 64;
        let chunk = self.geometry.chunk_blocks;
        let per_stripe = bytes(self.geometry.unit_blocks());
        let mut stripe = first;
        while stripe < end {
            let batch_end = (stripe + STRIPES_PER_BATCH).min(end);
            let mut lock_indices: Vec<usize> = (stripe..batch_end)
                .map(|unit| (unit % LOCK_STRIPES as u64) as usize)
                .collect();
            // Ascending lock order, as in `read_stripes`.
            lock_indices.sort_unstable();
            lock_indices.dedup();
            let _guards: Vec<_> = lock_indices
                .iter()
                .map(|&i| self.locks[i].write().unwrap_or_else(|e| e.into_inner()))
                .collect();
            let first_row = stripe * chunk;
            let rows = (batch_end - stripe) * chunk;
            let stripes = (batch_end - stripe) as usize;
            // Parity for each stripe of the batch, back to back.
            let mut parity = self.take_buffer(bytes(rows));
            // Per role, the list of chunk buffers to write, in row order:
            // data straight from the caller's buffer, parity from `parity`.
            let mut gather: Vec<Vec<(usize, bool)>> =
                vec![Vec::with_capacity(stripes); self.geometry.roles];
            for s in stripe..batch_end {
                let index = (s - stripe) as usize;
                let data_at = (s - first) as usize * per_stripe;
                let parity_at = bytes(index as u64 * chunk);
                let target = &mut parity[parity_at..parity_at + bytes(chunk)];
                for k in 0..self.geometry.data_chunks() {
                    let at = data_at + bytes(k as u64 * chunk);
                    let piece = &buf[at..at + bytes(chunk)];
                    if k == 0 {
                        target.copy_from_slice(piece);
                    } else {
                        xor_into(target, piece);
                    }
                    gather[self.geometry.data_role(s, k)].push((at, false));
                }
                gather[self.geometry.parity_role(s)].push((parity_at, true));
            }
            let parity_ref = &parity;
            self.with_intent(first_row, rows, || {
                std::thread::scope(|scope| {
                    for (role, pieces) in gather.iter().enumerate() {
                        scope.spawn(move || {
                            let slices: Vec<&[u8]> = pieces
                                .iter()
                                .map(|&(at, is_parity)| {
                                    let source: &[u8] = if is_parity { parity_ref } else { buf };
                                    &source[at..at + bytes(chunk)]
                                })
                                .collect();
                            for (slot, member, _) in self.role_members(role) {
                                if let Err(e) = member.write_vectored(first_row, &slices) {
                                    self.fail_slot(slot, format!("write failed: {e}"));
                                }
                            }
                        });
                    }
                });
                Ok(())
            })?;
            self.give_buffers([parity]);
            self.check_failed()?;
            stripe = batch_end;
        }
        Ok(())
    }

    /// RAID-5: writes the pieces of one stripe and its new parity. Parity is
    /// recomputed from the full data of the touched rows (reconstruct-write),
    /// so it never depends on old parity being right.
    fn write_stripe(&self, stripe: u64, pieces: &[Piece], buf: &[u8]) -> Result<()> {
        let chunk = self.geometry.chunk_blocks;
        let base = stripe * chunk;
        let low = pieces
            .iter()
            .map(|p| p.member_block - base)
            .min()
            .expect("a piece");
        let high = pieces
            .iter()
            .map(|p| p.member_block - base + p.blocks)
            .max()
            .expect("a piece");
        let rows = high - low;
        let mut data: Vec<Vec<u8>> = Vec::with_capacity(self.geometry.data_chunks());
        for k in 0..self.geometry.data_chunks() {
            let mine: Vec<&Piece> = pieces.iter().filter(|p| p.chunk == k).collect();
            let covered: u64 = mine.iter().map(|p| p.blocks).sum();
            let mut rows_data = vec![0u8; bytes(rows)];
            if covered < rows {
                let role = self.geometry.data_role(stripe, k);
                self.read_role(role, base + low, &mut rows_data)?;
            }
            for piece in mine {
                let at = bytes(piece.member_block - base - low);
                rows_data[at..at + bytes(piece.blocks)].copy_from_slice(
                    &buf[piece.buf_offset..piece.buf_offset + bytes(piece.blocks)],
                );
            }
            data.push(rows_data);
        }
        let mut parity = data[0].clone();
        for other in &data[1..] {
            xor_into(&mut parity, other);
        }
        self.with_intent(base + low, rows, || {
            for piece in pieces {
                let role = self.geometry.data_role(stripe, piece.chunk);
                let at = bytes(piece.member_block - base - low);
                self.write_role(
                    role,
                    piece.member_block,
                    &data[piece.chunk][at..at + bytes(piece.blocks)],
                );
            }
            self.write_role(self.geometry.parity_role(stripe), base + low, &parity);
            Ok(())
        })
    }

    /// Writes member blocks of `role` to every disk serving it; a disk that
    /// fails the write is failed (and the volume marked failed if that costs
    /// the last redundancy).
    fn write_role(&self, role: usize, member_block: u64, data: &[u8]) {
        for (slot, member, _) in self.role_members(role) {
            if let Err(e) = member.write(member_block, data) {
                self.fail_slot(slot, format!("write failed: {e}"));
            }
        }
    }

    /// Runs `write` with the regions of member blocks
    /// `[member_block, member_block + count)` marked in the write-intent
    /// bitmap, which is durable on every member before `write` starts.
    fn with_intent(
        &self,
        member_block: u64,
        count: u64,
        write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let region = self.member_geometry.region_blocks;
        let regions = member_block / region..=(member_block + count - 1) / region;
        {
            let mut bitmap = self.bitmap();
            if bitmap.begin(regions.clone(), self.epoch.load(Ordering::Acquire)) {
                let image = bitmap.image(bytes(self.member_geometry.bitmap_blocks));
                // The bitmap goes to stable storage before the data write it
                // announces: this ordering is what makes resync sufficient.
                if let Err(e) = self.persist_bitmap(&image, true) {
                    bitmap.end(regions);
                    return Err(e);
                }
            }
        }
        let result = write();
        self.bitmap().end(regions);
        result
    }

    fn persist_bitmap(&self, image: &[u8], flush: bool) -> Result<()> {
        let targets: Vec<(usize, Arc<Member>)> = {
            let config = self.config_read();
            config
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != SlotState::Failed)
                .filter_map(|(i, s)| s.member.clone().map(|m| (i, m)))
                .collect()
        };
        for (slot, member) in targets {
            let result = member.write_bitmap(image).and_then(|_| {
                if flush {
                    member.device.flush()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                self.fail_slot(slot, format!("bitmap write failed: {e}"));
            }
        }
        self.check_failed()
    }

    fn flush(&self) -> Result<()> {
        self.check_failed()?;
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        let candidates = self.bitmap().clear_candidates(epoch);
        let targets: Vec<(usize, Arc<Member>)> = {
            let config = self.config_read();
            config
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != SlotState::Failed)
                .filter_map(|(i, s)| s.member.clone().map(|m| (i, m)))
                .collect()
        };
        // Members flush in parallel: each fdatasync waits on its own disk.
        let results: Vec<(usize, keel_disk::Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(slot, member)| (*slot, scope.spawn(move || member.flush())))
                .collect();
            handles
                .into_iter()
                .map(|(slot, handle)| {
                    let result = handle.join().unwrap_or_else(|_| {
                        Err(DiskError::DeviceFailed {
                            device: format!("slot {slot} (flush thread panicked)"),
                        })
                    });
                    (slot, result)
                })
                .collect()
        });
        for (slot, result) in results {
            if let Err(e) = result {
                self.fail_slot(slot, format!("flush failed: {e}"));
            }
        }
        self.check_failed()?;
        if !candidates.is_empty() {
            let mut bitmap = self.bitmap();
            if bitmap.clear(&candidates, epoch) {
                let image = bitmap.image(bytes(self.member_geometry.bitmap_blocks));
                // Clearing need not be durable now: a bit left set only costs
                // a resync of a region that is already consistent.
                self.persist_bitmap(&image, false)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------- configuration

    /// Writes the configuration to every live disk's superblock (the copy
    /// chosen by the new event's parity, so the previous one survives a torn
    /// write) and flushes it.
    fn persist_config(&self, config: &mut Config) -> Result<()> {
        for _attempt in 0..=config.slots.len() {
            config.event += 1;
            let slots: Vec<Slot> = config
                .slots
                .iter()
                .map(|s| Slot {
                    disk_uuid: s.disk_uuid,
                    state: s.state,
                })
                .collect();
            let mut newly_failed = Vec::new();
            for (index, slot) in config.slots.iter().enumerate() {
                let Some(member) = &slot.member else { continue };
                let sb = Superblock {
                    array_uuid: self.array_uuid,
                    disk_uuid: slot.disk_uuid,
                    event: config.event,
                    level: self.geometry.level,
                    layout: self.geometry.layout,
                    roles: self.geometry.roles as u16,
                    this_slot: index as u16,
                    chunk_blocks: self.geometry.chunk_blocks as u32,
                    region_blocks: self.member_geometry.region_blocks as u32,
                    member_data_blocks: self.member_geometry.data_blocks,
                    logical_blocks: self.geometry.logical_blocks,
                    slots: slots.clone(),
                };
                let result = member
                    .device
                    .write_blocks(config.event % SUPERBLOCK_COPIES, &sb.encode())
                    .and_then(|_| member.device.flush());
                // A failed disk that can still be written learns that it is
                // failed, so it can never be assembled later as if current.
                // Failing to tell it is expected (it failed) and harmless.
                if slot.state == SlotState::Failed {
                    continue;
                }
                if let Err(e) = result {
                    newly_failed.push((index, e));
                }
            }
            if newly_failed.is_empty() {
                return Ok(());
            }
            for (index, e) in newly_failed {
                tracing::error!(disk = %config.slots[index].path, error = %e, "superblock write failed; failing disk");
                config.slots[index].state = SlotState::Failed;
                config.slots[index].reason = Some(format!("superblock write failed: {e}"));
            }
            self.assign_spares(config);
            if let Some(reason) = self.redundancy_lost(config) {
                config.failed = Some(reason.clone());
                return Err(RaidError::VolumeFailed(reason));
            }
        }
        Err(RaidError::VolumeFailed(
            "superblocks could not be written".into(),
        ))
    }

    /// Gives every role that no disk serves to a spare (as rebuilding).
    fn assign_spares(&self, config: &mut Config) -> bool {
        let mut changed = false;
        for role in 0..self.geometry.roles as u16 {
            let served = config.slots.iter().any(|s| s.state.role() == Some(role));
            if served {
                continue;
            }
            let spare = config
                .slots
                .iter()
                .position(|s| s.state == SlotState::Spare && s.member.is_some());
            if let Some(spare) = spare {
                if self.geometry.level == Level::Single {
                    break;
                }
                tracing::info!(disk = %config.slots[spare].path, role, "spare takes over; rebuild starts");
                config.slots[spare].state = SlotState::Rebuilding {
                    role,
                    next_block: 0,
                };
                changed = true;
            }
        }
        changed
    }

    /// Why the data is no longer available, if it is not.
    fn redundancy_lost(&self, config: &Config) -> Option<String> {
        let missing: Vec<u16> = (0..self.geometry.roles as u16)
            .filter(|role| {
                !config
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Active { role: *role } && s.member.is_some())
            })
            .collect();
        let allowed = self.geometry.level.redundancy(self.geometry.roles);
        if missing.len() > allowed {
            let reasons: Vec<String> = config
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Failed || s.member.is_none())
                .map(|s| format!("{} ({})", s.path, s.reason.as_deref().unwrap_or("failed")))
                .collect();
            Some(format!(
                "{} of {} members lost, {} can survive losing {allowed}: {}",
                missing.len(),
                self.geometry.roles,
                self.geometry.level.name(),
                reasons.join(", ")
            ))
        } else {
            None
        }
    }

    fn fail_slot(&self, index: usize, reason: String) {
        {
            let mut config = self.config_write();
            if config.slots[index].state == SlotState::Failed {
                return;
            }
            tracing::error!(disk = %config.slots[index].path, %reason, "failing disk");
            config.slots[index].state = SlotState::Failed;
            config.slots[index].reason = Some(reason);
            self.assign_spares(&mut config);
            if let Some(lost) = self.redundancy_lost(&config) {
                config.failed = Some(lost);
            }
            if let Err(e) = self.persist_config(&mut config) {
                tracing::error!(error = %e, "could not record the failure in the superblocks");
                config.failed.get_or_insert_with(|| e.to_string());
            }
        }
        self.start_rebuild_if_needed();
    }

    fn status(&self) -> VolumeStatus {
        let config = self.config_read();
        let total = self.member_geometry.data_blocks.max(1);
        let disks: Vec<DiskStatus> = config
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let state = if slot.member.is_none() && slot.state != SlotState::Failed {
                    "missing".to_string()
                } else {
                    slot.state.name().to_string()
                };
                DiskStatus {
                    index,
                    path: slot.path.clone(),
                    role: if slot.state.role().is_some() || index < self.geometry.roles {
                        "member".into()
                    } else {
                        "spare".into()
                    },
                    member_index: slot.state.role(),
                    state,
                    rebuild_progress: match slot.state {
                        SlotState::Rebuilding { next_block, .. } => {
                            Some(next_block as f64 / total as f64)
                        }
                        _ => None,
                    },
                    reason: slot.reason.clone(),
                }
            })
            .collect();
        let active_roles = (0..self.geometry.roles as u16)
            .filter(|role| {
                config
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Active { role: *role } && s.member.is_some())
            })
            .count();
        let rebuilding = config
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Rebuilding { .. }));
        let state = if config.failed.is_some() || self.redundancy_lost(&config).is_some() {
            VolumeState::Failed
        } else if rebuilding {
            VolumeState::Rebuilding
        } else if active_roles < self.geometry.roles {
            VolumeState::Degraded
        } else {
            VolumeState::Healthy
        };
        VolumeStatus {
            level: self.geometry.level,
            layout: self.geometry.layout,
            state,
            size_bytes: self.geometry.logical_blocks * BLOCK_SIZE as u64,
            chunk_bytes: self.geometry.chunk_blocks * BLOCK_SIZE as u64,
            uuid: uuid_string(&self.array_uuid),
            event: config.event,
            dirty_regions: self.bitmap().dirty_regions().len(),
            repaired_blocks: self.counters.repaired.load(Ordering::Relaxed),
            disks,
        }
    }

    // -------------------------------------------------------------- rebuild

    fn next_rebuilding_slot(&self) -> Option<usize> {
        self.config_read()
            .slots
            .iter()
            .position(|s| matches!(s.state, SlotState::Rebuilding { .. }) && s.member.is_some())
    }

    fn start_rebuild_if_needed(&self) {
        if !self.background_rebuild || self.next_rebuilding_slot().is_none() {
            return;
        }
        let mut thread = self
            .rebuild_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        *thread = Some(std::thread::spawn(move || {
            while let Some(slot) = me.next_rebuilding_slot() {
                loop {
                    if me.stop.load(Ordering::Acquire) {
                        return;
                    }
                    match me.rebuild_step(slot) {
                        Ok(done) if done >= me.member_geometry.data_blocks => break,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "background rebuild stopped");
                            return;
                        }
                    }
                }
            }
        }));
    }

    fn stop_rebuild(&self) {
        self.stop.store(true, Ordering::Release);
        let handle = self
            .rebuild_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        self.stop.store(false, Ordering::Release);
    }

    /// Rebuilds one lock unit of the disk in `slot`; returns the member
    /// blocks now valid on it.
    fn rebuild_step(&self, slot: usize) -> Result<u64> {
        let (role, next, member) = {
            let config = self.config_read();
            let s = &config.slots[slot];
            match (s.state, &s.member) {
                (SlotState::Rebuilding { role, next_block }, Some(member)) => {
                    (role as usize, next_block, member.clone())
                }
                _ => return Ok(self.member_geometry.data_blocks),
            }
        };
        let total = self.member_geometry.data_blocks;
        if next < total {
            let unit = next / self.geometry.unit_member_blocks();
            let end = ((unit + 1) * self.geometry.unit_member_blocks()).min(total);
            let count = end - next;
            let _guard = self.lock(unit).write().unwrap_or_else(|e| e.into_inner());
            let mut data = vec![0u8; bytes(count)];
            match self.geometry.level {
                Level::Single => {
                    return Err(RaidError::Invalid(
                        "a single-disk volume cannot be rebuilt".into(),
                    ))
                }
                Level::Raid1 => {
                    let source = (0..self.geometry.roles)
                        .find(|r| {
                            *r != role
                                && self.role_members(*r).iter().any(|(_, _, v)| *v == u64::MAX)
                        })
                        .ok_or_else(|| {
                            RaidError::VolumeFailed("no healthy mirror to rebuild from".into())
                        })?;
                    self.read_role(source, next, &mut data)?;
                }
                Level::Raid5 => {
                    let mut piece = vec![0u8; bytes(count)];
                    for other in (0..self.geometry.roles).filter(|r| *r != role) {
                        self.read_role(other, next, &mut piece)?;
                        xor_into(&mut data, &piece);
                    }
                }
            }
            if let Err(e) = member.write(next, &data) {
                self.fail_slot(slot, format!("rebuild write failed: {e}"));
                return Err(e.into());
            }
            let mut config = self.config_write();
            if let SlotState::Rebuilding { next_block, .. } = &mut config.slots[slot].state {
                *next_block = end;
            }
            let crossed = end / REBUILD_PERSIST_BLOCKS != next / REBUILD_PERSIST_BLOCKS;
            if end >= total || crossed {
                // The rebuilt blocks and their checksums must be durable before
                // the superblock says they are.
                if let Err(e) = member.flush() {
                    drop(config);
                    self.fail_slot(slot, format!("flush failed during rebuild: {e}"));
                    return Err(e.into());
                }
                if end >= total {
                    config.slots[slot].state = SlotState::Active { role: role as u16 };
                    tracing::info!(disk = %member.path, "rebuild complete");
                }
                self.persist_config(&mut config)?;
            }
            return Ok(end);
        }
        let mut config = self.config_write();
        config.slots[slot].state = SlotState::Active { role: role as u16 };
        self.persist_config(&mut config)?;
        Ok(total)
    }

    // ---------------------------------------------------- resync and scrub

    /// Makes every region marked in the write-intent bitmap consistent:
    /// checksums match data, mirrors agree, parity matches data.
    fn resync(&self, force: bool) -> Result<()> {
        let dirty = self.bitmap().dirty_regions();
        if dirty.is_empty() {
            return Ok(());
        }
        let degraded = {
            let config = self.config_read();
            (0..self.geometry.roles as u16).any(|role| {
                !config
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Active { role } && s.member.is_some())
            })
        };
        if degraded && self.geometry.level == Level::Raid5 && !force {
            return Err(RaidError::Assembly(format!(
                "{}: the volume was not shut down cleanly while degraded; {} region(s) may hold stripes \
                 that no longer reconstruct (the RAID-5 write hole). Reassemble with --force to accept \
                 them, or restore the missing disk first",
                self.name,
                dirty.len()
            )));
        }
        tracing::info!(
            regions = dirty.len(),
            "resyncing regions written at the last crash"
        );
        let region = self.member_geometry.region_blocks;
        // Resync repairs the active members only; a disk being rebuilt must
        // not keep rows that resync may change, so its rebuild restarts from
        // the first dirty region below its mark.
        {
            let first_dirty = dirty[0] * region;
            let mut config = self.config_write();
            let mut moved = false;
            for slot in config.slots.iter_mut() {
                if let SlotState::Rebuilding { next_block, .. } = &mut slot.state {
                    if *next_block > first_dirty {
                        *next_block = first_dirty;
                        moved = true;
                    }
                }
            }
            if moved {
                self.persist_config(&mut config)?;
            }
        }
        for r in &dirty {
            let first = r * region;
            let end = ((r + 1) * region).min(self.member_geometry.data_blocks);
            let mut block = first;
            while block < end {
                let unit = block / self.geometry.unit_member_blocks();
                let unit_end = ((unit + 1) * self.geometry.unit_member_blocks()).min(end);
                self.resync_rows(block, unit_end - block)?;
                block = unit_end;
            }
        }
        for member in self.live_members() {
            member.flush()?;
        }
        let image = {
            let mut bitmap = self.bitmap();
            bitmap.clear_all();
            bitmap.image(bytes(self.member_geometry.bitmap_blocks))
        };
        self.persist_bitmap(&image, true)
    }

    /// Resync of member rows `[first, first + count)` of one lock unit.
    fn resync_rows(&self, first: u64, count: u64) -> Result<()> {
        let readers: Vec<Vec<(usize, Arc<Member>)>> = (0..self.geometry.roles)
            .map(|role| {
                self.role_members(role)
                    .into_iter()
                    .filter(|(_, _, valid)| *valid == u64::MAX)
                    .map(|(slot, member, _)| (slot, member))
                    .collect()
            })
            .collect();
        let mut rows: Vec<Option<Vec<u8>>> = Vec::new();
        for role_readers in &readers {
            let Some((slot, member)) = role_readers.first() else {
                rows.push(None);
                continue;
            };
            let mut data = vec![0u8; bytes(count)];
            match member.read_raw(first, &mut data) {
                Ok(()) => rows.push(Some(data)),
                Err(e) => {
                    self.fail_slot(*slot, format!("read failed during resync: {e}"));
                    rows.push(None);
                }
            }
        }
        match self.geometry.level {
            Level::Single => {
                if let (Some(data), Some((_, member))) = (&rows[0], readers[0].first()) {
                    member.set_crcs(first, data);
                }
            }
            Level::Raid1 => {
                // Per block: a copy that matches its own checksum wins;
                // otherwise the first mirror's copy. Then all mirrors agree.
                for i in 0..count {
                    let span = bytes(i)..bytes(i + 1);
                    let mut chosen: Option<Vec<u8>> = None;
                    for (role, row) in rows.iter().enumerate() {
                        if let (Some(row), Some((_, member))) = (row, readers[role].first()) {
                            if member.verify(first + i, &row[span.clone()]) {
                                chosen = Some(row[span.clone()].to_vec());
                                break;
                            }
                        }
                    }
                    let chosen = match chosen {
                        Some(c) => c,
                        None => match rows.iter().flatten().next() {
                            Some(row) => row[span.clone()].to_vec(),
                            None => continue,
                        },
                    };
                    for (role, row) in rows.iter().enumerate() {
                        let Some((slot, member)) = readers[role].first() else {
                            continue;
                        };
                        let same = row.as_ref().is_some_and(|r| r[span.clone()] == chosen[..]);
                        if same {
                            member.set_crcs(first + i, &chosen);
                        } else if let Err(e) = member.write(first + i, &chosen) {
                            self.fail_slot(*slot, format!("resync write failed: {e}"));
                        }
                    }
                }
            }
            Level::Raid5 => {
                let stripe = first / self.geometry.chunk_blocks;
                let parity_role = self.geometry.parity_role(stripe);
                let mut parity = vec![0u8; bytes(count)];
                let mut complete = true;
                for role in (0..self.geometry.roles).filter(|r| *r != parity_role) {
                    match (&rows[role], readers[role].first()) {
                        (Some(data), Some((_, member))) => {
                            member.set_crcs(first, data);
                            xor_into(&mut parity, data);
                        }
                        _ => complete = false,
                    }
                }
                if complete {
                    if let Some((slot, member)) = readers[parity_role].first() {
                        if rows[parity_role].as_deref() != Some(&parity[..]) {
                            if let Err(e) = member.write(first, &parity) {
                                self.fail_slot(*slot, format!("resync write failed: {e}"));
                            }
                        } else {
                            member.set_crcs(first, &parity);
                        }
                    }
                } else if let (Some(data), Some((_, member))) =
                    (&rows[parity_role], readers[parity_role].first())
                {
                    // Degraded (forced): parity is all there is for the lost
                    // member's data; keep it and vouch for it as it stands.
                    member.set_crcs(first, data);
                }
            }
        }
        Ok(())
    }

    fn scrub(&self, mut progress: impl FnMut(u64, u64)) -> Result<ScrubReport> {
        self.check_failed()?;
        let mut report = ScrubReport::default();
        let total = self.member_geometry.data_blocks;
        let unit_blocks = self.geometry.unit_member_blocks();
        let mut block = 0;
        while block < total {
            let unit = block / unit_blocks;
            let count = (unit_blocks).min(total - block);
            {
                let _guard = self.lock(unit).write().unwrap_or_else(|e| e.into_inner());
                self.scrub_rows(unit, block, count, &mut report);
            }
            block += count;
            progress(block, total);
        }
        self.flush()?;
        Ok(report)
    }

    fn scrub_rows(&self, unit: u64, first: u64, count: u64, report: &mut ScrubReport) {
        // Verify every copy of every role, repairing what fails.
        let mut rows: Vec<Option<Vec<u8>>> = Vec::new();
        for role in 0..self.geometry.roles {
            let members: Vec<(usize, Arc<Member>)> = self
                .role_members(role)
                .into_iter()
                .filter(|(_, _, valid)| *valid >= first + count)
                .map(|(s, m, _)| (s, m))
                .collect();
            let mut good_row: Option<Vec<u8>> = None;
            for (slot, member) in members {
                let mut data = vec![0u8; bytes(count)];
                let read = member.read_raw(first, &mut data);
                for i in 0..count {
                    report.checked_blocks += 1;
                    let span = bytes(i)..bytes(i + 1);
                    let mut ok = read.is_ok() && member.verify(first + i, &data[span.clone()]);
                    if !ok && read.is_err() {
                        let mut one = vec![0u8; BLOCK_SIZE];
                        if member.read_raw(first + i, &mut one).is_ok()
                            && member.verify(first + i, &one)
                        {
                            data[span.clone()].copy_from_slice(&one);
                            ok = true;
                        }
                    }
                    if ok {
                        continue;
                    }
                    let raw = data[span.clone()].to_vec();
                    match self.recover_block(role, first + i, Some((&member, &raw))) {
                        Ok(fixed) => {
                            data[span.clone()].copy_from_slice(&fixed);
                            self.repair(slot, &member, first + i, &fixed);
                            report.repaired_blocks += 1;
                        }
                        Err(e) => {
                            report.unrepairable_blocks += 1;
                            if report.errors.len() < 16 {
                                report.errors.push(e.to_string());
                            }
                        }
                    }
                }
                if self.geometry.level == Level::Raid1 {
                    // Mirrors must agree; a copy with a valid checksum that
                    // differs from the first mirror is stale (resync missed).
                    match &good_row {
                        None => good_row = Some(data),
                        Some(reference) if *reference != data => {
                            for i in 0..count {
                                let span = bytes(i)..bytes(i + 1);
                                if reference[span.clone()] != data[span.clone()] {
                                    self.repair(slot, &member, first + i, &reference[span]);
                                    report.repaired_blocks += 1;
                                }
                            }
                        }
                        Some(_) => {}
                    }
                } else if good_row.is_none() {
                    good_row = Some(data);
                }
            }
            rows.push(good_row);
        }
        if self.geometry.level == Level::Raid5 && rows.iter().all(|r| r.is_some()) {
            let parity_role = self.geometry.parity_role(unit);
            let mut parity = vec![0u8; bytes(count)];
            for (role, row) in rows.iter().enumerate() {
                if role != parity_role {
                    xor_into(&mut parity, row.as_ref().expect("checked"));
                }
            }
            if rows[parity_role].as_deref() != Some(&parity[..]) {
                report.parity_mismatches += 1;
                for (slot, member, _) in self.role_members(parity_role) {
                    if let Err(e) = member.write(first, &parity) {
                        self.fail_slot(slot, format!("parity rewrite failed: {e}"));
                    }
                }
            }
        }
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
