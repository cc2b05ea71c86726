//! Rebuild onto a spare, in the background or in the foreground.

use super::*;

impl Inner {
    // -------------------------------------------------------------- rebuild

    pub(super) fn next_rebuilding_slot(&self) -> Option<usize> {
        self.config_read()
            .slots
            .iter()
            .position(|s| matches!(s.state, SlotState::Rebuilding { .. }) && s.member.is_some())
    }

    pub(super) fn start_rebuild_if_needed(&self) {
        if !self.background_rebuild || self.next_rebuilding_slot().is_none() {
            return;
        }
        let mut thread = self
            .rebuild_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        *thread = Some(std::thread::spawn(move || {
            while let Some(slot) = me.next_rebuilding_slot() {
                loop {
                    if me.stop.load(Ordering::Acquire) {
                        return;
                    }
                    match me.rebuild_step(slot) {
                        Ok(done) if done >= me.member_geometry.data_blocks => break,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "background rebuild stopped");
                            return;
                        }
                    }
                }
            }
        }));
    }

    pub(super) fn stop_rebuild(&self) {
        self.stop.store(true, Ordering::Release);
        let handle = self
            .rebuild_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        self.stop.store(false, Ordering::Release);
    }

    /// Rebuilds one lock unit of the disk in `slot`; returns the member
    /// blocks now valid on it.
    pub(super) fn rebuild_step(&self, slot: usize) -> Result<u64> {
        let (role, next, member) = {
            let config = self.config_read();
            let s = &config.slots[slot];
            match (s.state, &s.member) {
                (SlotState::Rebuilding { role, next_block }, Some(member)) => {
                    (role as usize, next_block, member.clone())
                }
                _ => return Ok(self.member_geometry.data_blocks),
            }
        };
        let total = self.member_geometry.data_blocks;
        if next < total {
            let unit = next / self.geometry.unit_member_blocks();
            let end = ((unit + 1) * self.geometry.unit_member_blocks()).min(total);
            let count = end - next;
            let _guard = self.lock(unit).write().unwrap_or_else(|e| e.into_inner());
            let mut data = vec![0u8; bytes(count)];
            match self.geometry.level {
                Level::Single => {
                    return Err(RaidError::Invalid(
                        "a single-disk volume cannot be rebuilt".into(),
                    ))
                }
                Level::Raid1 => {
                    let source = (0..self.geometry.roles)
                        .find(|r| {
                            *r != role
                                && self.role_members(*r).iter().any(|(_, _, v)| *v == u64::MAX)
                        })
                        .ok_or_else(|| {
                            RaidError::VolumeFailed("no healthy mirror to rebuild from".into())
                        })?;
                    self.read_role(source, next, &mut data)?;
                }
                Level::Raid5 => {
                    let mut piece = vec![0u8; bytes(count)];
                    for other in (0..self.geometry.roles).filter(|r| *r != role) {
                        self.read_role(other, next, &mut piece)?;
                        xor_into(&mut data, &piece);
                    }
                }
            }
            if let Err(e) = member.write(next, &data) {
                self.fail_slot(slot, format!("rebuild write failed: {e}"));
                return Err(e.into());
            }
            let mut config = self.config_write();
            if let SlotState::Rebuilding { next_block, .. } = &mut config.slots[slot].state {
                *next_block = end;
            }
            let crossed = end / REBUILD_PERSIST_BLOCKS != next / REBUILD_PERSIST_BLOCKS;
            if end >= total || crossed {
                // The rebuilt blocks and their checksums must be durable before
                // the superblock says they are.
                if let Err(e) = member.flush() {
                    drop(config);
                    self.fail_slot(slot, format!("flush failed during rebuild: {e}"));
                    return Err(e.into());
                }
                if end >= total {
                    config.slots[slot].state = SlotState::Active { role: role as u16 };
                    tracing::info!(disk = %member.path, "rebuild complete");
                }
                self.persist_config(&mut config)?;
            }
            return Ok(end);
        }
        let mut config = self.config_write();
        config.slots[slot].state = SlotState::Active { role: role as u16 };
        self.persist_config(&mut config)?;
        Ok(total)
    }
}
