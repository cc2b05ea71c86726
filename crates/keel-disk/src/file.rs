use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{check_request, BlockDevice, DiskError, Result, DEFAULT_BLOCK_SIZE};

/// How to open a [`FileDisk`].
#[derive(Clone, Copy, Debug)]
pub struct FileDiskOptions {
    /// Block size in bytes (a multiple of 512).
    pub block_size: usize,
    /// Open with `O_DIRECT`, bypassing the page cache (buffers are bounced
    /// through aligned memory as needed).
    pub direct: bool,
    /// Open read-only; writes and flushes then fail with
    /// [`DiskError::ReadOnly`].
    pub read_only: bool,
}

impl Default for FileDiskOptions {
    fn default() -> Self {
        FileDiskOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            direct: false,
            read_only: false,
        }
    }
}

/// A disk image file or a real block device.
///
/// Reads and writes are `pread`/`pwrite` at `block * block_size`; `flush` is
/// `fdatasync`, which is the durability barrier the trait promises. A failed
/// `fdatasync` poisons the disk: Linux may already have dropped the dirty
/// pages and cleared the error, so a retried fsync would falsely succeed
/// (Rebello et al., "Can applications recover from fsync failures?", ATC '20).
pub struct FileDisk {
    name: String,
    file: File,
    block_size: usize,
    block_count: u64,
    direct: bool,
    read_only: bool,
    poisoned: AtomicBool,
}

impl FileDisk {
    /// Creates (or truncates) an image file of `block_count` blocks, zero-filled.
    pub fn create(path: &Path, block_size: usize, block_count: u64) -> Result<FileDisk> {
        let name = path.display().to_string();
        check_block_size(&name, block_size)?;
        if block_count == 0 {
            return Err(DiskError::BadGeometry {
                device: name,
                reason: "cannot create a disk of zero blocks".into(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| DiskError::Open {
                device: name.clone(),
                source,
            })?;
        file.set_len(block_count * block_size as u64)
            .map_err(|source| DiskError::Open {
                device: name.clone(),
                source,
            })?;
        // Reserve the space now: a sparse image can fail a later write with
        // ENOSPC, and images written side by side (RAID members) would
        // otherwise interleave their extents and read back slower.
        // SAFETY: a plain syscall on a valid descriptor.
        let reserved = unsafe {
            libc::posix_fallocate(
                std::os::unix::io::AsRawFd::as_raw_fd(&file),
                0,
                (block_count * block_size as u64) as libc::off_t,
            )
        };
        if reserved != 0 && reserved != libc::EOPNOTSUPP && reserved != libc::EINVAL {
            return Err(DiskError::Open {
                device: name,
                source: io::Error::from_raw_os_error(reserved),
            });
        }
        // IMPORTANT: the new length must be durable before anyone relies on the
        // image; fsync the file (size is metadata) and its directory (the name).
        file.sync_all().map_err(|source| DiskError::Flush {
            device: name.clone(),
            source,
        })?;
        sync_parent_dir(path);
        drop(file);
        FileDisk::open(
            path,
            FileDiskOptions {
                block_size,
                ..FileDiskOptions::default()
            },
        )
    }

    /// Opens an existing image file or block device. Fails with a clear error
    /// when it is missing, empty, not a whole number of blocks, or read-only
    /// while `options.read_only` is false.
    pub fn open(path: &Path, options: FileDiskOptions) -> Result<FileDisk> {
        let name = path.display().to_string();
        check_block_size(&name, options.block_size)?;
        let mut open = OpenOptions::new();
        open.read(true).write(!options.read_only);
        if options.direct {
            open.custom_flags(libc::O_DIRECT);
        }
        let mut file = open.open(path).map_err(|source| {
            let source = match source.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EROFS) if !options.read_only => io::Error::new(
                    source.kind(),
                    format!("{source} (the file is read-only; keel needs to write it)"),
                ),
                _ => source,
            };
            DiskError::Open {
                device: name.clone(),
                source,
            }
        })?;
        let metadata = file.metadata().map_err(|source| DiskError::Open {
            device: name.clone(),
            source,
        })?;
        let file_type = metadata.file_type();
        if !(file_type.is_file() || file_type.is_block_device()) {
            return Err(DiskError::BadGeometry {
                device: name,
                reason: "not a regular file or block device".into(),
            });
        }
        // Block devices report length 0 in metadata; seeking to the end works for both.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| DiskError::Open {
                device: name.clone(),
                source,
            })?;
        if size == 0 {
            return Err(DiskError::BadGeometry {
                device: name,
                reason: "is empty (0 bytes)".into(),
            });
        }
        if size % options.block_size as u64 != 0 {
            return Err(DiskError::BadGeometry {
                device: name,
                reason: format!(
                    "size {size} bytes is not a whole number of {}-byte blocks (truncated?)",
                    options.block_size
                ),
            });
        }
        Ok(FileDisk {
            name,
            file,
            block_size: options.block_size,
            block_count: size / options.block_size as u64,
            direct: options.direct,
            read_only: options.read_only,
            poisoned: AtomicBool::new(false),
        })
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(DiskError::Poisoned {
                device: self.name.clone(),
            });
        }
        Ok(())
    }

    /// A vectored request: the range must fit and every buffer be whole blocks.
    fn check_vectored(&self, start: u64, lens: impl Iterator<Item = usize> + Clone) -> Result<()> {
        check_request(self, start, lens.clone().sum())?;
        if let Some(len) = lens.into_iter().find(|len| len % self.block_size != 0) {
            return Err(DiskError::Misaligned {
                device: self.name.clone(),
                len,
                block_size: self.block_size,
            });
        }
        Ok(())
    }

    fn io_error(&self, block: u64, source: io::Error) -> DiskError {
        DiskError::Io {
            device: self.name.clone(),
            block,
            source,
        }
    }
}

