//! Reads (verified, with repair) and writes (RAID-1 mirrors, RAID-5
//! reconstruct-writes and full-stripe writes), the write-intent rule, flush.

use super::*;

/// The lock indices of `units`, ascending and without repeats. The only
/// paths that hold several unit locks at once (`read_stripes`,
/// `write_full_stripes`) take them in this order, so they cannot deadlock
/// with each other; every other path holds one lock at a time.
fn lock_order(units: impl Iterator<Item = u64>) -> Vec<usize> {
    let mut indices: Vec<usize> = units
        .map(|unit| (unit % LOCK_STRIPES as u64) as usize)
        .collect();
    indices.sort_unstable();
    indices.dedup();
    indices
}

impl Inner {
    // ---------------------------------------------------------------- reads

    pub(super) fn read(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        let count = self.check_range(start, buf.len())?;
        self.check_failed()?;
        if self.geometry.level == Level::Raid5 && count >= 2 * self.geometry.unit_blocks() {
            return self.read_stripes(start, count, buf);
        }
        for (unit, pieces) in self.pieces(start, count) {
            let _guard = self.lock(unit).read().unwrap_or_else(|e| e.into_inner());
            for piece in pieces {
                let out = &mut buf[piece.buf_offset..piece.buf_offset + bytes(piece.blocks)];
                let role = match self.geometry.level {
                    Level::Raid5 => self.geometry.data_role(unit, piece.chunk),
                    // Mirrors take turns by 64 MiB stretch: a sequential
                    // stream stays on one disk (its readahead keeps working)
                    // while reads spread over the address space spread over
                    // the mirrors.
                    Level::Raid1 => (unit / 64) as usize % self.geometry.roles,
                    Level::Single => 0,
                };
                self.read_role(role, piece.member_block, out)?;
            }
        }
        Ok(())
    }

