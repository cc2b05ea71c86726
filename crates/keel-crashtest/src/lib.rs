//! Crash enumeration: run a workload once on a recording [`SimDisk`], then
//! rebuild every post-crash image a real disk could leave and hand each to a
//! check supplied by the test (which recovers and checks its invariant).
//!
//! The approach of CrashMonkey and ALICE, on keel's fault model:
//!
//! ```text
//! record:     base image, op 0, op 1, ..., op n-1        (writes per block, flushes)
//! crash at k: durable = base + every write flushed before k
//!             pending = writes after the last flush before k
//!   states:   durable alone           (every unflushed write lost)
//!             durable + all pending   (every unflushed write landed)
//!             durable + random subsets of pending, torn at sectors (seeded)
//! ```
//!
//! The workload stamps its events (a commit started, a commit returned) with
//! [`RecordingDisk::op_count`], so the check knows, for crash point `k`, which
//! operations had been acknowledged (`stamp <= k`) and which had not begun
//! (`stamp >= k`).
//!
//! Several devices that crash together (a log device and a home device, the
//! members of a RAID volume) are recorded as one [`RecordingSet`] and
//! enumerated with [`enumerate_set`]: a crash point cuts all of them at the
//! same instant, and each loses its own random torn subset of unflushed
//! writes. [`crash_during`] / [`crash_during_set`] crash a recovery itself.
//!
//! Every failure names the seed, the crash point and the state, and the same
//! seed reproduces it exactly ([`CrashConfig::from_env`] reads `KEEL_SEED`,
//! `KEEL_CRASH_POINT` and `KEEL_CRASH_STATES`).
//!
//! ```
//! use keel_crashtest::{enumerate, CrashConfig, RecordingDisk};
//! use keel_disk::{BlockDevice, SimDisk};
//!
//! // 1. Record: the workload runs once, stamping what it acknowledged.
//! let disk = RecordingDisk::new(SimDisk::new("demo", 512, 4, 1));
//! disk.write_blocks(1, &[7u8; 512]).unwrap();
//! disk.flush().unwrap();
//! let acknowledged_at = disk.op_count(); // "durable" was reported here
//! disk.write_blocks(2, &[9u8; 512]).unwrap(); // never flushed
//! let recording = disk.finish();
//!
//! // 2. Enumerate: every crash point, lose-all, keep-all and 8 random states.
//! let config = CrashConfig::from_env(42, 8);
//! let report = enumerate(&recording, &config, |state| {
//!     // 3. Recover (nothing to do for raw blocks) and check the invariant.
//!     let durable = state.image[512..1024].iter().all(|b| *b == 7);
//!     if state.point >= acknowledged_at && !durable {
//!         return Err("acknowledged write lost".into());
//!     }
//!     Ok(())
//! })
//! .unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.states > 10);
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use keel_disk::sim::{post_crash_image, CrashMode, Op, PendingWrite};
use keel_disk::{BlockDevice, Result as DiskResult, SimDisk, SimRng};

/// A [`SimDisk`] that records every write and flush and counts them, so a
/// workload can stamp its events with the crash point they correspond to.
pub struct RecordingDisk {
    disk: SimDisk,
    base: Vec<u8>,
    /// Recorded operations so far; the lock also orders them with the
    /// disk's own recording.
    ops: Mutex<u64>,
}

impl RecordingDisk {
    /// Records from the current (flushed) state of `disk`.
    pub fn new(disk: SimDisk) -> RecordingDisk {
        let base = disk.start_recording();
        RecordingDisk {
            disk,
            base,
            ops: Mutex::new(0),
        }
    }

