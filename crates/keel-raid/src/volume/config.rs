//! The array configuration: superblocks, spares, failures, status.

use super::*;

impl Inner {
    // ------------------------------------------------------- configuration

    /// Writes the configuration to every live disk's superblock (the copy
    /// chosen by the new event's parity, so the previous one survives a torn
    /// write) and flushes it.
    pub(super) fn persist_config(&self, config: &mut Config) -> Result<()> {
        for _attempt in 0..=config.slots.len() {
            config.event += 1;
            let slots: Vec<Slot> = config
                .slots
                .iter()
                .map(|s| Slot {
                    disk_uuid: s.disk_uuid,
                    state: s.state,
                })
                .collect();
            let mut newly_failed = Vec::new();
            for (index, slot) in config.slots.iter().enumerate() {
                let Some(member) = &slot.member else { continue };
                let sb = Superblock {
                    array_uuid: self.array_uuid,
                    disk_uuid: slot.disk_uuid,
                    event: config.event,
                    level: self.geometry.level,
                    layout: self.geometry.layout,
                    roles: self.geometry.roles as u16,
                    this_slot: index as u16,
                    chunk_blocks: self.geometry.chunk_blocks as u32,
                    region_blocks: self.member_geometry.region_blocks as u32,
                    member_data_blocks: self.member_geometry.data_blocks,
                    logical_blocks: self.geometry.logical_blocks,
                    slots: slots.clone(),
                };
                let result = member
                    .device
                    .write_blocks(config.event % SUPERBLOCK_COPIES, &sb.encode())
                    .and_then(|_| member.device.flush());
                // A failed disk that can still be written learns that it is
                // failed, so it can never be assembled later as if current.
                // Failing to tell it is expected (it failed) and harmless.
                if slot.state == SlotState::Failed {
                    continue;
                }
                if let Err(e) = result {
                    newly_failed.push((index, e));
                }
            }
            if newly_failed.is_empty() {
                return Ok(());
            }
            for (index, e) in newly_failed {
                tracing::error!(disk = %config.slots[index].path, error = %e, "superblock write failed; failing disk");
                config.slots[index].state = SlotState::Failed;
                config.slots[index].reason = Some(format!("superblock write failed: {e}"));
            }
            self.assign_spares(config);
            if let Some(reason) = self.redundancy_lost(config) {
                config.failed = Some(reason.clone());
                return Err(RaidError::VolumeFailed(reason));
            }
        }
        Err(RaidError::VolumeFailed(
            "superblocks could not be written".into(),
        ))
    }

    /// Gives every role that no disk serves to a spare (as rebuilding).
    pub(super) fn assign_spares(&self, config: &mut Config) -> bool {
        let mut changed = false;
        for role in 0..self.geometry.roles as u16 {
            let served = config.slots.iter().any(|s| s.state.role() == Some(role));
            if served {
                continue;
            }
            let spare = config
                .slots
                .iter()
                .position(|s| s.state == SlotState::Spare && s.member.is_some());
            if let Some(spare) = spare {
                if self.geometry.level == Level::Single {
                    break;
                }
                tracing::info!(disk = %config.slots[spare].path, role, "spare takes over; rebuild starts");
                config.slots[spare].state = SlotState::Rebuilding {
                    role,
                    next_block: 0,
                };
                changed = true;
            }
        }
        changed
    }

    /// Why the data is no longer available, if it is not.
    pub(super) fn redundancy_lost(&self, config: &Config) -> Option<String> {
        let missing: Vec<u16> = (0..self.geometry.roles as u16)
            .filter(|role| {
                !config
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Active { role: *role } && s.member.is_some())
            })
            .collect();
        let allowed = self.geometry.level.redundancy(self.geometry.roles);
        if missing.len() > allowed {
            let reasons: Vec<String> = config
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Failed || s.member.is_none())
                .map(|s| format!("{} ({})", s.path, s.reason.as_deref().unwrap_or("failed")))
                .collect();
            Some(format!(
                "{} of {} members lost, {} can survive losing {allowed}: {}",
                missing.len(),
                self.geometry.roles,
                self.geometry.level.name(),
                reasons.join(", ")
            ))
        } else {
            None
        }
    }

    pub(super) fn fail_slot(&self, index: usize, reason: String) {
        {
            let mut config = self.config_write();
            if config.slots[index].state == SlotState::Failed {
                return;
            }
            tracing::error!(disk = %config.slots[index].path, %reason, "failing disk");
            config.slots[index].state = SlotState::Failed;
            config.slots[index].reason = Some(reason);
            self.assign_spares(&mut config);
            if let Some(lost) = self.redundancy_lost(&config) {
                config.failed = Some(lost);
            }
            if let Err(e) = self.persist_config(&mut config) {
                tracing::error!(error = %e, "could not record the failure in the superblocks");
                config.failed.get_or_insert_with(|| e.to_string());
            }
        }
        self.start_rebuild_if_needed();
    }

    pub(super) fn status(&self) -> VolumeStatus {
        let config = self.config_read();
        let total = self.member_geometry.data_blocks.max(1);
        let disks: Vec<DiskStatus> = config
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let state = if slot.member.is_none() && slot.state != SlotState::Failed {
                    "missing".to_string()
                } else {
                    slot.state.name().to_string()
                };
                DiskStatus {
                    index,
                    path: slot.path.clone(),
                    role: if slot.state.role().is_some() || index < self.geometry.roles {
                        "member".into()
                    } else {
                        "spare".into()
                    },
                    member_index: slot.state.role(),
                    state,
                    rebuild_progress: match slot.state {
                        SlotState::Rebuilding { next_block, .. } => {
                            Some(next_block as f64 / total as f64)
                        }
                        _ => None,
                    },
                    reason: slot.reason.clone(),
                }
            })
            .collect();
        let active_roles = (0..self.geometry.roles as u16)
            .filter(|role| {
                config
                    .slots
                    .iter()
                    .any(|s| s.state == SlotState::Active { role: *role } && s.member.is_some())
            })
            .count();
        let rebuilding = config
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Rebuilding { .. }));
        let state = if config.failed.is_some() || self.redundancy_lost(&config).is_some() {
            VolumeState::Failed
        } else if rebuilding {
            VolumeState::Rebuilding
        } else if active_roles < self.geometry.roles {
            VolumeState::Degraded
        } else {
            VolumeState::Healthy
        };
        VolumeStatus {
            level: self.geometry.level,
            layout: self.geometry.layout,
            state,
            size_bytes: self.geometry.logical_blocks * BLOCK_SIZE as u64,
            chunk_bytes: self.geometry.chunk_blocks * BLOCK_SIZE as u64,
            uuid: uuid_string(&self.array_uuid),
            event: config.event,
            dirty_regions: self.bitmap().dirty_regions().len(),
            repaired_blocks: self.counters.repaired.load(Ordering::Relaxed),
            disks,
        }
    }
}
