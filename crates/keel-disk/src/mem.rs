use std::sync::RwLock;

use crate::{check_request, BlockDevice, Result};

/// A disk in memory: fast, for tests. `flush` is a no-op because nothing is
/// lost when nothing can crash; crash tests use [`crate::SimDisk`].
pub struct MemDisk {
    name: String,
    block_size: usize,
    block_count: u64,
    data: RwLock<Vec<u8>>,
}

impl MemDisk {
    /// A zero-filled disk of `block_count` blocks of `block_size` bytes.
    pub fn new(block_size: usize, block_count: u64) -> MemDisk {
        MemDisk::from_image(
            "memdisk",
            block_size,
            vec![0; block_size * block_count as usize],
        )
    }

    /// A disk whose contents are `image` (length a multiple of `block_size`).
    pub fn from_image(name: &str, block_size: usize, image: Vec<u8>) -> MemDisk {
        assert!(block_size > 0 && image.len().is_multiple_of(block_size));
        MemDisk {
            name: name.to_string(),
            block_size,
            block_count: (image.len() / block_size) as u64,
            data: RwLock::new(image),
        }
    }

    /// A copy of the whole contents.
    pub fn image(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl BlockDevice for MemDisk {
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
        check_request(self, start, buf.len())?;
        let offset = start as usize * self.block_size;
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        buf.copy_from_slice(&data[offset..offset + buf.len()]);
        Ok(())
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<()> {
        check_request(self, start, buf.len())?;
        let offset = start as usize * self.block_size;
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        data[offset..offset + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
