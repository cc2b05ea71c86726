//! The journal on the buffer cache (the real stack), crashed at every write
//! boundary of a recorded run: log and home blocks on two simulated disks
//! that crash together, home blocks cached with delayed writes and the
//! write-ahead rule. After each crash, a fresh cache and journal recover and
//! every transaction must be all-or-nothing, every acknowledged one present.

use std::sync::Arc;

use keel_cache::{Cache, CacheConfig, PolicyKind};
use keel_crashtest::{enumerate_set, CrashConfig, RecordingSet};
use keel_disk::{BlockDevice, MemDisk, SimDisk, SimRng};
use keel_journal::{format_log_with_epoch, Journal, LogRegion};

const BLOCK: usize = 4096;
const REGION: LogRegion = LogRegion {
    first_block: 0,
    block_count: 40,
};
const HOME_BLOCKS: u64 = 16;

/// One member of the recording set, owned, so the cache can hold it.
struct Member(Arc<RecordingSet>, usize);

impl BlockDevice for Member {
    fn name(&self) -> &str {
        self.0.disk(self.1).name()
    }
    fn block_size(&self) -> usize {
        self.0.disk(self.1).block_size()
    }
    fn block_count(&self) -> u64 {
        self.0.disk(self.1).block_count()
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> keel_disk::Result<()> {
        self.0.disk(self.1).read_blocks(start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> keel_disk::Result<()> {
        self.0.disk(self.1).write_blocks(start, buf)
    }
    fn flush(&self) -> keel_disk::Result<()> {
        self.0.disk(self.1).flush()
    }
}

fn cache_over(device: Arc<dyn BlockDevice>, blocks: u64) -> Arc<Cache> {
    Cache::new(
        device,
        CacheConfig {
            // Small, so eviction writes blocks home between checkpoints too.
            capacity_bytes: blocks * BLOCK as u64,
            policy: PolicyKind::default(),
            background_flusher: false,
            ..CacheConfig::default()
        },
    )
    .expect("cache")
}

fn image(value: u64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK];
    block[..8].copy_from_slice(&value.to_le_bytes());
    block[BLOCK - 8..].copy_from_slice(&value.to_le_bytes());
    block
}

#[test]
fn transactions_through_the_cache_survive_every_crash_point() {
    let seed = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("seed {seed} (replay with KEEL_SEED={seed})");
    let log = SimDisk::new("log", BLOCK, REGION.block_count, seed);
    format_log_with_epoch(&log, REGION, 1).unwrap();
    let home = SimDisk::new("home", BLOCK, HOME_BLOCKS, seed);
    let set = Arc::new(RecordingSet::new(vec![log, home]));
    let mut rng = SimRng::new(seed);
    // Each transaction k writes value k into 2–4 random blocks. states[k] =
    // the value of every block after transactions 0..k.
    let mut states = vec![vec![0u64; HOME_BLOCKS as usize]];
    let (mut started, mut acknowledged) = (Vec::new(), Vec::new());
    {
        let cache = cache_over(Arc::new(Member(set.clone(), 1)), 6);
        let (journal, _) = Journal::open(Member(set.clone(), 0), REGION, cache.clone()).unwrap();
        for k in 1..=30u64 {
            let mut state = states.last().unwrap().clone();
            let mut txn = journal.begin();
            for _ in 0..2 + rng.below(3) {
                let block = rng.below(HOME_BLOCKS);
                txn.write(block, &image(k)).unwrap();
                state[block as usize] = k;
            }
            started.push(set.op_count());
            txn.commit().unwrap();
            acknowledged.push(set.op_count());
            states.push(state);
            if k % 9 == 0 {
                journal.checkpoint().unwrap();
            }
        }
        drop(journal);
        drop(cache);
    }
    let recording = Arc::try_unwrap(set)
        .ok()
        .expect("devices released")
        .finish();
    let config = CrashConfig::from_env(seed, 6);
    let report = enumerate_set(&recording, &config, |state| {
        let log = MemDisk::from_image("log", BLOCK, state.images[0].clone());
        let home: Arc<dyn BlockDevice> =
            Arc::new(MemDisk::from_image("home", BLOCK, state.images[1].clone()));
        let cache = cache_over(home, 6);
        let (journal, _) =
            Journal::open(&log, REGION, cache).map_err(|e| format!("recovery: {e}"))?;
        let mut now = Vec::new();
        let mut buf = vec![0u8; BLOCK];
        for block in 0..HOME_BLOCKS {
            journal.read(block, &mut buf).map_err(|e| e.to_string())?;
            let (head, tail) = (&buf[..8], &buf[BLOCK - 8..]);
            if head != tail {
                return Err(format!("block {block} is torn"));
            }
            now.push(u64::from_le_bytes(head.try_into().unwrap()));
        }
        let done = acknowledged.iter().filter(|&&at| at <= state.point).count();
        let begun = started.iter().filter(|&&at| at < state.point).count();
        if (done..=begun).any(|k| states[k] == now) {
            Ok(())
        } else {
            Err(format!(
                "state {now:?} is no prefix of {done}..={begun} transactions"
            ))
        }
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!(
        "explored {} crash states at {} crash points",
        report.states, report.crash_points
    );
    assert!(report.states > 1000);
}