    /// RAID-5 large reads. Each member reads its data chunks of many
    /// stripes straight into the caller's buffer, one vectored read per run
    /// of consecutive chunks (parity rows are skipped, not read), all members
    /// in parallel; then every block is verified. Anything that fails
    /// verification, and every chunk of a missing member, goes through
    /// [`Inner::read_role`], which reconstructs and repairs.
    pub(super) fn read_stripes(&self, start: u64, count: u64, buf: &mut [u8]) -> Result<()> {
        const STRIPES_PER_BATCH: usize = 64;
        let units = self.pieces(start, count);
        for group in units.chunks(STRIPES_PER_BATCH) {
            let _guards: Vec<_> = lock_order(group.iter().map(|(unit, _)| *unit))
                .into_iter()
                .map(|i| self.locks[i].read().unwrap_or_else(|e| e.into_inner()))
                .collect();
            // Cut the group's part of the buffer into one slice per piece and
            // hand each to the role that holds it.
            let group_start = group[0].1[0].buf_offset;
            let mut rest: &mut [u8] = &mut buf[group_start..];
            let mut per_role: Vec<Vec<(u64, &mut [u8])>> =
                (0..self.geometry.roles).map(|_| Vec::new()).collect();
            for (unit, pieces) in group {
                for piece in pieces {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(bytes(piece.blocks));
                    rest = tail;
                    per_role[self.geometry.data_role(*unit, piece.chunk)]
                        .push((piece.member_block, head));
                }
            }
            let results: Vec<Result<()>> = std::thread::scope(|scope| {
                let handles: Vec<_> = per_role
                    .into_iter()
                    .enumerate()
                    .filter(|(_, pieces)| !pieces.is_empty())
                    .map(|(role, pieces)| scope.spawn(move || self.read_role_pieces(role, pieces)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(RaidError::Invalid("a read thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for result in results {
                result?;
            }
        }
        Ok(())
    }

    /// Reads pieces of one role (ascending member blocks) with one vectored
    /// read per contiguous run, then verifies, falling back to
    /// [`Inner::read_role`] for what fails.
    pub(super) fn read_role_pieces(
        &self,
        role: usize,
        mut pieces: Vec<(u64, &mut [u8])>,
    ) -> Result<()> {
        let end = pieces
            .last()
            .map(|(block, data)| block + (data.len() / BLOCK_SIZE) as u64)
            .unwrap_or(0);
        let reader = self
            .role_members(role)
            .into_iter()
            .find(|(_, _, valid)| *valid >= end);
        let Some((slot, member, _)) = reader else {
            for (block, data) in pieces.iter_mut() {
                self.read_role(role, *block, data)?;
            }
            return Ok(());
        };
        let mut index = 0;
        while index < pieces.len() {
            let mut run_end = index + 1;
            let mut next_block = pieces[index].0 + (pieces[index].1.len() / BLOCK_SIZE) as u64;
            while run_end < pieces.len() && pieces[run_end].0 == next_block {
                next_block += (pieces[run_end].1.len() / BLOCK_SIZE) as u64;
                run_end += 1;
            }
            let first_block = pieces[index].0;
            let read = {
                let mut slices: Vec<&mut [u8]> = pieces[index..run_end]
                    .iter_mut()
                    .map(|(_, d)| &mut **d)
                    .collect();
                member.read_raw_vectored(first_block, &mut slices)
            };
            match read {
                Ok(()) => {
                    for (block, data) in pieces[index..run_end].iter_mut() {
                        for i in 0..(data.len() / BLOCK_SIZE) as u64 {
                            let one = &mut data[bytes(i)..bytes(i + 1)];
                            if !member.verify(*block + i, one) {
                                self.read_role(role, *block + i, one)?;
                            }
                        }
                    }
                }
                Err(e) => {
                    if e.is_device_fatal() {
                        self.fail_slot(slot, e.to_string());
                    }
                    for (block, data) in pieces[index..run_end].iter_mut() {
                        self.read_role(role, *block, data)?;
                    }
                }
            }
            index = run_end;
        }
        Ok(())
    }

    /// Reads member blocks of `role` (RAID-1: of any mirror, starting with
    /// `role`), verifies each against its checksum and repairs what fails.
    pub(super) fn read_role(&self, role: usize, member_block: u64, out: &mut [u8]) -> Result<()> {
        let count = (out.len() / BLOCK_SIZE) as u64;
        let mut candidates = self.role_members(role);
        if self.geometry.level == Level::Raid1 {
            for other in (0..self.geometry.roles).filter(|r| *r != role) {
                candidates.extend(self.role_members(other));
            }
        }
        let reader = candidates
            .iter()
            .find(|(_, _, valid)| *valid >= member_block + count)
            .cloned();
        let mut bad: Vec<u64> = Vec::new();
        match &reader {
            None => bad.extend(0..count),
            Some((slot, member, _)) => match member.read_raw(member_block, out) {
                Ok(()) => {
                    for i in 0..count {
                        if !member.verify(member_block + i, &out[bytes(i)..bytes(i + 1)]) {
                            bad.push(i);
                        }
                    }
                }
                Err(e) if e.is_device_fatal() => {
                    self.fail_slot(*slot, e.to_string());
                    bad.extend(0..count);
                }
                Err(_) => {
                    // Find which blocks are unreadable, one by one.
                    for i in 0..count {
                        let one = &mut out[bytes(i)..bytes(i + 1)];
                        match member.read_raw(member_block + i, one) {
                            Ok(()) if member.verify(member_block + i, one) => {}
                            _ => bad.push(i),
                        }
                    }
                }
            },
        }
        for i in bad {
            let block = member_block + i;
            let (bad_slot, bad_member) = match &reader {
                Some((slot, member, _)) => (Some(*slot), Some(member.clone())),
                None => (None, None),
            };
            let raw = out[bytes(i)..bytes(i + 1)].to_vec();
            let data =
                self.recover_block(role, block, bad_member.as_deref().map(|m| (m, &raw[..])))?;
            out[bytes(i)..bytes(i + 1)].copy_from_slice(&data);
            if let (Some(slot), Some(member)) = (bad_slot, bad_member) {
                self.repair(slot, &member, block, &data);
            }
        }
        Ok(())
    }

    /// One verified block of `role`, without any repair, if some member has it.
    pub(super) fn read_verified_block(&self, role: usize, block: u64) -> Option<Vec<u8>> {
        for (_, member, valid) in self.role_members(role) {
            if valid <= block {
                continue;
            }
            let mut data = vec![0u8; BLOCK_SIZE];
            if member.read_raw(block, &mut data).is_ok() && member.verify(block, &data) {
                return Some(data);
            }
        }
        None
    }

    /// Recomputes block `block` of `role` from redundancy. `bad` is the
    /// member copy that failed (with what it returned), used to check the
    /// result against the checksum that member expects.
    pub(super) fn recover_block(
        &self,
        role: usize,
        block: u64,
        bad: Option<(&Member, &[u8])>,
    ) -> Result<Vec<u8>> {
        let unrepairable = |reason: &str| {
            let disk = bad
                .map(|(m, _)| m.path.clone())
                .unwrap_or_else(|| format!("member {role} (missing)"));
            RaidError::Unrepairable {
                logical_block: self.logical_of(role, block).unwrap_or(u64::MAX),
                disk,
                member_block: block,
                reason: reason.to_string(),
            }
        };
        let data = match self.geometry.level {
            Level::Single => {
                return Err(unrepairable(
                    "checksum mismatch or read error, and a single disk has no redundancy",
                ))
            }
            Level::Raid1 => (0..self.geometry.roles)
                .filter(|r| *r != role)
                .find_map(|r| self.read_verified_block(r, block))
                .ok_or_else(|| unrepairable("no mirror holds a copy that passes its checksum"))?,
            Level::Raid5 => {
                let mut sum = vec![0u8; BLOCK_SIZE];
                for other in (0..self.geometry.roles).filter(|r| *r != role) {
                    let data = self.read_verified_block(other, block).ok_or_else(|| {
                        unrepairable("another block of the same stripe is also lost")
                    })?;
                    xor_into(&mut sum, &data);
                }
                sum
            }
        };
        if let Some((member, raw)) = bad {
            // The reconstruction must match what the failed copy's checksum
            // says, or equal the copy itself (then the checksum entry was the
            // damaged part). Anything else is an inconsistent stripe.
            let matches_checksum = crc32c::crc32c(&data) == member.expected_crc(block);
            if !matches_checksum && data != raw {
                return Err(unrepairable(
                    "reconstruction does not match the block's checksum",
                ));
            }
        }
        Ok(data)
    }

    pub(super) fn logical_of(&self, role: usize, member_block: u64) -> Option<u64> {
        match self.geometry.level {
            Level::Raid5 => {
                let stripe = member_block / self.geometry.chunk_blocks;
                let chunk = (0..self.geometry.data_chunks())
                    .find(|c| self.geometry.data_role(stripe, *c) == role)?;
                Some(
                    stripe * self.geometry.unit_blocks()
                        + chunk as u64 * self.geometry.chunk_blocks
                        + member_block % self.geometry.chunk_blocks,
                )
            }
            _ => Some(member_block),
        }
    }

    /// Rewrites a block that failed verification with recovered data.
    pub(super) fn repair(&self, slot: usize, member: &Member, block: u64, data: &[u8]) {
        let result = self.with_intent(block, 1, || {
            member.write(block, data).map_err(RaidError::from)
        });
        match result {
            Ok(()) => {
                self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(disk = %member.path, member_block = block, "repaired block from redundancy");
            }
            Err(e) => self.fail_slot(slot, format!("repair write failed: {e}")),
        }
    }

    // --------------------------------------------------------------- writes

    pub(super) fn write(&self, start: u64, buf: &[u8]) -> Result<()> {
        let count = self.check_range(start, buf.len())?;
        self.check_failed()?;
        if self.geometry.level == Level::Raid5 {
            // Whole stripes in the middle go out as large full-stripe writes;
            // the partial stripes at either end take the read-modify-write path.
            let unit = self.geometry.unit_blocks();
            let first_full = start.div_ceil(unit) * unit;
            let end_full = (start + count) / unit * unit;
            if end_full >= first_full + 2 * unit {
                let offset = |block: u64| bytes(block - start);
                if first_full > start {
                    self.write(start, &buf[..offset(first_full)])?;
                }
                self.write_full_stripes(
                    first_full / unit,
                    end_full / unit,
                    &buf[offset(first_full)..offset(end_full)],
                )?;
                if start + count > end_full {
                    self.write(end_full, &buf[offset(end_full)..])?;
                }
                return Ok(());
            }
        }
        for (unit, pieces) in self.pieces(start, count) {
            let _guard = self.lock(unit).write().unwrap_or_else(|e| e.into_inner());
            match self.geometry.level {
                Level::Raid5 => self.write_stripe(unit, &pieces, buf)?,
                _ => {
                    for piece in &pieces {
                        let data = &buf[piece.buf_offset..piece.buf_offset + bytes(piece.blocks)];
                        self.with_intent(piece.member_block, piece.blocks, || {
                            for role in 0..self.geometry.roles {
                                self.write_role(role, piece.member_block, data);
                            }
                            Ok(())
                        })?;
                    }
                }
            }
            self.check_failed()?;
        }
        Ok(())
    }

    /// RAID-5 full-stripe writes of stripes `[first, end)` (`buf` holds their
    /// data): parity from the new data alone, no reads, and one large write
    /// per member, issued in parallel.
    pub(super) fn write_full_stripes(&self, first: u64, end: u64, buf: &[u8]) -> Result<()> {
        const STRIPES_PER_BATCH: u64 = 64;
        let chunk = self.geometry.chunk_blocks;
        let per_stripe = bytes(self.geometry.unit_blocks());
        let mut stripe = first;
        while stripe < end {
            let batch_end = (stripe + STRIPES_PER_BATCH).min(end);
            let _guards: Vec<_> = lock_order(stripe..batch_end)
                .into_iter()
                .map(|i| self.locks[i].write().unwrap_or_else(|e| e.into_inner()))
                .collect();
            let first_row = stripe * chunk;
            let rows = (batch_end - stripe) * chunk;
            let stripes = (batch_end - stripe) as usize;
            // Parity for each stripe of the batch, back to back.
            let mut parity = self.take_buffer(bytes(rows));
            // Per role, the list of chunk buffers to write, in row order:
            // data straight from the caller's buffer, parity from `parity`.
            let mut gather: Vec<Vec<(usize, bool)>> =
                vec![Vec::with_capacity(stripes); self.geometry.roles];
            for s in stripe..batch_end {
                let index = (s - stripe) as usize;
                let data_at = (s - first) as usize * per_stripe;
                let parity_at = bytes(index as u64 * chunk);
                let target = &mut parity[parity_at..parity_at + bytes(chunk)];
                for k in 0..self.geometry.data_chunks() {
                    let at = data_at + bytes(k as u64 * chunk);
                    let piece = &buf[at..at + bytes(chunk)];
                    if k == 0 {
                        target.copy_from_slice(piece);
                    } else {
                        xor_into(target, piece);
                    }
                    gather[self.geometry.data_role(s, k)].push((at, false));
                }
                gather[self.geometry.parity_role(s)].push((parity_at, true));
            }
            let parity_ref = &parity;
            self.with_intent(first_row, rows, || {
                std::thread::scope(|scope| {
                    for (role, pieces) in gather.iter().enumerate() {
                        scope.spawn(move || {
                            let slices: Vec<&[u8]> = pieces
                                .iter()
                                .map(|&(at, is_parity)| {
                                    let source: &[u8] = if is_parity { parity_ref } else { buf };
                                    &source[at..at + bytes(chunk)]
                                })
                                .collect();
                            for (slot, member, _) in self.role_members(role) {
                                if let Err(e) = member.write_vectored(first_row, &slices) {
                                    self.fail_slot(slot, format!("write failed: {e}"));
                                }
                            }
                        });
                    }
                });
                Ok(())
            })?;
            self.give_buffers([parity]);
            self.check_failed()?;
            stripe = batch_end;
        }
        Ok(())
    }

    /// RAID-5: writes the pieces of one stripe and its new parity. Parity is
    /// recomputed from the full data of the touched rows (reconstruct-write),
    /// so it never depends on old parity being right.
    pub(super) fn write_stripe(&self, stripe: u64, pieces: &[Piece], buf: &[u8]) -> Result<()> {
        let chunk = self.geometry.chunk_blocks;
        let base = stripe * chunk;
        let low = pieces
            .iter()
            .map(|p| p.member_block - base)
            .min()
            .expect("a piece");
        let high = pieces
            .iter()
            .map(|p| p.member_block - base + p.blocks)
            .max()
            .expect("a piece");
        let rows = high - low;
        let mut data: Vec<Vec<u8>> = Vec::with_capacity(self.geometry.data_chunks());
        for k in 0..self.geometry.data_chunks() {
            let mine: Vec<&Piece> = pieces.iter().filter(|p| p.chunk == k).collect();
            let covered: u64 = mine.iter().map(|p| p.blocks).sum();
            let mut rows_data = vec![0u8; bytes(rows)];
            if covered < rows {
                let role = self.geometry.data_role(stripe, k);
                self.read_role(role, base + low, &mut rows_data)?;
            }
            for piece in mine {
                let at = bytes(piece.member_block - base - low);
                rows_data[at..at + bytes(piece.blocks)].copy_from_slice(
                    &buf[piece.buf_offset..piece.buf_offset + bytes(piece.blocks)],
                );
            }
            data.push(rows_data);
        }
        let mut parity = data[0].clone();
        for other in &data[1..] {
            xor_into(&mut parity, other);
        }
        self.with_intent(base + low, rows, || {
            for piece in pieces {
                let role = self.geometry.data_role(stripe, piece.chunk);
                let at = bytes(piece.member_block - base - low);
                self.write_role(
                    role,
                    piece.member_block,
                    &data[piece.chunk][at..at + bytes(piece.blocks)],
                );
            }
            self.write_role(self.geometry.parity_role(stripe), base + low, &parity);
            Ok(())
        })
    }

    /// Writes member blocks of `role` to every disk serving it; a disk that
    /// fails the write is failed (and the volume marked failed if that costs
    /// the last redundancy).
    pub(super) fn write_role(&self, role: usize, member_block: u64, data: &[u8]) {
        for (slot, member, _) in self.role_members(role) {
            if let Err(e) = member.write(member_block, data) {
                self.fail_slot(slot, format!("write failed: {e}"));
            }
        }
    }

    /// Runs `write` with the regions of member blocks
    /// `[member_block, member_block + count)` marked in the write-intent
    /// bitmap, which is durable on every member before `write` starts.
    pub(super) fn with_intent(
        &self,
        member_block: u64,
        count: u64,
        write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let region = self.member_geometry.region_blocks;
        let regions = member_block / region..=(member_block + count - 1) / region;
        {
            let mut bitmap = self.bitmap();
            if bitmap.begin(regions.clone(), self.epoch.load(Ordering::Acquire)) {
                let image = bitmap.image(bytes(self.member_geometry.bitmap_blocks));
                // The bitmap goes to stable storage before the data write it
                // announces: this ordering is what makes resync sufficient.
                if let Err(e) = self.persist_bitmap(&image, true) {
                    bitmap.end(regions);
                    return Err(e);
                }
            }
        }
        let result = write();
        self.bitmap().end(regions);
        result
    }

    pub(super) fn persist_bitmap(&self, image: &[u8], flush: bool) -> Result<()> {
        let targets: Vec<(usize, Arc<Member>)> = {
            let config = self.config_read();
            config
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != SlotState::Failed)
                .filter_map(|(i, s)| s.member.clone().map(|m| (i, m)))
                .collect()
        };
        for (slot, member) in targets {
            let result = member.write_bitmap(image).and_then(|_| {
                if flush {
                    member.device.flush()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                self.fail_slot(slot, format!("bitmap write failed: {e}"));
            }
        }
        self.check_failed()
    }

    pub(super) fn flush(&self) -> Result<()> {
        self.check_failed()?;
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        let candidates = self.bitmap().clear_candidates(epoch);
        let targets: Vec<(usize, Arc<Member>)> = {
            let config = self.config_read();
            config
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != SlotState::Failed)
                .filter_map(|(i, s)| s.member.clone().map(|m| (i, m)))
                .collect()
        };
        // Members flush in parallel: each fdatasync waits on its own disk.
        let results: Vec<(usize, keel_disk::Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(slot, member)| (*slot, scope.spawn(move || member.flush())))
                .collect();
            handles
                .into_iter()
                .map(|(slot, handle)| {
                    let result = handle.join().unwrap_or_else(|_| {
                        Err(DiskError::DeviceFailed {
                            device: format!("slot {slot} (flush thread panicked)"),
                        })
                    });
                    (slot, result)
                })
                .collect()
        });
        for (slot, result) in results {
            if let Err(e) = result {
                self.fail_slot(slot, format!("flush failed: {e}"));
            }
        }
        self.check_failed()?;
        if !candidates.is_empty() {
            let mut bitmap = self.bitmap();
            if bitmap.clear(&candidates, epoch) {
                let image = bitmap.image(bytes(self.member_geometry.bitmap_blocks));
                // Clearing need not be durable now: a bit left set only costs
                // a resync of a region that is already consistent.
                self.persist_bitmap(&image, false)?;
            }
        }
        Ok(())
    }
}
