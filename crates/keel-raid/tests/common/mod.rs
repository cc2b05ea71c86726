#![allow(dead_code)]

use std::sync::Arc;

use keel_disk::{BlockDevice, SimDisk, SimRng};
use keel_raid::{CreateSpec, Layout, Level, Volume, VolumeOptions, BLOCK_SIZE};

pub const BS: usize = BLOCK_SIZE;

/// The seed of a randomized test: `KEEL_SEED` to replay, else from the clock.
pub fn seed() -> u64 {
    let seed = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed {seed} (replay with KEEL_SEED={seed})");
    seed
}

pub fn spec(level: Level, size_blocks: u64, chunk_blocks: u64) -> CreateSpec {
    CreateSpec {
        level,
        layout: Layout::LeftSymmetric,
        size_bytes: size_blocks * BS as u64,
        chunk_bytes: chunk_blocks * BS as u64,
    }
}

pub fn quiet() -> VolumeOptions {
    VolumeOptions {
        background_rebuild: false,
        ..VolumeOptions::default()
    }
}

/// A volume on simulated disks; returns the disks (members, then spares).
pub fn sim_volume(
    spec: &CreateSpec,
    members: usize,
    spares: usize,
    seed: u64,
) -> (Volume, Vec<Arc<SimDisk>>) {
    let blocks = spec.member_geometry(members).total_blocks();
    let disks: Vec<Arc<SimDisk>> = (0..members + spares)
        .map(|i| {
            Arc::new(SimDisk::new(
                &format!("sim{i}"),
                BS,
                blocks,
                seed.wrapping_add(i as u64),
            ))
        })
        .collect();
    let as_dev = |d: &Arc<SimDisk>| (d.name().to_string(), d.clone() as Arc<dyn BlockDevice>);
    let volume = Volume::create(
        "simvol",
        spec,
        disks[..members].iter().map(as_dev).collect(),
        disks[members..].iter().map(as_dev).collect(),
        true,
        quiet(),
    )
    .expect("create");
    (volume, disks)
}

pub fn assemble(disks: &[Arc<SimDisk>], options: VolumeOptions) -> keel_raid::Result<Volume> {
    Volume::assemble(
        "simvol",
        disks
            .iter()
            .map(|d| (d.name().to_string(), Ok(d.clone() as Arc<dyn BlockDevice>)))
            .collect(),
        options,
    )
}

pub fn random_blocks(rng: &mut SimRng, blocks: usize) -> Vec<u8> {
    let mut data = vec![0u8; blocks * BS];
    rng.fill(&mut data);
    data
}

/// The member data block of a logical block on role `role`'s disk, as a
/// device block number (for fault injection).
pub fn device_block(volume: &Volume, member_block: u64) -> u64 {
    let g = volume.geometry();
    let spec_geometry = keel_raid::format::MemberGeometry::new(
        g.member_data_blocks,
        keel_raid::DEFAULT_REGION_BLOCKS.max(g.chunk_blocks),
    );
    spec_geometry.data_start() + member_block
}

/// Which role holds logical block `block`, and where on it.
pub fn locate(volume: &Volume, block: u64) -> (usize, u64) {
    let g = volume.geometry();
    let place = g.place(block);
    let role = match g.level {
        Level::Raid5 => g.data_role(place.unit, place.chunk),
        _ => 0,
    };
    (role, place.member_block)
}
