//! `SimDisk`: a deterministic, seeded model of a disk that crashes and rots.
//!
//! Fault model (the zones TigerBeetle's simulator names, written for keel):
//!
//! | fault | what happens | how it is injected |
//! |---|---|---|
//! | crash | every flushed write survives; each unflushed write survives whole, not at all, or torn at [`SECTOR_SIZE`] boundaries; survivors land in any order (a later write to a sector can be overtaken by an earlier one) | [`SimDisk::crash`] |
//! | latent sector error | reads touching the block fail with [`DiskError::Media`] until the block is rewritten (drives remap on write) | [`SimDisk::inject_read_error`], or `read_error_ppm` |
//! | bit rot | bits of the stored block flip; later reads return them silently | [`SimDisk::inject_bit_rot`], or `bit_rot_ppm` |
//! | misdirected write | a block lands at another block number; the intended block keeps its old contents | [`SimDisk::misdirect_next_write`], or `misdirect_ppm` |
//! | fail-stop | every later operation fails with [`DiskError::DeviceFailed`] | [`SimDisk::fail`] |
//!
//! Every random choice comes from one [`SimRng`] seeded at construction, so a
//! run is reproduced exactly by its seed. The disk can also record every write
//! and flush ([`SimDisk::start_recording`]) so a crash-enumeration harness can
//! rebuild the image at any crash point ([`replay`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{check_request, BlockDevice, DiskError, Result, SECTOR_SIZE};

/// A small, fast, seedable PRNG (SplitMix64). Not cryptographic; its only job
/// is to make simulations reproducible from a printed seed.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SimRng::below(0)");
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
    /// True with probability `parts_per_million / 1e6`.
    pub fn chance_ppm(&mut self, parts_per_million: u32) -> bool {
        parts_per_million > 0 && self.below(1_000_000) < parts_per_million as u64
    }
    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Random fault rates, in parts per million of the operations they apply to.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultRates {
    /// Per block read: the block develops a latent sector error.
    pub read_error_ppm: u32,
    /// Per block read: a bit of the stored block flips before it is read.
    pub bit_rot_ppm: u32,
    /// Per block written: the block lands at a random other block.
    pub misdirect_ppm: u32,
}

/// One write that has not been flushed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    pub start: u64,
    pub data: Arc<[u8]>,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Write(PendingWrite),
    Flush,
}

/// How [`SimDisk::crash`] chooses what survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Each unflushed write survives whole, not at all, or torn at sector
    /// granularity, in a random order.
    Random,
    /// Nothing unflushed survives.
    LoseAllUnflushed,
    /// Every unflushed write survives, in order (as if power failed just
    /// after the last write reached the platter).
    KeepAllUnflushed,
}

struct SimState {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingWrite>,
    rng: SimRng,
    rates: FaultRates,
    failed: bool,
    read_errors: BTreeSet<u64>,
    misdirect_next: Option<u64>,
    recording: Option<Vec<Op>>,
    writes: u64,
    flushes: u64,
}

/// A simulated disk. See the module documentation for the fault model.
pub struct SimDisk {
    name: String,
    block_size: usize,
    block_count: u64,
    state: Mutex<SimState>,
}

impl SimDisk {
    /// A zero-filled simulated disk whose random faults come from `seed`.
    pub fn new(name: &str, block_size: usize, block_count: u64, seed: u64) -> SimDisk {
        SimDisk::from_image(
            name,
            block_size,
            vec![0; block_size * block_count as usize],
            seed,
        )
    }

