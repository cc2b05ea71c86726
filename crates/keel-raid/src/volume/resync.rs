//! Resync of the regions the write-intent bitmap marks, and scrub.

use super::*;

impl Inner {
    // ---------------------------------------------------- resync and scrub

    /// Makes every region marked in the write-intent bitmap consistent:
    /// checksums match data, mirrors agree, parity matches data.
    pub(super) fn resync(&self, force: bool) -> Result<()> {
        let dirty = self.bitmap().dirty_regions();
        if dirty.is_empty() {
            return Ok(());
        }
        let degraded = {
            let config = self.config_read();
            (0..self.geometry.roles as u16).any(|role| {
                !config
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Active { role } && s.member.is_some())
            })
        };
        if degraded && self.geometry.level == Level::Raid5 && !force {
            return Err(RaidError::Assembly(format!(
                "{}: the volume was not shut down cleanly while degraded; {} region(s) may hold stripes \
                 that no longer reconstruct (the RAID-5 write hole). Reassemble with --force to accept \
                 them, or restore the missing disk first",
                self.name,
                dirty.len()
            )));
        }
        tracing::info!(
            regions = dirty.len(),
            "resyncing regions written at the last crash"
        );
        let region = self.member_geometry.region_blocks;
        // Resync repairs the active members only; a disk being rebuilt must
        // not keep rows that resync may change, so its rebuild restarts from
        // the first dirty region below its mark.
        {
            let first_dirty = dirty[0] * region;
            let mut config = self.config_write();
            let mut moved = false;
            for slot in config.slots.iter_mut() {
                if let SlotState::Rebuilding { next_block, .. } = &mut slot.state {
                    if *next_block > first_dirty {
                        *next_block = first_dirty;
                        moved = true;
                    }
                }
            }
            if moved {
                self.persist_config(&mut config)?;
            }
        }
        for r in &dirty {
            let first = r * region;
            let end = ((r + 1) * region).min(self.member_geometry.data_blocks);
            let mut block = first;
            while block < end {
                let unit = block / self.geometry.unit_member_blocks();
                let unit_end = ((unit + 1) * self.geometry.unit_member_blocks()).min(end);
                self.resync_rows(block, unit_end - block)?;
                block = unit_end;
            }
        }
        for member in self.live_members() {
            member.flush()?;
        }
        let image = {
            let mut bitmap = self.bitmap();
            bitmap.clear_all();
            bitmap.image(bytes(self.member_geometry.bitmap_blocks))
        };
        self.persist_bitmap(&image, true)
    }

    /// Resync of member rows `[first, first + count)` of one lock unit.
    pub(super) fn resync_rows(&self, first: u64, count: u64) -> Result<()> {
        let readers: Vec<Vec<(usize, Arc<Member>)>> = (0..self.geometry.roles)
            .map(|role| {
                self.role_members(role)
                    .into_iter()
                    .filter(|(_, _, valid)| *valid == u64::MAX)
                    .map(|(slot, member, _)| (slot, member))
                    .collect()
            })
            .collect();
        let mut rows: Vec<Option<Vec<u8>>> = Vec::new();
        for role_readers in &readers {
            let Some((slot, member)) = role_readers.first() else {
                rows.push(None);
                continue;
            };
            let mut data = vec![0u8; bytes(count)];
            match member.read_raw(first, &mut data) {
                Ok(()) => rows.push(Some(data)),
                Err(e) => {
                    self.fail_slot(*slot, format!("read failed during resync: {e}"));
                    rows.push(None);
                }
            }
        }
        match self.geometry.level {
            Level::Single => {
                if let (Some(data), Some((_, member))) = (&rows[0], readers[0].first()) {
                    member.set_crcs(first, data);
                }
            }
            Level::Raid1 => {
                // Per block: a copy that matches its own checksum wins;
                // otherwise the first mirror's copy. Then all mirrors agree.
                for i in 0..count {
                    let span = bytes(i)..bytes(i + 1);
                    let mut chosen: Option<Vec<u8>> = None;
                    for (role, row) in rows.iter().enumerate() {
                        if let (Some(row), Some((_, member))) = (row, readers[role].first()) {
                            if member.verify(first + i, &row[span.clone()]) {
                                chosen = Some(row[span.clone()].to_vec());
                                break;
                            }
                        }
                    }
                    let chosen = match chosen {
                        Some(c) => c,
                        None => match rows.iter().flatten().next() {
                            Some(row) => row[span.clone()].to_vec(),
                            None => continue,
                        },
                    };
                    for (role, row) in rows.iter().enumerate() {
                        let Some((slot, member)) = readers[role].first() else {
                            continue;
                        };
                        let same = row.as_ref().is_some_and(|r| r[span.clone()] == chosen[..]);
                        if same {
                            member.set_crcs(first + i, &chosen);
                        } else if let Err(e) = member.write(first + i, &chosen) {
                            self.fail_slot(*slot, format!("resync write failed: {e}"));
                        }
                    }
                }
            }
            Level::Raid5 => {
                let stripe = first / self.geometry.chunk_blocks;
                let parity_role = self.geometry.parity_role(stripe);
                let mut parity = vec![0u8; bytes(count)];
                let mut complete = true;
                for role in (0..self.geometry.roles).filter(|r| *r != parity_role) {
                    match (&rows[role], readers[role].first()) {
                        (Some(data), Some((_, member))) => {
                            member.set_crcs(first, data);
                            xor_into(&mut parity, data);
                        }
                        _ => complete = false,
                    }
                }
                if complete {
                    if let Some((slot, member)) = readers[parity_role].first() {
                        if rows[parity_role].as_deref() != Some(&parity[..]) {
                            if let Err(e) = member.write(first, &parity) {
                                self.fail_slot(*slot, format!("resync write failed: {e}"));
                            }
                        } else {
                            member.set_crcs(first, &parity);
                        }
                    }
                } else if let (Some(data), Some((_, member))) =
                    (&rows[parity_role], readers[parity_role].first())
                {
                    // Degraded (forced): parity is all there is for the lost
                    // member's data; keep it and vouch for it as it stands.
                    member.set_crcs(first, data);
                }
            }
        }
        Ok(())
    }

    pub(super) fn scrub(&self, mut progress: impl FnMut(u64, u64)) -> Result<ScrubReport> {
        self.check_failed()?;
        let mut report = ScrubReport::default();
        let total = self.member_geometry.data_blocks;
        let unit_blocks = self.geometry.unit_member_blocks();
        let mut block = 0;
        while block < total {
            let unit = block / unit_blocks;
            let count = (unit_blocks).min(total - block);
            {
                let _guard = self.lock(unit).write().unwrap_or_else(|e| e.into_inner());
                self.scrub_rows(unit, block, count, &mut report);
            }
            block += count;
            progress(block, total);
        }
        self.flush()?;
        Ok(report)
    }

    pub(super) fn scrub_rows(&self, unit: u64, first: u64, count: u64, report: &mut ScrubReport) {
        // Verify every copy of every role, repairing what fails.
        let mut rows: Vec<Option<Vec<u8>>> = Vec::new();
        for role in 0..self.geometry.roles {
            let members: Vec<(usize, Arc<Member>)> = self
                .role_members(role)
                .into_iter()
                .filter(|(_, _, valid)| *valid >= first + count)
                .map(|(s, m, _)| (s, m))
                .collect();
            let mut good_row: Option<Vec<u8>> = None;
            for (slot, member) in members {
                let mut data = vec![0u8; bytes(count)];
                let read = member.read_raw(first, &mut data);
                for i in 0..count {
                    report.checked_blocks += 1;
                    let span = bytes(i)..bytes(i + 1);
                    let mut ok = read.is_ok() && member.verify(first + i, &data[span.clone()]);
                    if !ok && read.is_err() {
                        let mut one = vec![0u8; BLOCK_SIZE];
                        if member.read_raw(first + i, &mut one).is_ok()
                            && member.verify(first + i, &one)
                        {
                            data[span.clone()].copy_from_slice(&one);
                            ok = true;
                        }
                    }
                    if ok {
                        continue;
                    }
                    let raw = data[span.clone()].to_vec();
                    match self.recover_block(role, first + i, Some((&member, &raw))) {
                        Ok(fixed) => {
                            data[span.clone()].copy_from_slice(&fixed);
                            self.repair(slot, &member, first + i, &fixed);
                            report.repaired_blocks += 1;
                        }
                        Err(e) => {
                            report.unrepairable_blocks += 1;
                            if report.errors.len() < 16 {
                                report.errors.push(e.to_string());
                            }
                        }
                    }
                }
                if self.geometry.level == Level::Raid1 {
                    // Mirrors must agree; a copy with a valid checksum that
                    // differs from the first mirror is stale (resync missed).
                    match &good_row {
                        None => good_row = Some(data),
                        Some(reference) if *reference != data => {
                            for i in 0..count {
                                let span = bytes(i)..bytes(i + 1);
                                if reference[span.clone()] != data[span.clone()] {
                                    self.repair(slot, &member, first + i, &reference[span]);
                                    report.repaired_blocks += 1;
                                }
                            }
                        }
                        Some(_) => {}
                    }
                } else if good_row.is_none() {
                    good_row = Some(data);
                }
            }
            rows.push(good_row);
        }
        if self.geometry.level == Level::Raid5 && rows.iter().all(|r| r.is_some()) {
            let parity_role = self.geometry.parity_role(unit);
            let mut parity = vec![0u8; bytes(count)];
            for (role, row) in rows.iter().enumerate() {
                if role != parity_role {
                    xor_into(&mut parity, row.as_ref().expect("checked"));
                }
            }
            if rows[parity_role].as_deref() != Some(&parity[..]) {
                report.parity_mismatches += 1;
                for (slot, member, _) in self.role_members(parity_role) {
                    if let Err(e) = member.write(first, &parity) {
                        self.fail_slot(slot, format!("parity rewrite failed: {e}"));
                    }
                }
            }
        }
    }
}
