//! Read-ahead extents: a read-ahead window's bytes in one contiguous,
//! page-aligned allocation, between the device read and the blocks' first
//! use.
//!
//! A read-ahead worker reads a window with one device read straight into an
//! extent, and the extent's block-sized slots become the bytes of the
//! window's frames: the worker copies nothing. At a block's first use the
//! reader moves it into the frame's own buffer (`Cache::own_bytes`; the
//! reader is about to copy the block out anyway, so it copies it in on the
//! same core, and the copy out then reads it from that core's cache). When
//! the last slot of an extent is released the extent goes back to the
//! cache's pool and takes the next window. Extents are therefore a transit
//! area of a few windows (those read ahead and not yet used), reused while
//! they are still warm in the CPU caches, rather than a second home for
//! blocks.
//!
//! Each slot is handed out once ([`Extent::split`]), as the [`FrameBytes`]
//! of one frame, and reached only through that frame's lock. A slot not
//! moved at its first use (its lock was busy) moves at a later use or when
//! the block is written; a block read ahead and never used keeps its slot
//! until it is evicted, which every policy does before evicting blocks it
//! keeps.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Alignment of extents: `O_DIRECT` reads need page-aligned buffers.
pub(crate) const EXTENT_ALIGN: usize = 4096;

/// One contiguous, zero-initialized, page-aligned buffer.
pub(crate) struct Extent {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Bytes of extents alive in the cache that made this one.
    live_bytes: Arc<AtomicUsize>,
}

// SAFETY: an `Extent` owns its allocation like a `Box<[u8]>` does. Shared
// (`&Extent`) access to its bytes happens only through slots, which are
// disjoint and each behind its frame's lock (see `FrameBytes`).
unsafe impl Send for Extent {}
unsafe impl Sync for Extent {}

