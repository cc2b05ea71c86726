//! The write-intent bitmap, as state without I/O.
//!
//! One bit per region of member data blocks. The rule the volume follows:
//! a region's bit is on stable storage (on every member) **before** any
//! write into the region is issued, and it is cleared only after a flush
//! that made every write into the region durable, checksums included. So
//! after a crash, every region whose data, checksums or parity may disagree
//! has its bit set, and resync repairs exactly those.
//!
//! Bits are cleared lazily (a region must stay idle for [`IDLE_FLUSHES`]
//! flushes) so a hot region, such as a journal, does not pay an extra
//! bitmap flush on every commit.

/// Flushes a region must stay unwritten before its bit is cleared.
pub const IDLE_FLUSHES: u64 = 2;

#[derive(Clone, Debug)]
pub struct IntentBitmap {
    set: Vec<bool>,
    in_flight: Vec<u32>,
    last_epoch: Vec<u64>,
}

impl IntentBitmap {
    pub fn new(regions: u64) -> IntentBitmap {
        IntentBitmap {
            set: vec![false; regions as usize],
            in_flight: vec![0; regions as usize],
            last_epoch: vec![0; regions as usize],
        }
    }

    /// The union of on-disk images (one per member).
    pub fn from_images<'a>(
        regions: u64,
        images: impl IntoIterator<Item = &'a [u8]>,
    ) -> IntentBitmap {
        let mut bitmap = IntentBitmap::new(regions);
        for image in images {
            for region in 0..regions as usize {
                if image
                    .get(region / 8)
                    .is_some_and(|byte| byte & (1 << (region % 8)) != 0)
                {
                    bitmap.set[region] = true;
                }
            }
        }
        bitmap
    }

    pub fn image(&self, bytes: usize) -> Vec<u8> {
        let mut image = vec![0u8; bytes];
        for (region, set) in self.set.iter().enumerate() {
            if *set {
                image[region / 8] |= 1 << (region % 8);
            }
        }
        image
    }

    pub fn dirty_regions(&self) -> Vec<u64> {
        (0..self.set.len() as u64)
            .filter(|r| self.set[*r as usize])
            .collect()
    }

    /// Registers a write into `regions` during `epoch`. Returns true when a
    /// bit went from clear to set, so the caller must write and flush the
    /// bitmap before issuing the write.
    pub fn begin(&mut self, regions: std::ops::RangeInclusive<u64>, epoch: u64) -> bool {
        let mut changed = false;
        for region in regions {
            let r = region as usize;
            self.in_flight[r] += 1;
            self.last_epoch[r] = epoch;
            if !self.set[r] {
                self.set[r] = true;
                changed = true;
            }
        }
        changed
    }

    /// The write into `regions` has completed (its checksums recorded).
    pub fn end(&mut self, regions: std::ops::RangeInclusive<u64>) {
        for region in regions {
            let r = region as usize;
            assert!(
                self.in_flight[r] > 0,
                "bitmap: end without begin in region {region}"
            );
            self.in_flight[r] -= 1;
        }
    }

    /// Regions that may be cleared once the flush of `epoch` completes:
    /// set, no write in flight, and idle long enough. Taken *before* the
    /// flush starts.
    pub fn clear_candidates(&self, epoch: u64) -> Vec<u64> {
        (0..self.set.len())
            .filter(|&r| {
                self.set[r] && self.in_flight[r] == 0 && self.last_epoch[r] + IDLE_FLUSHES <= epoch
            })
            .map(|r| r as u64)
            .collect()
    }

    /// Clears the candidates that saw no write since they were chosen.
    /// Returns true if any bit changed.
    pub fn clear(&mut self, candidates: &[u64], epoch: u64) -> bool {
        let mut changed = false;
        for &region in candidates {
            let r = region as usize;
            if self.set[r] && self.in_flight[r] == 0 && self.last_epoch[r] + IDLE_FLUSHES <= epoch {
                self.set[r] = false;
                changed = true;
            }
        }
        changed
    }

    /// Clears every bit (after a resync or at clean close).
    pub fn clear_all(&mut self) {
        self.set.iter_mut().for_each(|bit| *bit = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_needs_persist_and_hot_regions_stay_set() {
        let mut bitmap = IntentBitmap::new(10);
        assert!(bitmap.begin(3..=4, 0));
        assert!(!bitmap.begin(3..=3, 0), "already set");
        bitmap.end(3..=4);
        bitmap.end(3..=3);
        // region 3 written again in epoch 5: not a candidate at 6
        assert!(!bitmap.begin(3..=3, 5));
        bitmap.end(3..=3);
        let candidates = bitmap.clear_candidates(6);
        assert_eq!(candidates, vec![4]);
        assert!(bitmap.clear(&candidates, 6));
        assert_eq!(bitmap.dirty_regions(), vec![3]);
    }

    #[test]
    fn in_flight_regions_are_never_cleared() {
        let mut bitmap = IntentBitmap::new(2);
        bitmap.begin(0..=0, 0);
        assert!(bitmap.clear_candidates(100).is_empty());
        let candidates = vec![0];
        assert!(!bitmap.clear(&candidates, 100));
    }

    #[test]
    fn images_union() {
        let mut a = IntentBitmap::new(12);
        a.begin(1..=1, 0);
        let mut b = IntentBitmap::new(12);
        b.begin(9..=9, 0);
        let (ia, ib) = (a.image(4096), b.image(4096));
        let union = IntentBitmap::from_images(12, [&ia[..], &ib[..]]);
        assert_eq!(union.dirty_regions(), vec![1, 9]);
    }
}
