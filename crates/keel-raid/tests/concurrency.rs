//! Many threads on one volume: disjoint writers, readers that verify what
//! each writer last wrote, a scrub and a rebuild running alongside. Catches
//! lost updates to shared parity, torn stripes and lock-order deadlocks.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use keel_disk::SimRng;
use keel_raid::{Level, VolumeState};

#[test]
fn writers_readers_scrub_and_rebuild_together() {
    let base = seed();
    for (level, members) in [(Level::Raid5, 4), (Level::Raid1, 3)] {
        let blocks = 2048u64;
        let (volume, disks) = sim_volume(&spec(level, blocks, 4), members, 1, base);
        let volume = Arc::new(volume);
        let threads = 4u64;
        let per_thread = blocks / threads;
        // Each writer owns a contiguous range; stripes straddle owners, so
        // parity is shared between threads.
        let model: Arc<Vec<Mutex<Vec<u8>>>> = Arc::new(
            (0..threads)
                .map(|_| Mutex::new(vec![0u8; per_thread as usize * BS]))
                .collect(),
        );
        disks[2].fail();
        volume.sync().unwrap(); // notices the loss: the spare starts rebuilding
        assert_eq!(volume.status().state, VolumeState::Rebuilding);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let volume = volume.clone();
                let model = model.clone();
                scope.spawn(move || {
                    let mut rng = SimRng::new(base ^ (t + 1));
                    let first = t * per_thread;
                    for _ in 0..150 {
                        let offset = rng.below(per_thread);
                        let len = 1 + rng.below((per_thread - offset).min(40));
                        if rng.coin() {
                            let data = random_blocks(&mut rng, len as usize);
                            let mut mine = model[t as usize].lock().unwrap();
                            volume.write(first + offset, &data).unwrap();
                            mine[offset as usize * BS..(offset + len) as usize * BS]
                                .copy_from_slice(&data);
                        } else {
                            let mine = model[t as usize].lock().unwrap();
                            let mut out = vec![0u8; len as usize * BS];
                            volume.read(first + offset, &mut out).unwrap();
                            assert!(
                                out == mine[offset as usize * BS..(offset + len) as usize * BS],
                                "seed {base}: thread {t} read stale data at {}",
                                first + offset
                            );
                        }
                    }
                });
            }
            let rebuilder = volume.clone();
            scope.spawn(move || rebuilder.rebuild(|_, _| {}).unwrap());
            let scrubber = volume.clone();
            scope.spawn(move || {
                for _ in 0..3 {
                    scrubber.scrub(|_, _| {}).unwrap();
                }
            });
        });
        volume.rebuild(|_, _| {}).unwrap();
        assert_eq!(volume.status().state, VolumeState::Healthy, "seed {base}");
        // Lose another disk: the rebuilt spare and parity must carry the data.
        disks[0].fail();
        let mut out = vec![0u8; blocks as usize * BS];
        volume.read(0, &mut out).unwrap();
        for t in 0..threads as usize {
            let mine = model[t].lock().unwrap();
            let at = t * per_thread as usize * BS;
            assert!(
                out[at..at + mine.len()] == mine[..],
                "seed {base}: {level:?} range of thread {t} differs at the end"
            );
        }
    }
}
