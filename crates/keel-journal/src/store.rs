//! Where committed blocks live until they are home: the [`HomeStore`] trait
//! and [`WriteBackStore`], a simple implementation over any block device.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use keel_disk::{BlockDevice, DiskError};

use crate::format::Lsn;

/// The home locations of journaled blocks, seen through whatever caches them.
///
/// The journal calls it as follows, and an implementation (the buffer cache)
/// relies on nothing else:
///
/// * [`install`](HomeStore::install) is called only after the transaction
///   that wrote the image is durable in the log, in LSN order, never
///   concurrently with [`checkpoint_sync`](HomeStore::checkpoint_sync) and
///   never concurrently with another install. From then on the store owns the
///   image: it may write it home whenever it likes (the write-ahead rule is
///   already met because `lsn` is durable), and reads must return it.
/// * [`read`](HomeStore::read) returns the latest installed image of the
///   block, or the home contents if none is installed.
/// * [`checkpoint_sync`](HomeStore::checkpoint_sync) returns only when every
///   image installed before the call is written home and flushed. After it,
///   the journal reuses the log space those images came from, so they must
///   never be lost afterwards.
///
/// Uncommitted data never reaches the store: a transaction's writes stay in
/// the transaction until it commits.
pub trait HomeStore: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    fn block_size(&self) -> usize;
    fn block_count(&self) -> u64;
    fn read(&self, block: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    fn install(&self, block: u64, data: &[u8], lsn: Lsn) -> Result<(), Self::Error>;
    fn checkpoint_sync(&self) -> Result<(), Self::Error>;
}

impl<T: HomeStore + ?Sized> HomeStore for Arc<T> {
    type Error = T::Error;
    fn block_size(&self) -> usize {
        (**self).block_size()
    }
    fn block_count(&self) -> u64 {
        (**self).block_count()
    }
    fn read(&self, block: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(block, buf)
    }
    fn install(&self, block: u64, data: &[u8], lsn: Lsn) -> Result<(), Self::Error> {
        (**self).install(block, data, lsn)
    }
    fn checkpoint_sync(&self) -> Result<(), Self::Error> {
        (**self).checkpoint_sync()
    }
}

/// A write-back home store over a region of a block device: installed
/// images are kept in memory and written home (sorted, coalesced) at
/// checkpoint. Home block `b` is device block `first_block + b`.
pub struct WriteBackStore<D: BlockDevice> {
    device: D,
    first_block: u64,
    block_count: u64,
    dirty: RwLock<DirtyMap>,
}

/// Installed images not yet home: block -> (image, LSN of its transaction).
type DirtyMap = BTreeMap<u64, (Arc<[u8]>, Lsn)>;

impl<D: BlockDevice> WriteBackStore<D> {
    /// The whole device is the home region.
    pub fn new(device: D) -> WriteBackStore<D> {
        let block_count = device.block_count();
        WriteBackStore::with_region(device, 0, block_count)
    }

    /// Blocks `first_block..first_block + block_count` of the device.
    pub fn with_region(device: D, first_block: u64, block_count: u64) -> WriteBackStore<D> {
        assert!(
            first_block + block_count <= device.block_count(),
            "home region past the end of {}",
            device.name()
        );
        WriteBackStore {
            device,
            first_block,
            block_count,
            dirty: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// Number of installed images not yet written home.
    pub fn dirty_blocks(&self) -> usize {
        self.dirty.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<D: BlockDevice> HomeStore for WriteBackStore<D> {
    type Error = DiskError;

    fn block_size(&self) -> usize {
        self.device.block_size()
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read(&self, block: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        if let Some((image, _)) = self
            .dirty
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&block)
        {
            buf.copy_from_slice(image);
            return Ok(());
        }
        self.device.read_blocks(self.first_block + block, buf)
    }

    fn install(&self, block: u64, data: &[u8], lsn: Lsn) -> Result<(), DiskError> {
        assert!(
            block < self.block_count,
            "install of block {block} outside the home region"
        );
        self.dirty
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(block, (Arc::from(data), lsn));
        Ok(())
    }

    fn checkpoint_sync(&self) -> Result<(), DiskError> {
        let snapshot: Vec<(u64, Arc<[u8]>, Lsn)> = self
            .dirty
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(block, (image, lsn))| (*block, image.clone(), *lsn))
            .collect();
        if snapshot.is_empty() {
            return Ok(());
        }
        // Coalesce runs of consecutive blocks into one write each (elevator order).
        let block_size = self.device.block_size();
        let mut run_start = 0usize;
        let mut buffer = Vec::new();
        for index in 0..snapshot.len() {
            let next_is_adjacent =
                index + 1 < snapshot.len() && snapshot[index + 1].0 == snapshot[index].0 + 1;
            if !next_is_adjacent {
                buffer.clear();
                buffer.reserve((index + 1 - run_start) * block_size);
                for (_, image, _) in &snapshot[run_start..=index] {
                    buffer.extend_from_slice(image);
                }
                self.device
                    .write_blocks(self.first_block + snapshot[run_start].0, &buffer)?;
                run_start = index + 1;
            }
        }
        // The images are home only once this flush returns.
        self.device.flush()?;
        let mut dirty = self.dirty.write().unwrap_or_else(|e| e.into_inner());
        for (block, _, lsn) in snapshot {
            if dirty
                .get(&block)
                .is_some_and(|(_, current)| *current == lsn)
            {
                dirty.remove(&block);
            }
        }
        Ok(())
    }
}
