//! Media faults against each level: bit rot and latent sector errors are
//! repaired from redundancy (or reported, naming disk and block), a lost
//! disk leaves the volume degraded, and a spare is rebuilt.

mod common;

use common::*;
use keel_disk::{BlockDevice, SimRng};
use keel_raid::{Level, RaidError, VolumeState};

fn fill(volume: &keel_raid::Volume, rng: &mut SimRng) -> Vec<u8> {
    let blocks = volume.block_count() as usize;
    let data = random_blocks(rng, blocks);
    volume.write(0, &data).unwrap();
    volume.sync().unwrap();
    data
}

fn read_all(volume: &keel_raid::Volume) -> Vec<u8> {
    let mut out = vec![0u8; volume.block_count() as usize * BS];
    volume.read(0, &mut out).unwrap();
    out
}

#[test]
fn every_level_round_trips_unaligned_requests() {
    for (level, members) in [
        (Level::Single, 1),
        (Level::Raid1, 3),
        (Level::Raid5, 4),
        (Level::Raid5, 3),
    ] {
        let (volume, _) = sim_volume(&spec(level, 300, 4), members, 0, 1);
        let mut rng = SimRng::new(7);
        let mut model = vec![0u8; 300 * BS];
        for _ in 0..200 {
            let start = rng.below(300);
            let len = 1 + rng.below((300 - start).min(40));
            let data = random_blocks(&mut rng, len as usize);
            volume.write(start, &data).unwrap();
            model[start as usize * BS..(start + len) as usize * BS].copy_from_slice(&data);
        }
        assert_eq!(read_all(&volume), model, "{level:?} x{members}");
        let message = volume
            .read(299, &mut vec![0u8; 2 * BS])
            .unwrap_err()
            .to_string();
        assert!(message.contains("out of range"), "{message}");
    }
}

#[test]
fn bit_rot_on_any_member_is_repaired_and_rewritten() {
    for (level, members) in [(Level::Raid1, 2), (Level::Raid5, 5)] {
        let (volume, disks) = sim_volume(&spec(level, 256, 4), members, 0, 2);
        let mut rng = SimRng::new(3);
        let data = fill(&volume, &mut rng);
        // Rot one block on every member (different stripes).
        for (i, disk) in disks.iter().enumerate() {
            disk.inject_bit_rot(device_block(&volume, 7 * i as u64 + 1), 3);
        }
        assert_eq!(read_all(&volume), data, "{level:?}");
        let repaired = volume.status().repaired_blocks;
        assert!(repaired >= 1, "{level:?}: nothing repaired");
        // Scrub finds and repairs whatever rot reads did not touch (RAID-1
        // reads one mirror; parity blocks are not read), then nothing more.
        let report = volume.scrub(|_, _| {}).unwrap();
        assert_eq!(report.unrepairable_blocks, 0, "{report:?}");
        let again = volume.scrub(|_, _| {}).unwrap();
        assert_eq!(
            (again.repaired_blocks, again.parity_mismatches),
            (0, 0),
            "{again:?}"
        );
        assert_eq!(read_all(&volume), data);
    }
}

#[test]
fn single_disk_corruption_is_an_error_naming_disk_and_block() {
    let (volume, disks) = sim_volume(&spec(Level::Single, 64, 1), 1, 0, 4);
    let mut rng = SimRng::new(5);
    fill(&volume, &mut rng);
    disks[0].inject_bit_rot(device_block(&volume, 10), 1);
    let error = volume.read(8, &mut vec![0u8; 4 * BS]).unwrap_err();
    match &error {
        RaidError::Unrepairable {
            logical_block,
            disk,
            member_block,
            ..
        } => {
            assert_eq!((*logical_block, *member_block), (10, 10));
            assert_eq!(disk, "sim0");
        }
        other => panic!("expected unrepairable, got {other}"),
    }
    let report = volume.scrub(|_, _| {}).unwrap();
    assert_eq!(report.unrepairable_blocks, 1, "{report:?}");
    assert!(report.errors[0].contains("sim0"), "{report:?}");
}