    /// Number of operations recorded so far: a crash at this point keeps
    /// exactly what the workload has done until now.
    pub fn op_count(&self) -> u64 {
        *self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sim(&self) -> &SimDisk {
        &self.disk
    }

    /// Stops recording; returns the base image and the operations.
    pub fn finish(self) -> Recording {
        let ops = self.disk.take_recording();
        Recording {
            base: self.base,
            ops,
            block_size: self.disk.block_size(),
        }
    }
}

impl BlockDevice for RecordingDisk {
    fn name(&self) -> &str {
        self.disk.name()
    }
    fn block_size(&self) -> usize {
        self.disk.block_size()
    }
    fn block_count(&self) -> u64 {
        self.disk.block_count()
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> DiskResult<()> {
        self.disk.read_blocks(start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> DiskResult<()> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        self.disk.write_blocks(start, buf)?;
        // SimDisk records one operation per block written.
        *ops += (buf.len() / self.disk.block_size()) as u64;
        Ok(())
    }
    fn flush(&self) -> DiskResult<()> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        self.disk.flush()?;
        *ops += 1;
        Ok(())
    }
}

/// What a workload left behind.
#[derive(Clone, Debug)]
pub struct Recording {
    pub base: Vec<u8>,
    pub ops: Vec<Op>,
    pub block_size: usize,
}

/// Which post-crash state of a crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashVariant {
    /// Every unflushed write lost.
    LoseUnflushed,
    /// Every unflushed write landed, in order.
    KeepUnflushed,
    /// A random subset, torn at sectors, in random order, from this seed.
    Random { seed: u64 },
}

impl fmt::Display for CrashVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashVariant::LoseUnflushed => write!(f, "lose-unflushed"),
            CrashVariant::KeepUnflushed => write!(f, "keep-unflushed"),
            CrashVariant::Random { seed } => write!(f, "random(seed {seed})"),
        }
    }
}

/// One post-crash state, handed to the check.
pub struct CrashState<'a> {
    /// Operations applied before the crash (`0..=ops.len()`).
    pub point: u64,
    pub variant: CrashVariant,
    pub image: &'a [u8],
    /// Seed for any randomness the check itself uses (e.g. a crash during
    /// recovery), derived from the run seed and the state.
    pub seed: u64,
}

/// How many states to explore.
#[derive(Clone, Debug)]
pub struct CrashConfig {
    /// The run seed; every random choice derives from it.
    pub seed: u64,
    /// Random states per crash point (in addition to lose/keep-all).
    pub random_states_per_point: u32,
    /// Only this crash point (to replay a failure).
    pub only_point: Option<u64>,
}

impl CrashConfig {
    /// `KEEL_SEED` (else `default_seed`), `KEEL_CRASH_POINT`, and
    /// `KEEL_CRASH_STATES` (else `default_random_states`).
    pub fn from_env(default_seed: u64, default_random_states: u32) -> CrashConfig {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        CrashConfig {
            seed: var("KEEL_SEED").unwrap_or(default_seed),
            random_states_per_point: var("KEEL_CRASH_STATES")
                .map(|v| v as u32)
                .unwrap_or(default_random_states),
            only_point: var("KEEL_CRASH_POINT"),
        }
    }
}

/// A state whose check failed.
#[derive(Clone, Debug)]
pub struct CrashFailure {
    pub seed: u64,
    pub point: u64,
    pub ops: usize,
    pub variant: CrashVariant,
    pub message: String,
}

impl fmt::Display for CrashFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash state failed: seed {} point {} of {} ops, {}: {}\n  replay: KEEL_SEED={} KEEL_CRASH_POINT={}",
            self.seed, self.point, self.ops, self.variant, self.message, self.seed, self.point
        )
    }
}

impl std::error::Error for CrashFailure {}

/// What an enumeration explored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub crash_points: u64,
    pub states: u64,
}

