//! Every level against an in-memory model under random writes, random
//! member failures and random bit rot. Each case is driven by one seed,
//! which proptest prints (minimised) on failure; `KEEL_SEED=N` replays one.

mod common;

use common::*;
use keel_disk::SimRng;
use keel_raid::{Level, Volume};
use proptest::prelude::*;

const BLOCKS: u64 = 600;

fn run(level: Level, members: usize, spares: usize, chunk: u64, seed: u64, steps: usize) {
    let (volume, disks) = sim_volume(&spec(level, BLOCKS, chunk), members, spares, seed);
    let mut rng = SimRng::new(seed);
    let mut model = vec![0u8; BLOCKS as usize * BS];
    let redundancy = level.redundancy(members);
    let mut failures = 0;
    for step in 0..steps {
        match rng.below(10) {
            0..=4 => {
                let start = rng.below(BLOCKS);
                let len = 1 + rng.below((BLOCKS - start).min(64));
                let data = random_blocks(&mut rng, len as usize);
                volume
                    .write(start, &data)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: write: {e}"));
                model[start as usize * BS..(start + len) as usize * BS].copy_from_slice(&data);
            }
            5..=6 => {
                let start = rng.below(BLOCKS);
                let len = 1 + rng.below((BLOCKS - start).min(64));
                let mut out = vec![0u8; len as usize * BS];
                volume
                    .read(start, &mut out)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: read: {e}"));
                assert!(
                    out == model[start as usize * BS..(start + len) as usize * BS],
                    "seed {seed} step {step}: read {start}+{len} differs from the model"
                );
            }
            7 => {
                // Bit rot on one member block; only where redundancy can repair
                // it: at most one bad copy per stripe row, so rot only while
                // no disk is lost, on blocks of one disk per row.
                if redundancy > 0 && failures == 0 {
                    let disk = rng.below(members as u64) as usize;
                    let row = rng.below(volume.geometry().member_data_blocks);
                    if (row as usize) % members == disk {
                        disks[disk]
                            .inject_bit_rot(device_block(&volume, row), 1 + rng.below(4) as u32);
                    }
                }
            }
            8 => {
                if failures < redundancy && rng.below(4) == 0 {
                    let disk = rng.below(members as u64) as usize;
                    if !disks[disk].has_failed() {
                        // Scrub first so no rot is left for the degraded stripes.
                        volume
                            .scrub(|_, _| {})
                            .unwrap_or_else(|e| panic!("seed {seed} step {step}: scrub: {e}"));
                        disks[disk].fail();
                        failures += 1;
                    }
                }
            }
            _ => {
                volume
                    .sync()
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: sync: {e}"));
                if spares > 0 && rng.below(3) == 0 {
                    volume
                        .rebuild(|_, _| {})
                        .unwrap_or_else(|e| panic!("seed {seed} step {step}: rebuild: {e}"));
                }
            }
        }
    }
    let mut out = vec![0u8; BLOCKS as usize * BS];
    volume
        .read(0, &mut out)
        .unwrap_or_else(|e| panic!("seed {seed}: final read: {e}"));
    assert!(
        out == model,
        "seed {seed}: final contents differ from the model"
    );
    drop(volume);
    if failures == 0 {
        // Reassembly from the disks gives the same contents.
        let volume: Volume =
            assemble(&disks, quiet()).unwrap_or_else(|e| panic!("seed {seed}: assemble: {e}"));
        let mut again = vec![0u8; BLOCKS as usize * BS];
        volume.read(0, &mut again).unwrap();
        assert!(
            again == model,
            "seed {seed}: contents differ after reassembly"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn single_matches_model(seed in any::<u64>()) {
        run(Level::Single, 1, 0, 1, seed, 200);
    }

    #[test]
    fn raid1_matches_model(seed in any::<u64>(), members in 2usize..4, spares in 0usize..2) {
        run(Level::Raid1, members, spares, 1, seed, 200);
    }

    #[test]
    fn raid5_matches_model(seed in any::<u64>(), members in 3usize..6, spares in 0usize..2, chunk_shift in 0u32..4) {
        run(Level::Raid5, members, spares, 1 << chunk_shift, seed, 200);
    }
}

/// Replays one seed from the environment: `KEEL_SEED=N cargo test -p keel-raid --test model replay`.
#[test]
fn replay() {
    if let Ok(seed) = std::env::var("KEEL_SEED") {
        let seed: u64 = seed.parse().expect("KEEL_SEED is a number");
        for (level, members) in [
            (Level::Single, 1),
            (Level::Raid1, 2),
            (Level::Raid1, 3),
            (Level::Raid5, 3),
            (Level::Raid5, 5),
        ] {
            for spares in 0..2 {
                run(level, members, spares, 2, seed, 200);
            }
        }
    }
}
