//! One member disk of a volume: its data area and the crc32c table that
//! vouches for every data block on it.
//!
//! The table lives in memory (4 bytes per 4 KiB block: 1 MiB per GiB) and
//! is written back at flush. Between a data write and the next flush the
//! on-disk entry may disagree with the on-disk data; the write-intent bitmap
//! covers exactly that window (see `docs/integrity.md`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use keel_disk::{BlockDevice, DiskError};

use crate::format::{MemberGeometry, BLOCK_SIZE, CRCS_PER_BLOCK};

pub struct Member {
    pub path: String,
    pub device: Arc<dyn BlockDevice>,
    pub geometry: MemberGeometry,
    table: Mutex<CrcTable>,
}

struct CrcTable {
    entries: Vec<u32>,
    dirty_blocks: BTreeSet<u64>,
}

/// The crc32c of a block of zeros: the entry of every never-written block.
pub fn zero_block_crc() -> u32 {
    crc32c::crc32c(&[0u8; BLOCK_SIZE])
}

impl Member {
    /// Loads the checksum table of an existing member.
    pub fn load(
        path: String,
        device: Arc<dyn BlockDevice>,
        geometry: MemberGeometry,
    ) -> Result<Member, DiskError> {
        let mut raw = vec![0u8; geometry.crc_blocks as usize * BLOCK_SIZE];
        if !raw.is_empty() {
            device.read_blocks(geometry.crc_start(), &mut raw)?;
        }
        let entries = raw
            .chunks_exact(4)
            .take(geometry.data_blocks as usize)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok(Member {
            path,
            device,
            geometry,
            table: Mutex::new(CrcTable {
                entries,
                dirty_blocks: BTreeSet::new(),
            }),
        })
    }

    /// A member whose data area is all zeros (freshly created or zeroed):
    /// every entry is the zero block's crc, and the whole table is dirty.
    pub fn fresh(path: String, device: Arc<dyn BlockDevice>, geometry: MemberGeometry) -> Member {
        Member {
            path,
            device,
            geometry,
            table: Mutex::new(CrcTable {
                entries: vec![zero_block_crc(); geometry.data_blocks as usize],
                dirty_blocks: (0..geometry.crc_blocks).collect(),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, CrcTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn expected_crc(&self, block: u64) -> u32 {
        self.table().entries[block as usize]
    }

    /// True when `data` is what the table says `block` holds.
    pub fn verify(&self, block: u64, data: &[u8]) -> bool {
        crc32c::crc32c(data) == self.expected_crc(block)
    }

    /// Raw read of data blocks (no verification).
    pub fn read_raw(&self, block: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.device
            .read_blocks(self.geometry.data_start() + block, buf)
    }

    /// Raw scatter read of consecutive data blocks (no verification).
    pub fn read_raw_vectored(&self, block: u64, bufs: &mut [&mut [u8]]) -> Result<(), DiskError> {
        self.device
            .read_blocks_vectored(self.geometry.data_start() + block, bufs)
    }

    /// Writes data blocks and records their checksums.
    pub fn write(&self, block: u64, data: &[u8]) -> Result<(), DiskError> {
        self.device
            .write_blocks(self.geometry.data_start() + block, data)?;
        self.set_crcs(block, data);
        Ok(())
    }

    /// Writes consecutive data blocks from several buffers in one request.
    pub fn write_vectored(&self, block: u64, bufs: &[&[u8]]) -> Result<(), DiskError> {
        self.device
            .write_blocks_vectored(self.geometry.data_start() + block, bufs)?;
        let mut at = block;
        for buf in bufs {
            self.set_crcs(at, buf);
            at += (buf.len() / BLOCK_SIZE) as u64;
        }
        Ok(())
    }

    /// Records the checksums of `data` as the contents of blocks from `block`.
    pub fn set_crcs(&self, block: u64, data: &[u8]) {
        let crcs: Vec<u32> = data.chunks(BLOCK_SIZE).map(crc32c::crc32c).collect();
        let mut table = self.table();
        for (i, crc) in crcs.into_iter().enumerate() {
            let b = block + i as u64;
            table.entries[b as usize] = crc;
            table.dirty_blocks.insert(b / CRCS_PER_BLOCK);
        }
    }

    /// Writes the dirty table blocks (not flushed).
    pub fn write_table(&self) -> Result<(), DiskError> {
        let (blocks, images) = {
            let mut table = self.table();
            let blocks: Vec<u64> = std::mem::take(&mut table.dirty_blocks)
                .into_iter()
                .collect();
            let images: Vec<Vec<u8>> = blocks
                .iter()
                .map(|&t| {
                    let mut image = vec![0u8; BLOCK_SIZE];
                    let first = (t * CRCS_PER_BLOCK) as usize;
                    let last = (first + CRCS_PER_BLOCK as usize).min(table.entries.len());
                    for (i, crc) in table.entries[first..last].iter().enumerate() {
                        image[i * 4..i * 4 + 4].copy_from_slice(&crc.to_le_bytes());
                    }
                    image
                })
                .collect();
            (blocks, images)
        };
        for (i, (t, image)) in blocks.iter().zip(&images).enumerate() {
            if let Err(e) = self
                .device
                .write_blocks(self.geometry.crc_start() + t, image)
            {
                // Put the unwritten ones back so a retry (or the caller failing
                // the member) sees the truth.
                let mut table = self.table();
                table.dirty_blocks.extend(blocks[i..].iter().copied());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Table write-back followed by the device's durability barrier.
    pub fn flush(&self) -> Result<(), DiskError> {
        self.write_table()?;
        self.device.flush()
    }

    pub fn write_bitmap(&self, image: &[u8]) -> Result<(), DiskError> {
        self.device
            .write_blocks(self.geometry.bitmap_start(), image)
    }

    pub fn read_bitmap(&self) -> Result<Vec<u8>, DiskError> {
        let mut image = vec![0u8; self.geometry.bitmap_blocks as usize * BLOCK_SIZE];
        self.device
            .read_blocks(self.geometry.bitmap_start(), &mut image)?;
        Ok(image)
    }
}
