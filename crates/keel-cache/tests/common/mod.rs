//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use keel_disk::{BlockDevice, DiskError};

/// The seed for a randomized test: `KEEL_SEED` if set, else fresh. Printed
/// so that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("KEEL_SEED") {
        Ok(value) => value.parse().expect("KEEL_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("{test}: seed {seed} (replay with KEEL_SEED={seed})");
    seed
}

/// A device wrapper that can fail writes or flushes on demand, slow reads
/// down, and counts calls.
pub struct FlakyDisk<D> {
    pub inner: D,
    pub fail_writes: AtomicBool,
    pub fail_flushes: AtomicBool,
    pub read_delay_us: AtomicU64,
    pub reads: AtomicU64,
    /// Every block read, in order (for tests that check what was read).
    pub blocks_read: std::sync::Mutex<Vec<u64>>,
    pub writes: AtomicU64,
    pub failed_writes: AtomicU64,
    pub flushes: AtomicU64,
}

impl<D> FlakyDisk<D> {
    pub fn new(inner: D) -> Self {
        FlakyDisk {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_flushes: AtomicBool::new(false),
            read_delay_us: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            blocks_read: std::sync::Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
            failed_writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }
}

impl<D: BlockDevice> BlockDevice for FlakyDisk<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> keel_disk::Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let count = (buf.len() / self.inner.block_size()) as u64;
        self.blocks_read
            .lock()
            .unwrap()
            .extend(start..start + count);
        let delay = self.read_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        self.inner.read_blocks(start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> keel_disk::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            self.failed_writes.fetch_add(1, Ordering::SeqCst);
            return Err(DiskError::Io {
                device: self.name().to_string(),
                block: start,
                source: std::io::Error::other("injected write failure"),
            });
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write_blocks(start, buf)
    }
    fn flush(&self) -> keel_disk::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.fail_flushes.load(Ordering::SeqCst) {
            return Err(DiskError::Flush {
                device: self.name().to_string(),
                source: std::io::Error::other("injected flush failure"),
            });
        }
        self.inner.flush()
    }
}

/// Block contents that say which block and which version they are, in
/// every sector, so a torn block can be checked sector by sector.
pub fn pattern(block: u64, version: u64, block_size: usize) -> Vec<u8> {
    let mut data = vec![0u8; block_size];
    if version == 0 {
        return data;
    }
    for sector in data.chunks_mut(keel_disk::SECTOR_SIZE) {
        sector[..8].copy_from_slice(&block.to_le_bytes());
        sector[8..16].copy_from_slice(&version.to_le_bytes());
        let fill = (block.wrapping_mul(31) ^ version.wrapping_mul(17)) as u8;
        sector[16..].fill(fill);
    }
    data
}

/// The version a sector holds (0 for the initial zeros), or `None` if the
/// sector is no version of this block at all.
pub fn sector_version(block: u64, sector_bytes: &[u8], block_size: usize) -> Option<u64> {
    if sector_bytes.iter().all(|b| *b == 0) {
        return Some(0);
    }
    let tagged = u64::from_le_bytes(sector_bytes[..8].try_into().ok()?);
    let version = u64::from_le_bytes(sector_bytes[8..16].try_into().ok()?);
    if tagged != block {
        return None;
    }
    let expected = pattern(block, version, block_size);
    (sector_bytes == &expected[..sector_bytes.len()]).then_some(version)
}