fn check_block_size(name: &str, block_size: usize) -> Result<()> {
    if block_size == 0 || !block_size.is_multiple_of(crate::SECTOR_SIZE) {
        return Err(DiskError::BadGeometry {
            device: name.to_string(),
            reason: format!("block size {block_size} is not a positive multiple of 512"),
        });
    }
    Ok(())
}

/// Makes a newly created file's directory entry durable. Failure here is not
/// fatal to the caller (the data fsync already succeeded) but is logged by
/// the caller's next flush failing if the directory is truly broken.
pub(crate) fn sync_parent_dir(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// A heap buffer aligned for `O_DIRECT`.
struct AlignedBuffer {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuffer {
    fn new(len: usize) -> AlignedBuffer {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: len is non-zero (requests are checked to be whole blocks).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuffer { ptr, layout }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation of layout.size() bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

fn is_aligned(buf: &[u8]) -> bool {
    (buf.as_ptr() as usize).is_multiple_of(4096)
}

impl BlockDevice for FileDisk {
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
        self.check_poisoned()?;
        let offset = start * self.block_size as u64;
        let result = if self.direct && !is_aligned(buf) {
            let mut bounce = AlignedBuffer::new(buf.len());
            let result = self.file.read_exact_at(bounce.as_mut_slice(), offset);
            buf.copy_from_slice(bounce.as_mut_slice());
            result
        } else {
            self.file.read_exact_at(buf, offset)
        };
        result.map_err(|source| self.io_error(start, source))
    }

    fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<()> {
        check_request(self, start, buf.len())?;
        self.check_poisoned()?;
        if self.read_only {
            return Err(DiskError::ReadOnly {
                device: self.name.clone(),
            });
        }
        let offset = start * self.block_size as u64;
        let result = if self.direct && !is_aligned(buf) {
            let mut bounce = AlignedBuffer::new(buf.len());
            bounce.as_mut_slice().copy_from_slice(buf);
            self.file.write_all_at(bounce.as_mut_slice(), offset)
        } else {
            self.file.write_all_at(buf, offset)
        };
        result.map_err(|source| self.io_error(start, source))
    }

    fn read_blocks_vectored(&self, start: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        self.check_vectored(start, bufs.iter().map(|b| b.len()))?;
        // O_DIRECT takes one vectored read when every buffer is aligned
        // (a cache reading straight into its page-aligned frames); very
        // long lists would exceed IOV_MAX.
        if (self.direct && !bufs.iter().all(|b| is_aligned(b))) || bufs.len() > 512 {
            let mut block = start;
            for buf in bufs.iter_mut() {
                self.read_blocks(block, buf)?;
                block += (buf.len() / self.block_size) as u64;
            }
            return Ok(());
        }
        self.check_poisoned()?;
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let offset = start * self.block_size as u64;
        // SAFETY: the iovecs point into live, exclusively borrowed slices.
        let read = unsafe {
            libc::preadv(
                std::os::unix::io::AsRawFd::as_raw_fd(&self.file),
                iovecs.as_ptr(),
                iovecs.len() as i32,
                offset as libc::off_t,
            )
        };
        if read < 0 {
            return Err(self.io_error(start, io::Error::last_os_error()));
        }
        // A short read: finish the rest buffer by buffer.
        let mut done = read as usize;
        let mut position = offset;
        for buf in bufs.iter_mut() {
            let len = buf.len();
            if done >= len {
                done -= len;
            } else {
                self.file
                    .read_exact_at(&mut buf[done..], position + done as u64)
                    .map_err(|source| self.io_error(position / self.block_size as u64, source))?;
                done = 0;
            }
            position += len as u64;
        }
        Ok(())
    }

    fn write_blocks_vectored(&self, start: u64, bufs: &[&[u8]]) -> Result<()> {
        self.check_vectored(start, bufs.iter().map(|b| b.len()))?;
        if (self.direct && !bufs.iter().all(|b| is_aligned(b))) || bufs.len() > 512 {
            // O_DIRECT needs aligned buffers; very long lists exceed IOV_MAX.
            let mut block = start;
            for buf in bufs {
                self.write_blocks(block, buf)?;
                block += (buf.len() / self.block_size) as u64;
            }
            return Ok(());
        }
        self.check_poisoned()?;
        if self.read_only {
            return Err(DiskError::ReadOnly {
                device: self.name.clone(),
            });
        }
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let offset = start * self.block_size as u64;
        // SAFETY: the iovecs point into live borrowed slices for the call.
        let written = unsafe {
            libc::pwritev(
                std::os::unix::io::AsRawFd::as_raw_fd(&self.file),
                iovecs.as_ptr(),
                iovecs.len() as i32,
                offset as libc::off_t,
            )
        };
        if written < 0 {
            return Err(self.io_error(start, io::Error::last_os_error()));
        }
        // A short write: finish the rest buffer by buffer.
        let mut done = written as usize;
        let mut position = offset;
        for buf in bufs {
            if done >= buf.len() {
                done -= buf.len();
            } else {
                self.file
                    .write_all_at(&buf[done..], position + done as u64)
                    .map_err(|source| self.io_error(position / self.block_size as u64, source))?;
                done = 0;
            }
            position += buf.len() as u64;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.check_poisoned()?;
        if self.read_only {
            return Ok(());
        }
        // IMPORTANT: this fdatasync is the durability barrier of everything above.
        self.file.sync_data().map_err(|source| {
            self.poisoned.store(true, Ordering::Release);
            DiskError::Flush {
                device: self.name.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_flush_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.img");
        let disk = FileDisk::create(&path, 4096, 16).unwrap();
        disk.write_blocks(3, &[7u8; 8192]).unwrap();
        disk.flush().unwrap();
        drop(disk);
        for direct in [false, true] {
            let options = FileDiskOptions {
                direct,
                ..FileDiskOptions::default()
            };
            let disk = FileDisk::open(&path, options).unwrap();
            assert_eq!(disk.block_count(), 16);
            let mut buf = vec![0u8; 4096 * 3];
            disk.read_blocks(2, &mut buf).unwrap();
            assert!(buf[..4096].iter().all(|b| *b == 0));
            assert!(buf[4096..].iter().all(|b| *b == 7));
        }
    }

    #[test]
    fn vectored_write_lands_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FileDisk::create(&dir.path().join("v.img"), 4096, 8).unwrap();
        let (a, b, c) = (vec![1u8; 4096], vec![2u8; 8192], vec![3u8; 4096]);
        disk.write_blocks_vectored(2, &[&a, &b, &c]).unwrap();
        let mut buf = vec![0u8; 4096 * 6];
        disk.read_blocks(1, &mut buf).unwrap();
        let firsts: Vec<u8> = buf.chunks(4096).map(|block| block[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 2, 3, 0]);
        let (mut x, mut y) = (vec![0u8; 8192], vec![0u8; 4096]);
        disk.read_blocks_vectored(3, &mut [&mut x, &mut y]).unwrap();
        assert_eq!((x[0], x[4096], y[0]), (2, 2, 3));
        assert!(matches!(
            disk.write_blocks_vectored(7, &[&a, &a]),
            Err(DiskError::OutOfRange { .. })
        ));
    }

    #[test]
    fn vectored_io_under_o_direct_with_aligned_and_unaligned_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        drop(FileDisk::create(&path, 4096, 8).unwrap());
        let disk = FileDisk::open(
            &path,
            FileDiskOptions {
                direct: true,
                ..FileDiskOptions::default()
            },
        )
        .unwrap();
        // Aligned buffers go down as one preadv/pwritev; an unaligned one
        // anywhere in the list sends every buffer through a bounce buffer.
        let mut aligned: Vec<AlignedBuffer> = (0..3).map(|_| AlignedBuffer::new(4096)).collect();
        for (index, buffer) in aligned.iter_mut().enumerate() {
            buffer.as_mut_slice().fill(10 + index as u8);
        }
        let slices: Vec<&[u8]> = aligned.iter_mut().map(|b| &*b.as_mut_slice()).collect();
        disk.write_blocks_vectored(1, &slices).unwrap();
        let mut unaligned = vec![0u8; 4096 + 1];
        let (mut x, mut y) = (AlignedBuffer::new(4096), AlignedBuffer::new(8192));
        disk.read_blocks_vectored(1, &mut [x.as_mut_slice(), y.as_mut_slice()])
            .unwrap();
        assert_eq!(
            (
                x.as_mut_slice()[0],
                y.as_mut_slice()[0],
                y.as_mut_slice()[4096]
            ),
            (10, 11, 12)
        );
        disk.read_blocks_vectored(2, &mut [&mut unaligned[1..], x.as_mut_slice()])
            .unwrap();
        assert_eq!((unaligned[1], x.as_mut_slice()[0]), (11, 12));
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = FileDisk::open(&dir.path().join("nope.img"), FileDiskOptions::default());
        let message = missing.err().unwrap().to_string();
        assert!(
            message.contains("nope.img") && message.contains("cannot open"),
            "{message}"
        );

        let short = dir.path().join("short.img");
        std::fs::write(&short, vec![0u8; 5000]).unwrap();
        let message = FileDisk::open(&short, FileDiskOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("not a whole number"), "{message}");

        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let message = FileDisk::open(&empty, FileDiskOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("empty"), "{message}");

        let disk = FileDisk::create(&dir.path().join("b.img"), 4096, 2).unwrap();
        assert!(matches!(
            disk.read_blocks(1, &mut [0u8; 8192]),
            Err(DiskError::OutOfRange { .. })
        ));
        let read_only = FileDisk::open(
            &dir.path().join("b.img"),
            FileDiskOptions {
                read_only: true,
                ..FileDiskOptions::default()
            },
        )
        .unwrap();
        assert!(matches!(
            read_only.write_blocks(0, &[0u8; 4096]),
            Err(DiskError::ReadOnly { .. })
        ));
    }
}