impl Extent {
    /// A zeroed extent of `len` bytes (`len > 0`), counted in `live_bytes`
    /// until it is dropped.
    pub(crate) fn new(len: usize, live_bytes: &Arc<AtomicUsize>) -> Extent {
        let layout = Layout::from_size_align(len.max(1), EXTENT_ALIGN).expect(
            "an extent holds at most a sixteenth of the capacity's bytes, far below isize::MAX",
        );
        // SAFETY: the layout's size is not zero.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        live_bytes.fetch_add(layout.size(), Ordering::Relaxed);
        Extent {
            ptr,
            layout,
            live_bytes: live_bytes.clone(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// The whole extent, to read into before it is split.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `&mut self` proves nobody else reaches the bytes (slots
        // exist only after `split` consumed the extent, and an extent comes
        // back from slots only through `Arc::into_inner`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// Cuts the extent into `len / block_size` slots, in order. Each slot is
    /// produced exactly once, so no two `FrameBytes` overlap.
    pub(crate) fn split(self, block_size: usize) -> impl Iterator<Item = FrameBytes> {
        let count = self.len() / block_size;
        let shared = Arc::new(self);
        (0..count).map(move |index| FrameBytes::Slot {
            extent: shared.clone(),
            offset: index * block_size,
            len: block_size,
            spare: Box::default(),
        })
    }
}

impl Drop for Extent {
    fn drop(&mut self) {
        self.live_bytes
            .fetch_sub(self.layout.size(), Ordering::Relaxed);
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A cached block's bytes: a buffer of its own, or its slot in an extent.
pub(crate) enum FrameBytes {
    Own(Box<[u8]>),
    Slot {
        extent: Arc<Extent>,
        offset: usize,
        len: usize,
        /// The frame's own buffer, if it had one, kept for when the block
        /// moves out of the extent (empty if it had none).
        spare: Box<[u8]>,
    },
}

/// What releasing a frame's bytes gives back for reuse.
pub(crate) struct Released {
    /// The frame's own buffer (or its spare), if it had one.
    pub(crate) buffer: Option<Box<[u8]>>,
    /// The extent, whole again, if this was its last slot.
    pub(crate) extent: Option<Extent>,
}

impl FrameBytes {
    /// No bytes (a frame whose bytes are still to come).
    pub(crate) fn empty() -> FrameBytes {
        FrameBytes::Own(Box::default())
    }

    pub(crate) fn in_extent(&self) -> bool {
        matches!(self, FrameBytes::Slot { .. })
    }

    /// A slot that keeps `spare` for later (see `FrameBytes::Slot`).
    pub(crate) fn with_spare(self, buffer: Box<[u8]>) -> FrameBytes {
        match self {
            FrameBytes::Slot {
                extent,
                offset,
                len,
                ..
            } => FrameBytes::Slot {
                extent,
                offset,
                len,
                spare: buffer,
            },
            own => own,
        }
    }

    /// Gives the bytes up: the frame's buffer (its own, or the spare kept
    /// beside a slot), and the whole extent when this was its last slot.
    pub(crate) fn release(self) -> Released {
        let nonempty = |buffer: Box<[u8]>| (!buffer.is_empty()).then_some(buffer);
        match self {
            FrameBytes::Own(buffer) => Released {
                buffer: nonempty(buffer),
                extent: None,
            },
            FrameBytes::Slot { extent, spare, .. } => Released {
                buffer: nonempty(spare),
                extent: Arc::into_inner(extent),
            },
        }
    }
}

impl std::ops::Deref for FrameBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FrameBytes::Own(buffer) => buffer,
            FrameBytes::Slot {
                extent,
                offset,
                len,
                ..
            } => {
                // SAFETY: the slot lies inside the extent (`split`), no other
                // `FrameBytes` overlaps it, and the extent outlives it (the
                // `Arc`). Whoever holds `&self` holds the frame's lock, so
                // nobody writes the slot meanwhile.
                unsafe { std::slice::from_raw_parts(extent.ptr.as_ptr().add(*offset), *len) }
            }
        }
    }
}

impl std::ops::DerefMut for FrameBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            FrameBytes::Own(buffer) => buffer,
            FrameBytes::Slot {
                extent,
                offset,
                len,
                ..
            } => {
                // SAFETY: as in `deref`; `&mut self` (the frame's exclusive
                // lock) means nobody else reads or writes this slot, and no
                // other slot overlaps it.
                unsafe { std::slice::from_raw_parts_mut(extent.ptr.as_ptr().add(*offset), *len) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_views_and_the_last_release_returns_the_extent() {
        let live = Arc::new(AtomicUsize::new(0));
        let mut extent = Extent::new(4 * 512, &live);
        assert_eq!(live.load(Ordering::Relaxed), 2048);
        assert_eq!(extent.as_mut_slice().as_ptr() as usize % EXTENT_ALIGN, 0);
        for (index, chunk) in extent.as_mut_slice().chunks_mut(512).enumerate() {
            chunk.fill(index as u8 + 1);
        }
        let mut slots: Vec<FrameBytes> = extent.split(512).collect();
        assert_eq!(slots.len(), 4);
        for (index, slot) in slots.iter().enumerate() {
            assert!(slot.in_extent());
            assert_eq!(slot.len(), 512);
            assert!(slot.iter().all(|&byte| byte == index as u8 + 1));
        }
        // Writing one slot leaves its neighbours alone.
        slots[1].fill(0xee);
        assert!(slots[0].iter().all(|&byte| byte == 1));
        assert!(slots[2].iter().all(|&byte| byte == 3));
        // Releasing all but the last gives nothing back; the last gives the
        // whole extent, with what the slots held.
        let last = slots
            .pop()
            .unwrap()
            .with_spare(vec![7; 512].into_boxed_slice());
        assert!(
            last.iter().all(|&byte| byte == 4),
            "the spare is not the bytes"
        );
        for slot in slots {
            let released = slot.release();
            assert!(released.buffer.is_none() && released.extent.is_none());
        }
        let released = last.release();
        assert_eq!(released.buffer.as_deref(), Some(&[7u8; 512][..]));
        let Some(mut whole) = released.extent else {
            panic!("the last slot's release must return the extent");
        };
        assert_eq!(&whole.as_mut_slice()[512..1024], &[0xee; 512][..]);
        drop(whole);
        assert_eq!(live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn own_buffers_come_back_and_empty_ones_do_not() {
        let released = FrameBytes::Own(vec![0; 8].into_boxed_slice()).release();
        assert_eq!(released.buffer.map(|buffer| buffer.len()), Some(8));
        assert!(released.extent.is_none());
        let released = FrameBytes::empty().release();
        assert!(released.buffer.is_none() && released.extent.is_none());
    }
}