#[test]
fn latent_sector_errors_are_repaired() {
    let (volume, disks) = sim_volume(&spec(Level::Raid5, 120, 2), 3, 0, 6);
    let mut rng = SimRng::new(8);
    let data = fill(&volume, &mut rng);
    let (role, member_block) = locate(&volume, 33);
    disks[role].inject_read_error(device_block(&volume, member_block));
    assert_eq!(read_all(&volume), data);
    assert_eq!(volume.status().repaired_blocks, 1);
    // The rewrite cleared the latent error: a raw read now succeeds.
    let mut buf = vec![0u8; BS];
    disks[role]
        .read_blocks(device_block(&volume, member_block), &mut buf)
        .unwrap();
}

#[test]
fn lost_disk_degrades_then_spare_rebuilds_to_healthy() {
    for (level, members) in [(Level::Raid1, 2), (Level::Raid5, 4)] {
        let (volume, disks) = sim_volume(&spec(level, 2000, 4), members, 1, 9);
        let mut rng = SimRng::new(10);
        let mut data = fill(&volume, &mut rng);
        disks[1].fail();
        // The first I/O that touches the dead disk fails it; data is intact.
        assert_eq!(read_all(&volume), data, "{level:?}");
        volume.sync().unwrap();
        let status = volume.status();
        assert_eq!(status.state, VolumeState::Rebuilding, "{status:?}");
        assert_eq!(status.disks[1].state, "failed");
        assert_eq!(status.disks[members].state, "rebuilding");
        // Writes while rebuilding land on the spare too.
        let patch = random_blocks(&mut rng, 50);
        volume.write(1000, &patch).unwrap();
        data[1000 * BS..1050 * BS].copy_from_slice(&patch);
        volume.rebuild(|_, _| {}).unwrap();
        assert_eq!(volume.status().state, VolumeState::Healthy);
        // Lose another disk: the rebuilt spare carries its share.
        disks[0].fail();
        assert_eq!(read_all(&volume), data, "{level:?} after second loss");
        assert_eq!(volume.status().state, VolumeState::Degraded);
    }
}

#[test]
fn two_lost_disks_fail_raid5_with_a_clear_error() {
    let (volume, disks) = sim_volume(&spec(Level::Raid5, 100, 2), 3, 0, 11);
    let mut rng = SimRng::new(12);
    fill(&volume, &mut rng);
    disks[0].fail();
    disks[2].fail();
    let error = volume
        .read(0, &mut vec![0u8; 100 * BS])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("lost") || error.contains("stripe"),
        "{error}"
    );
    assert_eq!(volume.status().state, VolumeState::Failed);
}

#[test]
fn reassembly_keeps_data_and_refuses_foreign_members() {
    let (volume, disks) = sim_volume(&spec(Level::Raid5, 200, 4), 3, 1, 13);
    let mut rng = SimRng::new(14);
    let data = fill(&volume, &mut rng);
    volume.close().unwrap();
    let volume = assemble(&disks, quiet()).unwrap();
    assert_eq!(read_all(&volume), data);
    assert_eq!(volume.status().state, VolumeState::Healthy);
    drop(volume);

    let (_other, foreign) = sim_volume(&spec(Level::Raid5, 200, 4), 3, 1, 15);
    let mut mixed = disks.clone();
    mixed[2] = foreign[2].clone();
    let error = assemble(&mixed, quiet())
        .err()
        .expect("foreign member accepted")
        .to_string();
    assert!(error.contains("another array"), "{error}");
}

#[test]
fn a_failed_member_that_comes_back_stays_failed() {
    let (volume, disks) = sim_volume(&spec(Level::Raid1, 100, 1), 2, 0, 16);
    let mut rng = SimRng::new(17);
    fill(&volume, &mut rng);
    volume.fail_disk(0).unwrap();
    // Writes continue on the survivor only; disk 0 is now stale.
    let newer = random_blocks(&mut rng, 100);
    volume.write(0, &newer).unwrap();
    volume.close().unwrap();
    let volume = assemble(&disks, quiet()).unwrap();
    assert_eq!(volume.status().state, VolumeState::Degraded);
    assert_eq!(read_all(&volume), newer);
}

