//! Crash consistency of RAID-5 (and RAID-1) on SimDisk.
//!
//! Partial-stripe writes, some flushed, then power fails: every member keeps
//! a random subset of its unflushed writes, torn at sector granularity. The
//! volume is reassembled (which resyncs the regions its write-intent bitmap
//! marks), then loses a member. Every block must read back without error:
//! blocks untouched since the last sync exactly as synced, blocks written
//! since then sector by sector as one of their versions. Without the bitmap
//! resync the lost member's blocks would be reconstructed from stale parity
//! (the write hole) and this test fails.

mod common;

use std::sync::Arc;

use common::*;
use keel_disk::sim::CrashMode;
use keel_disk::{SimDisk, SimRng, SECTOR_SIZE};
use keel_raid::{Level, RaidError, VolumeState};

const BLOCKS: u64 = 400;

/// Runs one crash scenario; returns the number of blocks that had unflushed
/// writes at the crash.
fn crash_then_lose_a_member(level: Level, members: usize, chunk: u64, seed: u64) -> usize {
    let (volume, disks) = sim_volume(&spec(level, BLOCKS, chunk), members, 0, seed);
    let mut rng = SimRng::new(seed);
    let mut synced = random_blocks(&mut rng, BLOCKS as usize);
    volume.write(0, &synced).unwrap();
    volume.sync().unwrap();
    // versions[b] = every value block b may hold after the crash.
    let mut versions: Vec<Vec<Vec<u8>>> = (0..BLOCKS as usize)
        .map(|b| vec![synced[b * BS..(b + 1) * BS].to_vec()])
        .collect();
    let writes = 5 + rng.below(30);
    for _ in 0..writes {
        let start = rng.below(BLOCKS);
        let len = 1 + rng.below((BLOCKS - start).min(6)); // partial stripes
        let data = random_blocks(&mut rng, len as usize);
        volume.write(start, &data).unwrap();
        for i in 0..len as usize {
            versions[start as usize + i].push(data[i * BS..(i + 1) * BS].to_vec());
        }
        if rng.below(8) == 0 {
            volume.sync().unwrap();
            for (b, v) in versions.iter_mut().enumerate() {
                let last = v.pop().expect("a version");
                synced[b * BS..(b + 1) * BS].copy_from_slice(&last);
                *v = vec![last];
            }
        }
    }
    // Power fails on every disk at once.
    let rebooted: Vec<Arc<SimDisk>> = disks
        .iter()
        .enumerate()
        .map(|(i, disk)| {
            let image = disk.crash(CrashMode::Random, seed ^ ((i as u64 + 1) * 0x9E37));
            Arc::new(disk.reboot(image, seed))
        })
        .collect();
    drop(volume);
    let volume =
        assemble(&rebooted, quiet()).unwrap_or_else(|e| panic!("seed {seed}: assemble: {e}"));
    assert_eq!(
        volume.status().dirty_regions,
        0,
        "seed {seed}: resync left dirty regions"
    );
    let lost = rng.below(members as u64) as usize;
    rebooted[lost].fail();
    let mut out = vec![0u8; BLOCKS as usize * BS];
    volume
        .read(0, &mut out)
        .unwrap_or_else(|e| panic!("seed {seed}: read after losing disk {lost}: {e}"));
    volume.sync().unwrap(); // touches every member, so the loss is noticed
    assert_eq!(volume.status().state, VolumeState::Degraded, "seed {seed}");
    let mut in_flight = 0;
    for (b, candidates) in versions.iter().enumerate() {
        let got = &out[b * BS..(b + 1) * BS];
        if candidates.len() == 1 {
            assert!(
                got == &candidates[0][..],
                "seed {seed}: block {b} (synced, untouched) changed; lost disk {lost}"
            );
            continue;
        }
        in_flight += 1;
        for (s, sector) in got.chunks(SECTOR_SIZE).enumerate() {
            let span = s * SECTOR_SIZE..(s + 1) * SECTOR_SIZE;
            assert!(
                candidates.iter().any(|c| c[span.clone()] == *sector),
                "seed {seed}: block {b} sector {s} is none of its {} versions; lost disk {lost}",
                candidates.len()
            );
        }
    }
    in_flight
}

#[test]
fn raid5_partial_stripe_crash_then_member_loss() {
    let base = seed();
    let mut in_flight = 0;
    for i in 0..60 {
        let seed = base.wrapping_add(i);
        let members = 3 + (i % 3) as usize;
        in_flight += crash_then_lose_a_member(Level::Raid5, members, 1 << (i % 3), seed);
    }
    assert!(
        in_flight > 0,
        "no scenario had writes in flight at the crash"
    );
}

#[test]
fn raid1_crash_then_member_loss() {
    let base = seed();
    for i in 0..30 {
        crash_then_lose_a_member(Level::Raid1, 2 + (i % 2) as usize, 1, base.wrapping_add(i));
    }
}

#[test]
fn crash_never_makes_synced_data_look_corrupt_on_a_single_disk() {
    let base = seed();
    for i in 0..40 {
        let seed = base.wrapping_add(i);
        let (volume, disks) = sim_volume(&spec(Level::Single, 200, 1), 1, 0, seed);
        let mut rng = SimRng::new(seed);
        let data = random_blocks(&mut rng, 200);
        volume.write(0, &data).unwrap();
        volume.sync().unwrap();
        for _ in 0..20 {
            let start = rng.below(200);
            volume.write(start, &random_blocks(&mut rng, 1)).unwrap();
        }
        let image = disks[0].crash(CrashMode::Random, seed);
        let rebooted = vec![Arc::new(disks[0].reboot(image, seed))];
        let volume = assemble(&rebooted, quiet()).unwrap();
        let mut out = vec![0u8; 200 * BS];
        volume
            .read(0, &mut out)
            .unwrap_or_else(|e| panic!("seed {seed}: a crash made a block unreadable: {e}"));
    }
}

#[test]
fn degraded_unclean_raid5_refuses_without_force() {
    let seed = seed();
    let (volume, disks) = sim_volume(&spec(Level::Raid5, 100, 2), 3, 0, seed);
    let mut rng = SimRng::new(seed);
    volume.write(0, &random_blocks(&mut rng, 100)).unwrap();
    volume.sync().unwrap();
    volume.write(10, &random_blocks(&mut rng, 3)).unwrap();
    let images: Vec<Vec<u8>> = disks
        .iter()
        .map(|d| d.crash(CrashMode::KeepAllUnflushed, seed))
        .collect();
    let rebooted: Vec<Arc<SimDisk>> = disks
        .iter()
        .zip(images)
        .map(|(d, image)| Arc::new(d.reboot(image, seed)))
        .collect();
    rebooted[1].fail();
    drop(volume);
    let error = assemble(&rebooted, quiet())
        .err()
        .expect("dirty degraded raid5 assembled");
    assert!(matches!(error, RaidError::Assembly(_)), "{error}");
    assert!(error.to_string().contains("write hole"), "{error}");
    let forced = assemble(
        &rebooted,
        keel_raid::VolumeOptions {
            force: true,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(forced.status().state, VolumeState::Degraded);
}