    /// A simulated disk whose durable contents are `image`.
    pub fn from_image(name: &str, block_size: usize, image: Vec<u8>, seed: u64) -> SimDisk {
        assert!(
            block_size >= SECTOR_SIZE && block_size.is_multiple_of(SECTOR_SIZE),
            "block size {block_size} is not a multiple of the sector size"
        );
        assert!(
            image.len().is_multiple_of(block_size),
            "image is not whole blocks"
        );
        SimDisk {
            name: name.to_string(),
            block_size,
            block_count: (image.len() / block_size) as u64,
            state: Mutex::new(SimState {
                current: image.clone(),
                durable: image,
                pending: Vec::new(),
                rng: SimRng::new(seed),
                rates: FaultRates::default(),
                failed: false,
                read_errors: BTreeSet::new(),
                misdirect_next: None,
                recording: None,
                writes: 0,
                flushes: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain bytes behind; the state
        // is still meaningful, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the random fault rates.
    pub fn set_fault_rates(&self, rates: FaultRates) {
        self.state().rates = rates;
    }

    /// Reads of `block` fail with a media error until it is rewritten.
    pub fn inject_read_error(&self, block: u64) {
        self.state().read_errors.insert(block);
    }

    /// Flips `bits` random bits of the stored copy of `block` (durable and
    /// current alike: rot is on the medium).
    pub fn inject_bit_rot(&self, block: u64, bits: u32) {
        let block_size = self.block_size;
        let mut state = self.state();
        let base = block as usize * block_size;
        for _ in 0..bits.max(1) {
            let bit = state.rng.below(block_size as u64 * 8) as usize;
            state.current[base + bit / 8] ^= 1 << (bit % 8);
            state.durable[base + bit / 8] ^= 1 << (bit % 8);
        }
    }

    /// The first block of the next write lands at `block` instead.
    pub fn misdirect_next_write(&self, block: u64) {
        self.state().misdirect_next = Some(block);
    }

    /// Fail-stop: every later operation fails.
    pub fn fail(&self) {
        self.state().failed = true;
    }

    /// True after [`fail`](SimDisk::fail) or [`crash`](SimDisk::crash).
    pub fn has_failed(&self) -> bool {
        self.state().failed
    }

    /// Number of writes and flushes issued so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.writes, state.flushes)
    }

    /// The durable image (what survives a crash that loses every unflushed write).
    pub fn durable_image(&self) -> Vec<u8> {
        self.state().durable.clone()
    }

    /// The image reads currently see.
    pub fn current_image(&self) -> Vec<u8> {
        self.state().current.clone()
    }

    /// Writes not yet flushed, oldest first.
    pub fn pending_writes(&self) -> Vec<PendingWrite> {
        self.state().pending.clone()
    }

    /// Starts recording every write and flush from now on, so a harness can
    /// rebuild the image at each crash point with [`replay`]. Returns the
    /// current durable image (with no unflushed writes pending, this is the
    /// starting point of the replay).
    pub fn start_recording(&self) -> Vec<u8> {
        let mut state = self.state();
        state.recording = Some(Vec::new());
        assert!(
            state.pending.is_empty(),
            "start_recording with unflushed writes pending; flush first"
        );
        state.durable.clone()
    }

    /// Stops recording and returns what was recorded.
    pub fn take_recording(&self) -> Vec<Op> {
        self.state().recording.take().unwrap_or_default()
    }

    /// Power failure. The disk stops (later operations fail) and the image a
    /// reboot would find is returned: the durable image plus the unflushed
    /// writes chosen by `mode`, with randomness from `seed`.
    pub fn crash(&self, mode: CrashMode, seed: u64) -> Vec<u8> {
        let mut state = self.state();
        state.failed = true;
        let mut rng = SimRng::new(seed);
        post_crash_image(
            &state.durable,
            &state.pending,
            self.block_size,
            mode,
            &mut rng,
        )
    }

    /// A new disk holding the image [`crash`](SimDisk::crash) returned, as if
    /// the machine rebooted.
    pub fn reboot(&self, image: Vec<u8>, seed: u64) -> SimDisk {
        SimDisk::from_image(&self.name, self.block_size, image, seed)
    }
}

/// Builds a post-crash image from a durable image and the unflushed writes.
pub fn post_crash_image(
    durable: &[u8],
    pending: &[PendingWrite],
    block_size: usize,
    mode: CrashMode,
    rng: &mut SimRng,
) -> Vec<u8> {
    let mut image = durable.to_vec();
    match mode {
        CrashMode::LoseAllUnflushed => {}
        CrashMode::KeepAllUnflushed => {
            for write in pending {
                let offset = write.start as usize * block_size;
                image[offset..offset + write.data.len()].copy_from_slice(&write.data);
            }
        }
        CrashMode::Random => {
            let mut order: Vec<usize> = (0..pending.len()).collect();
            rng.shuffle(&mut order);
            for index in order {
                let write = &pending[index];
                let offset = write.start as usize * block_size;
                match rng.below(3) {
                    0 => {} // lost
                    1 => image[offset..offset + write.data.len()].copy_from_slice(&write.data),
                    _ => {
                        // torn: each sector independently landed or not
                        for (sector, bytes) in write.data.chunks(SECTOR_SIZE).enumerate() {
                            if rng.coin() {
                                let at = offset + sector * SECTOR_SIZE;
                                image[at..at + bytes.len()].copy_from_slice(bytes);
                            }
                        }
                    }
                }
            }
        }
    }
    image
}

/// Rebuilds the state of a disk after the first `ops_applied` recorded
/// operations, starting from `base`: returns the durable image and the
/// writes still unflushed at that point. Feed both to [`post_crash_image`]
/// to get a post-crash image.
pub fn replay(
    base: &[u8],
    ops: &[Op],
    ops_applied: usize,
    block_size: usize,
) -> (Vec<u8>, Vec<PendingWrite>) {
    let mut durable = base.to_vec();
    let mut pending: Vec<PendingWrite> = Vec::new();
    for op in &ops[..ops_applied] {
        match op {
            Op::Write(write) => pending.push(write.clone()),
            Op::Flush => {
                for write in pending.drain(..) {
                    let offset = write.start as usize * block_size;
                    durable[offset..offset + write.data.len()].copy_from_slice(&write.data);
                }
            }
        }
    }
    (durable, pending)
}

impl BlockDevice for SimDisk {
    fn name(&self) -> &str {
        &self.name
    }
    fn block_size(&self) -> usize {
        self.block_size
    }
    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        let range = check_request(self, start, buf.len())?;
        let block_size = self.block_size;
        let mut guard = self.state();
        let state = &mut *guard;
        if state.failed {
            return Err(DiskError::DeviceFailed {
                device: self.name.clone(),
            });
        }
        for block in range.clone() {
            if state.rng.chance_ppm(state.rates.read_error_ppm) {
                state.read_errors.insert(block);
            }
            if state.rng.chance_ppm(state.rates.bit_rot_ppm) {
                let bit = state.rng.below(block_size as u64 * 8) as usize;
                let at = block as usize * block_size + bit / 8;
                state.current[at] ^= 1 << (bit % 8);
                state.durable[at] ^= 1 << (bit % 8);
            }
            if state.read_errors.contains(&block) {
                return Err(DiskError::Media {
                    device: self.name.clone(),
                    block,
                });
            }
        }
        let offset = start as usize * block_size;
        buf.copy_from_slice(&state.current[offset..offset + buf.len()]);
        Ok(())
    }

    fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<()> {
        let range = check_request(self, start, buf.len())?;
        let block_size = self.block_size;
        let mut guard = self.state();
        let state = &mut *guard;
        if state.failed {
            return Err(DiskError::DeviceFailed {
                device: self.name.clone(),
            });
        }
        state.writes += 1;
        for (index, block) in range.enumerate() {
            let mut target = block;
            if let Some(wrong) = state.misdirect_next.take() {
                target = wrong;
            } else if state.rng.chance_ppm(state.rates.misdirect_ppm) {
                target = state.rng.below(self.block_count);
            }
            let data = &buf[index * block_size..(index + 1) * block_size];
            state.read_errors.remove(&target);
            let offset = target as usize * block_size;
            state.current[offset..offset + block_size].copy_from_slice(data);
            let write = PendingWrite {
                start: target,
                data: Arc::from(data),
            };
            if let Some(recording) = state.recording.as_mut() {
                recording.push(Op::Write(write.clone()));
            }
            state.pending.push(write);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let block_size = self.block_size;
        let mut state = self.state();
        if state.failed {
            return Err(DiskError::DeviceFailed {
                device: self.name.clone(),
            });
        }
        state.flushes += 1;
        let pending = std::mem::take(&mut state.pending);
        for write in pending {
            let offset = write.start as usize * block_size;
            state.durable[offset..offset + write.data.len()].copy_from_slice(&write.data);
        }
        if let Some(recording) = state.recording.as_mut() {
            recording.push(Op::Flush);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fill: u8) -> Vec<u8> {
        vec![fill; 1024]
    }

    #[test]
    fn flushed_writes_survive_every_crash_mode() {
        for mode in [
            CrashMode::Random,
            CrashMode::LoseAllUnflushed,
            CrashMode::KeepAllUnflushed,
        ] {
            let disk = SimDisk::new("d", 1024, 4, 1);
            disk.write_blocks(1, &block(7)).unwrap();
            disk.flush().unwrap();
            disk.write_blocks(2, &block(9)).unwrap();
            let image = disk.crash(mode, 42);
            assert_eq!(&image[1024..2048], &block(7)[..], "{mode:?}");
            assert!(
                disk.read_blocks(0, &mut block(0)).is_err(),
                "disk must stop after a crash"
            );
        }
    }

    #[test]
    fn random_crash_keeps_only_old_or_new_sectors() {
        let mut seen_torn = false;
        for seed in 0..200 {
            let disk = SimDisk::new("d", 4096, 2, seed);
            disk.write_blocks(0, &vec![1u8; 4096]).unwrap();
            disk.flush().unwrap();
            disk.write_blocks(0, &vec![2u8; 4096]).unwrap();
            let image = disk.crash(CrashMode::Random, seed);
            let sectors: Vec<u8> = image[..4096].chunks(SECTOR_SIZE).map(|s| s[0]).collect();
            for (sector, bytes) in image[..4096].chunks(SECTOR_SIZE).enumerate() {
                assert!(
                    bytes.iter().all(|b| *b == bytes[0]) && (bytes[0] == 1 || bytes[0] == 2),
                    "seed {seed}: sector {sector} is neither old nor new"
                );
            }
            if sectors.contains(&1) && sectors.contains(&2) {
                seen_torn = true;
            }
        }
        assert!(seen_torn, "200 random crashes never tore a write");
    }

    #[test]
    fn same_seed_same_crash_image() {
        let run = |seed| {
            let disk = SimDisk::new("d", 512, 64, seed);
            for i in 0..64u64 {
                disk.write_blocks(i, &[i as u8; 512]).unwrap();
            }
            disk.crash(CrashMode::Random, seed)
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn latent_error_until_rewritten_and_bit_rot_is_silent() {
        let disk = SimDisk::new("d", 512, 8, 3);
        disk.write_blocks(3, &[5; 512]).unwrap();
        disk.inject_read_error(3);
        let mut buf = [0u8; 512];
        let err = disk.read_blocks(2, &mut [0u8; 1024]).unwrap_err();
        assert!(matches!(err, DiskError::Media { block: 3, .. }), "{err}");
        disk.write_blocks(3, &[6; 512]).unwrap();
        disk.read_blocks(3, &mut buf).unwrap();
        assert_eq!(buf, [6; 512]);
        disk.inject_bit_rot(3, 1);
        disk.read_blocks(3, &mut buf).unwrap();
        assert_eq!(buf.iter().filter(|b| **b != 6).count(), 1);
    }

    #[test]
    fn misdirected_write_lands_elsewhere() {
        let disk = SimDisk::new("d", 512, 8, 3);
        disk.misdirect_next_write(6);
        disk.write_blocks(1, &[9; 512]).unwrap();
        let mut buf = [0u8; 512];
        disk.read_blocks(1, &mut buf).unwrap();
        assert_eq!(buf, [0; 512]);
        disk.read_blocks(6, &mut buf).unwrap();
        assert_eq!(buf, [9; 512]);
    }

    #[test]
    fn replay_matches_recorded_history() {
        let disk = SimDisk::new("d", 512, 4, 3);
        let base = disk.start_recording();
        disk.write_blocks(0, &[1; 512]).unwrap();
        disk.flush().unwrap();
        disk.write_blocks(1, &[2; 512]).unwrap();
        let ops = disk.take_recording();
        assert_eq!(ops.len(), 3);
        let (durable, pending) = replay(&base, &ops, 3, 512);
        assert_eq!(durable, {
            let mut image = vec![0u8; 2048];
            image[..512].fill(1);
            image
        });
        assert_eq!(pending.len(), 1);
        assert_eq!(durable, disk.durable_image());
    }

    #[test]
    fn fail_stop_and_bad_requests() {
        let disk = SimDisk::new("d", 512, 4, 3);
        assert!(matches!(
            disk.read_blocks(3, &mut [0u8; 1024]),
            Err(DiskError::OutOfRange {
                start: 3,
                count: 2,
                ..
            })
        ));
        assert!(matches!(
            disk.write_blocks(0, &[0u8; 100]),
            Err(DiskError::Misaligned { .. })
        ));
        disk.fail();
        assert!(matches!(disk.flush(), Err(DiskError::DeviceFailed { .. })));
    }
}