#[test]
fn garbage_superblock_member_is_treated_as_missing() {
    let (volume, disks) = sim_volume(&spec(Level::Raid5, 200, 4), 3, 0, 18);
    let mut rng = SimRng::new(19);
    let data = fill(&volume, &mut rng);
    volume.close().unwrap();
    let garbage = random_blocks(&mut rng, 2);
    disks[1].write_blocks(0, &garbage).unwrap();
    disks[1].flush().unwrap();
    let volume = assemble(&disks, quiet()).unwrap();
    assert_eq!(volume.status().state, VolumeState::Degraded);
    assert_eq!(volume.status().disks[1].state, "failed");
    assert_eq!(read_all(&volume), data);
}

#[test]
fn background_rebuild_starts_by_itself() {
    let (volume, disks) = sim_volume(&spec(Level::Raid5, 3000, 4), 3, 1, 20);
    let mut rng = SimRng::new(21);
    let data = fill(&volume, &mut rng);
    volume.close().unwrap();
    disks[2].fail();
    let volume = assemble(&disks, keel_raid::VolumeOptions::default()).unwrap();
    volume.wait_for_rebuild();
    assert_eq!(volume.status().state, VolumeState::Healthy);
    disks[0].fail();
    assert_eq!(read_all(&volume), data);
}

#[test]
fn rebuild_interrupted_by_a_crash_resumes_where_it_stopped() {
    use keel_disk::sim::CrashMode;
    use std::sync::Arc;
    // Large enough that rebuild progress is persisted several times.
    let blocks = 3 * 4096 * 3;
    let (volume, disks) = sim_volume(&spec(Level::Raid5, blocks, 4), 4, 1, 22);
    let mut rng = SimRng::new(23);
    let data = fill(&volume, &mut rng);
    volume.close().unwrap();
    disks[1].fail();
    let volume = assemble(&disks, quiet()).unwrap();
    assert_eq!(volume.status().state, VolumeState::Rebuilding);
    // Rebuild part of the way, then lose power.
    let mut steps = 0;
    let result = volume.rebuild(|done, total| {
        steps += 1;
        if done * 2 > total {
            // Crash every disk while the rebuild is half done.
            for disk in &disks {
                if !disk.has_failed() {
                    disk.fail();
                }
            }
        }
    });
    assert!(result.is_err(), "rebuild should stop when the disks die");
    let rebooted: Vec<Arc<keel_disk::SimDisk>> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| Arc::new(d.reboot(d.crash(CrashMode::Random, 40 + i as u64), 1)))
        .collect();
    drop(volume);
    let volume = assemble(&rebooted, quiet()).unwrap();
    let status = volume.status();
    assert_eq!(status.state, VolumeState::Rebuilding);
    let progress = status.disks[4].rebuild_progress.unwrap();
    assert!(progress > 0.2, "rebuild restarted from scratch: {progress}");
    let mut resumed_from = None;
    volume
        .rebuild(|done, total| {
            resumed_from.get_or_insert(done as f64 / total as f64);
        })
        .unwrap();
    assert!(resumed_from.unwrap() > 0.2);
    assert_eq!(volume.status().state, VolumeState::Healthy);
    rebooted[0].fail();
    assert_eq!(read_all(&volume), data);
}

#[test]
fn misdirected_write_is_caught_at_both_addresses() {
    for (level, members) in [(Level::Raid1, 2), (Level::Raid5, 3)] {
        let (volume, disks) = sim_volume(&spec(level, 200, 1), members, 0, 24);
        let mut rng = SimRng::new(25);
        let mut data = fill(&volume, &mut rng);
        let (role, member_block) = locate(&volume, 5);
        let (_, elsewhere) = locate(&volume, 150);
        // The member write for block 5 lands on another block of the same disk.
        disks[role].misdirect_next_write(device_block(&volume, elsewhere + 1));
        let new = random_blocks(&mut rng, 1);
        volume.write(5, &new).unwrap();
        data[5 * BS..6 * BS].copy_from_slice(&new);
        let _ = member_block;
        let report = volume.scrub(|_, _| {}).unwrap();
        assert_eq!(report.unrepairable_blocks, 0, "{level:?}: {report:?}");
        assert!(
            report.repaired_blocks >= 2,
            "{level:?}: both addresses should be repaired: {report:?}"
        );
        assert_eq!(read_all(&volume), data, "{level:?}");
    }
}