impl std::ops::AddAssign for CrashReport {
    fn add_assign(&mut self, other: CrashReport) {
        self.crash_points += other.crash_points;
        self.states += other.states;
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut rng = SimRng::new(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.rotate_left(32));
    rng.next_u64()
}

fn apply(image: &mut [u8], write: &PendingWrite, block_size: usize) {
    let offset = write.start as usize * block_size;
    image[offset..offset + write.data.len()].copy_from_slice(&write.data);
}

/// Calls `check` on every post-crash state of `recording`: at each crash
/// point `0..=ops.len()`, the lose-all and keep-all states and
/// `random_states_per_point` random ones (only one state where nothing is
/// unflushed, since all coincide). Stops at the first failure.
pub fn enumerate(
    recording: &Recording,
    config: &CrashConfig,
    mut check: impl FnMut(&CrashState<'_>) -> Result<(), String>,
) -> Result<CrashReport, CrashFailure> {
    let set = SetRecording {
        bases: vec![recording.base.clone()],
        ops: recording.ops.iter().map(|op| (0, op.clone())).collect(),
        block_sizes: vec![recording.block_size],
    };
    enumerate_set(&set, config, |state| {
        check(&CrashState {
            point: state.point,
            variant: state.variant,
            image: &state.images[0],
            seed: state.seed,
        })
    })
}

/// Several simulated disks recorded as one machine: one order of operations
/// across all of them, so a crash point cuts every disk at the same instant
/// (a log on one device and home blocks on another; the members of a RAID).
pub struct RecordingSet {
    members: Vec<SetDisk>,
    bases: Vec<Vec<u8>>,
    order: Arc<Mutex<SetOrder>>,
}

#[derive(Default)]
struct SetOrder {
    ops: u64,
    /// (disk, operations it recorded), in the order they happened.
    runs: Vec<(usize, usize)>,
}

/// One member of a [`RecordingSet`].
pub struct SetDisk {
    index: usize,
    disk: SimDisk,
    order: Arc<Mutex<SetOrder>>,
}

impl RecordingSet {
    /// Records from the current (flushed) state of each disk.
    pub fn new(disks: Vec<SimDisk>) -> RecordingSet {
        let order = Arc::new(Mutex::new(SetOrder::default()));
        let bases = disks.iter().map(|disk| disk.start_recording()).collect();
        let members = disks
            .into_iter()
            .enumerate()
            .map(|(index, disk)| SetDisk {
                index,
                disk,
                order: order.clone(),
            })
            .collect();
        RecordingSet {
            members,
            bases,
            order,
        }
    }

    pub fn disk(&self, index: usize) -> &SetDisk {
        &self.members[index]
    }

    pub fn disks(&self) -> &[SetDisk] {
        &self.members
    }

    /// Operations recorded so far on all disks (see [`RecordingDisk::op_count`]).
    pub fn op_count(&self) -> u64 {
        self.order.lock().unwrap_or_else(|e| e.into_inner()).ops
    }

    /// Stops recording; returns the bases and the operations in one order.
    pub fn finish(self) -> SetRecording {
        let mut per_disk: Vec<std::vec::IntoIter<Op>> = self
            .members
            .iter()
            .map(|member| member.disk.take_recording().into_iter())
            .collect();
        let order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let mut ops = Vec::new();
        for &(disk, count) in &order.runs {
            for _ in 0..count {
                let op = per_disk[disk]
                    .next()
                    .expect("the disk recorded every operation counted");
                ops.push((disk, op));
            }
        }
        SetRecording {
            bases: self.bases,
            ops,
            block_sizes: self.members.iter().map(|m| m.disk.block_size()).collect(),
        }
    }
}

impl SetDisk {
    pub fn sim(&self) -> &SimDisk {
        &self.disk
    }

    fn counted<T>(&self, ops: usize, call: impl FnOnce() -> DiskResult<T>) -> DiskResult<T> {
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let result = call()?;
        order.ops += ops as u64;
        order.runs.push((self.index, ops));
        Ok(result)
    }
}

impl BlockDevice for SetDisk {
    fn name(&self) -> &str {
        self.disk.name()
    }
    fn block_size(&self) -> usize {
        self.disk.block_size()
    }
    fn block_count(&self) -> u64 {
        self.disk.block_count()
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> DiskResult<()> {
        self.disk.read_blocks(start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> DiskResult<()> {
        // SimDisk records one operation per block written.
        let blocks = buf.len() / self.disk.block_size();
        self.counted(blocks, || self.disk.write_blocks(start, buf))
    }
    fn flush(&self) -> DiskResult<()> {
        self.counted(1, || self.disk.flush())
    }
}

/// What a workload on a [`RecordingSet`] left behind.
#[derive(Clone, Debug)]
pub struct SetRecording {
    pub bases: Vec<Vec<u8>>,
    /// (disk, operation), in the order they happened.
    pub ops: Vec<(usize, Op)>,
    pub block_sizes: Vec<usize>,
}

/// One post-crash state of every disk of a set.
pub struct SetCrashState<'a> {
    pub point: u64,
    pub variant: CrashVariant,
    pub images: &'a [Vec<u8>],
    pub seed: u64,
}

/// [`enumerate`] for a set of disks: at each crash point every disk loses
/// all its unflushed writes, keeps them all, or (random states) keeps a
/// random torn subset chosen independently per disk.
pub fn enumerate_set(
    recording: &SetRecording,
    config: &CrashConfig,
    mut check: impl FnMut(&SetCrashState<'_>) -> Result<(), String>,
) -> Result<CrashReport, CrashFailure> {
    let disks = recording.bases.len();
    let mut durable: Vec<Vec<u8>> = recording.bases.clone();
    let mut pending: Vec<Vec<PendingWrite>> = vec![Vec::new(); disks];
    let mut report = CrashReport::default();
    let ops = recording.ops.len();
    for point in 0..=ops as u64 {
        if config.only_point.is_none_or(|only| only == point) {
            report.crash_points += 1;
            let mut variants = vec![CrashVariant::LoseUnflushed];
            if pending.iter().any(|p| !p.is_empty()) {
                variants.push(CrashVariant::KeepUnflushed);
                for index in 0..config.random_states_per_point {
                    variants.push(CrashVariant::Random {
                        seed: mix(config.seed, point, index as u64),
                    });
                }
            }
            for variant in variants {
                let images: Vec<Vec<u8>> = (0..disks)
                    .map(|disk| {
                        let block_size = recording.block_sizes[disk];
                        match variant {
                            CrashVariant::LoseUnflushed => durable[disk].clone(),
                            CrashVariant::KeepUnflushed => {
                                let mut image = durable[disk].clone();
                                for write in &pending[disk] {
                                    apply(&mut image, write, block_size);
                                }
                                image
                            }
                            CrashVariant::Random { seed } => post_crash_image(
                                &durable[disk],
                                &pending[disk],
                                block_size,
                                CrashMode::Random,
                                // Disk 0 uses the state's seed itself, so a
                                // one-disk set matches `SimDisk::crash`.
                                &mut SimRng::new(if disk == 0 {
                                    seed
                                } else {
                                    mix(seed, disk as u64, 1)
                                }),
                            ),
                        }
                    })
                    .collect();
                let state = SetCrashState {
                    point,
                    variant,
                    images: &images,
                    seed: mix(config.seed, point, u64::MAX - report.states),
                };
                report.states += 1;
                check(&state).map_err(|message| CrashFailure {
                    seed: config.seed,
                    point,
                    ops,
                    variant,
                    message,
                })?;
            }
        }
        match recording.ops.get(point as usize) {
            Some((disk, Op::Write(write))) => pending[*disk].push(write.clone()),
            Some((disk, Op::Flush)) => {
                for write in pending[*disk].drain(..) {
                    apply(&mut durable[*disk], &write, recording.block_sizes[*disk]);
                }
            }
            None => {}
        }
    }
    Ok(report)
}

/// Runs `recover` on a recording disk holding `image`, then crashes it at a
/// random point of what recovery wrote (random surviving subset, torn), and
/// returns that image: a crash during recovery. The caller recovers it again.
pub fn crash_during(
    image: &[u8],
    block_size: usize,
    seed: u64,
    recover: impl FnOnce(&RecordingDisk) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    let disk = RecordingDisk::new(SimDisk::from_image(
        "recovery",
        block_size,
        image.to_vec(),
        seed,
    ));
    recover(&disk)?;
    let recording = disk.finish();
    let mut rng = SimRng::new(seed);
    let point = rng.below(recording.ops.len() as u64 + 1) as usize;
    let (durable, pending) =
        keel_disk::sim::replay(&recording.base, &recording.ops, point, block_size);
    Ok(post_crash_image(
        &durable,
        &pending,
        block_size,
        CrashMode::Random,
        &mut rng,
    ))
}

/// [`crash_during`] for a set of disks: `recover` runs on a recording set
/// holding `images`; a random point of what it wrote is chosen and every
/// disk is crashed there (random torn subsets of each disk's unflushed
/// writes). Returns the images.
pub fn crash_during_set(
    images: &[Vec<u8>],
    block_sizes: &[usize],
    seed: u64,
    recover: impl FnOnce(&RecordingSet) -> Result<(), String>,
) -> Result<Vec<Vec<u8>>, String> {
    let set = RecordingSet::new(
        images
            .iter()
            .zip(block_sizes)
            .enumerate()
            .map(|(index, (image, block_size))| {
                SimDisk::from_image(
                    &format!("recovery{index}"),
                    *block_size,
                    image.clone(),
                    seed,
                )
            })
            .collect(),
    );
    recover(&set)?;
    let recording = set.finish();
    let mut rng = SimRng::new(seed);
    let point = rng.below(recording.ops.len() as u64 + 1) as usize;
    let mut durable = recording.bases.clone();
    let mut pending: Vec<Vec<PendingWrite>> = vec![Vec::new(); durable.len()];
    for (disk, op) in &recording.ops[..point] {
        match op {
            Op::Write(write) => pending[*disk].push(write.clone()),
            Op::Flush => {
                for write in pending[*disk].drain(..) {
                    apply(&mut durable[*disk], &write, block_sizes[*disk]);
                }
            }
        }
    }
    Ok(durable
        .iter()
        .zip(&pending)
        .zip(block_sizes)
        .map(|((image, pending), block_size)| {
            post_crash_image(image, pending, *block_size, CrashMode::Random, &mut rng)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumeration_matches_sim_replay() {
        let disk = RecordingDisk::new(SimDisk::new("t", 1024, 8, 1));
        disk.write_blocks(0, &[1u8; 2048]).unwrap();
        disk.flush().unwrap();
        disk.write_blocks(3, &[2u8; 1024]).unwrap();
        assert_eq!(disk.op_count(), 4);
        let recording = disk.finish();
        assert_eq!(recording.ops.len(), 4);
        let config = CrashConfig {
            seed: 9,
            random_states_per_point: 2,
            only_point: None,
        };
        let report = enumerate(&recording, &config, |state| {
            let (durable, _) =
                keel_disk::sim::replay(&recording.base, &recording.ops, state.point as usize, 1024);
            if state.variant == CrashVariant::LoseUnflushed && state.image != &durable[..] {
                return Err("lose-unflushed differs from replay".into());
            }
            // Flushed data is in every state.
            if state.point >= 3 && state.image[..2048].iter().any(|b| *b != 1) {
                return Err("flushed write lost".into());
            }
            Ok(())
        })
        .unwrap();
        // points 0,3: nothing pending (1 state); 1,2,4: pending (4 states)
        assert_eq!(report.crash_points, 5);
        assert_eq!(report.states, 2 + 3 * 4);
    }

    #[test]
    fn a_set_crashes_all_disks_at_the_same_point() {
        let set = RecordingSet::new(vec![
            SimDisk::new("log", 512, 4, 1),
            SimDisk::new("home", 512, 4, 2),
        ]);
        set.disk(0).write_blocks(0, &[1u8; 512]).unwrap();
        set.disk(0).flush().unwrap();
        set.disk(1).write_blocks(2, &[2u8; 512]).unwrap();
        assert_eq!(set.op_count(), 3);
        let recording = set.finish();
        assert_eq!(recording.ops.len(), 3);
        assert_eq!(recording.ops[2].0, 1);
        let config = CrashConfig {
            seed: 5,
            random_states_per_point: 3,
            only_point: None,
        };
        let report = enumerate_set(&recording, &config, |state| {
            // The home write never depends on the log write being lost.
            if state.point >= 2 && state.images[0][..512].iter().any(|b| *b != 1) {
                return Err("flushed log write lost".into());
            }
            if state.point < 3 && state.images[1][1024..1536].iter().any(|b| *b != 0) {
                return Err("home write before it happened".into());
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(report.crash_points, 4);
    }

    #[test]
    fn failure_names_seed_and_point() {
        let disk = RecordingDisk::new(SimDisk::new("t", 512, 2, 1));
        disk.write_blocks(1, &[5u8; 512]).unwrap();
        let recording = disk.finish();
        let config = CrashConfig {
            seed: 77,
            random_states_per_point: 0,
            only_point: None,
        };
        let failure = enumerate(&recording, &config, |state| {
            if state.image[512] == 5 {
                Err("saw the write".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(failure.point, 1);
        let message = failure.to_string();
        assert!(
            message.contains("KEEL_SEED=77 KEEL_CRASH_POINT=1"),
            "{message}"
        );
    }
}
