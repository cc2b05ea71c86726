use std::sync::Arc;

use crate::{check_request, BlockDevice, Result};

/// A range of another device's blocks, seen as a device of its own: how one
/// volume holds a journal's log and the blocks it protects side by side
/// (the log must not go through the buffer cache; the home blocks do).
pub struct Partition {
    name: String,
    device: Arc<dyn BlockDevice>,
    first_block: u64,
    block_count: u64,
}

impl Partition {
    /// Blocks `[first_block, first_block + block_count)` of `device`.
    /// Panics if the range does not lie inside the device (a caller bug,
    /// not bad input: callers derive ranges from a validated layout).
    pub fn new(device: Arc<dyn BlockDevice>, first_block: u64, block_count: u64) -> Partition {
        assert!(
            block_count > 0
                && first_block
                    .checked_add(block_count)
                    .is_some_and(|end| end <= device.block_count()),
            "partition {first_block}+{block_count} outside {} ({} blocks)",
            device.name(),
            device.block_count()
        );
        Partition {
            name: format!(
                "{}[{first_block}..{}]",
                device.name(),
                first_block + block_count
            ),
            device,
            first_block,
            block_count,
        }
    }
}

impl BlockDevice for Partition {
    fn name(&self) -> &str {
        &self.name
    }
    fn block_size(&self) -> usize {
        self.device.block_size()
    }
    fn block_count(&self) -> u64 {
        self.block_count
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        check_request(self, start, buf.len())?;
        self.device.read_blocks(self.first_block + start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<()> {
        check_request(self, start, buf.len())?;
        self.device.write_blocks(self.first_block + start, buf)
    }
    fn flush(&self) -> Result<()> {
        self.device.flush()
    }
    fn read_blocks_vectored(&self, start: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        check_request(self, start, bufs.iter().map(|b| b.len()).sum())?;
        self.device
            .read_blocks_vectored(self.first_block + start, bufs)
    }
    fn write_blocks_vectored(&self, start: u64, bufs: &[&[u8]]) -> Result<()> {
        check_request(self, start, bufs.iter().map(|b| b.len()).sum())?;
        self.device
            .write_blocks_vectored(self.first_block + start, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiskError, MemDisk};

    #[test]
    fn partition_offsets_and_bounds() {
        let disk = Arc::new(MemDisk::new(512, 10));
        let part = Partition::new(disk.clone(), 4, 3);
        part.write_blocks(0, &[7u8; 1024]).unwrap();
        let mut buf = [0u8; 512];
        disk.read_blocks(5, &mut buf).unwrap();
        assert_eq!(buf, [7u8; 512]);
        assert!(matches!(
            part.read_blocks(2, &mut [0u8; 1024]),
            Err(DiskError::OutOfRange { .. })
        ));
    }
}
