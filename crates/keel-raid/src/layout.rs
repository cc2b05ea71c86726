//! Where each logical block of a volume lives: pure arithmetic, no I/O.
//!
//! RAID-5 with 5 roles, chunk = 1 block, `LeftAsymmetric` (the lecture's
//! drawing) and `LeftSymmetric` (Linux md's default):
//!
//! ```text
//!            role0 role1 role2 role3 role4          role0 role1 role2 role3 role4
//! stripe 0:   D0    D1    D2    D3    P0             D0    D1    D2    D3    P0
//! stripe 1:   D4    D5    D6    P1    D7             D5    D6    D7    P1    D4
//! stripe 2:   D8    D9    P2    D10   D11            D10   D11   P2    D8    D9
//! stripe 3:   D12   P3    D13   D14   D15            D15   P3    D12   D13   D14
//! stripe 4:   P4    D16   D17   D18   D19            P4    D16   D17   D18   D19
//!                 left-asymmetric                        left-symmetric
//! ```

use crate::format::{Layout, Level};

/// Blocks per lock unit on RAID-1 and single volumes (RAID-5 locks stripes).
pub const MIRROR_UNIT_BLOCKS: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub level: Level,
    pub layout: Layout,
    /// Member roles (disks in the array, spares excluded).
    pub roles: usize,
    pub chunk_blocks: u64,
    pub member_data_blocks: u64,
    pub logical_blocks: u64,
}

/// One logical block's home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Lock unit: the stripe on RAID-5.
    pub unit: u64,
    /// Data chunk index within the stripe (0 on other levels).
    pub chunk: usize,
    /// Block within the member's data area.
    pub member_block: u64,
}

impl Geometry {
    /// Data chunks per stripe.
    pub fn data_chunks(&self) -> usize {
        match self.level {
            Level::Raid5 => self.roles - 1,
            _ => 1,
        }
    }

    /// Logical blocks per lock unit.
    pub fn unit_blocks(&self) -> u64 {
        match self.level {
            Level::Raid5 => self.chunk_blocks * self.data_chunks() as u64,
            _ => MIRROR_UNIT_BLOCKS,
        }
    }

    /// Member blocks per lock unit (the rows of a stripe).
    pub fn unit_member_blocks(&self) -> u64 {
        match self.level {
            Level::Raid5 => self.chunk_blocks,
            _ => MIRROR_UNIT_BLOCKS,
        }
    }

    pub fn units(&self) -> u64 {
        self.member_data_blocks.div_ceil(self.unit_member_blocks())
    }

    /// The role holding parity in `stripe` (RAID-5).
    pub fn parity_role(&self, stripe: u64) -> usize {
        let n = self.roles as u64;
        ((n - 1) - stripe % n) as usize
    }

    /// The role holding data chunk `chunk` of `stripe` (RAID-5).
    pub fn data_role(&self, stripe: u64, chunk: usize) -> usize {
        let parity = self.parity_role(stripe);
        match self.layout {
            Layout::LeftSymmetric => (parity + 1 + chunk) % self.roles,
            Layout::LeftAsymmetric => {
                if chunk < parity {
                    chunk
                } else {
                    chunk + 1
                }
            }
        }
    }

    /// Where logical block `block` lives.
    pub fn place(&self, block: u64) -> Place {
        match self.level {
            Level::Raid5 => {
                let per_stripe = self.unit_blocks();
                let stripe = block / per_stripe;
                let within = block % per_stripe;
                let chunk = (within / self.chunk_blocks) as usize;
                Place {
                    unit: stripe,
                    chunk,
                    member_block: stripe * self.chunk_blocks + within % self.chunk_blocks,
                }
            }
            _ => Place {
                unit: block / MIRROR_UNIT_BLOCKS,
                chunk: 0,
                member_block: block,
            },
        }
    }

    /// Member data blocks needed for `logical_blocks` of capacity.
    pub fn member_blocks_for(
        level: Level,
        roles: usize,
        chunk_blocks: u64,
        logical_blocks: u64,
    ) -> u64 {
        match level {
            Level::Raid5 => {
                let per_stripe = chunk_blocks * (roles as u64 - 1);
                logical_blocks.div_ceil(per_stripe) * chunk_blocks
            }
            _ => logical_blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raid5(layout: Layout) -> Geometry {
        Geometry {
            level: Level::Raid5,
            layout,
            roles: 5,
            chunk_blocks: 1,
            member_data_blocks: 5,
            logical_blocks: 20,
        }
    }

    #[test]
    fn asymmetric_matches_the_lecture_drawing() {
        let g = raid5(Layout::LeftAsymmetric);
        // D7 sits on the last disk of stripe 1, P1 on the fourth.
        assert_eq!(g.parity_role(1), 3);
        assert_eq!(g.data_role(1, 3), 4);
        // stripe 3: D12 P3 D13 D14 D15
        assert_eq!(g.parity_role(3), 1);
        assert_eq!(
            (0..4).map(|c| g.data_role(3, c)).collect::<Vec<_>>(),
            vec![0, 2, 3, 4]
        );
    }

    #[test]
    fn symmetric_visits_every_role_in_order() {
        let g = raid5(Layout::LeftSymmetric);
        assert_eq!(
            (0..4).map(|c| g.data_role(1, c)).collect::<Vec<_>>(),
            vec![4, 0, 1, 2]
        );
        for stripe in 0..10 {
            let mut roles: Vec<usize> = (0..4).map(|c| g.data_role(stripe, c)).collect();
            roles.push(g.parity_role(stripe));
            roles.sort();
            assert_eq!(roles, vec![0, 1, 2, 3, 4], "stripe {stripe}");
        }
    }

    #[test]
    fn place_is_a_bijection_onto_data_slots() {
        for layout in [Layout::LeftSymmetric, Layout::LeftAsymmetric] {
            let g = Geometry {
                chunk_blocks: 4,
                member_data_blocks: 40,
                logical_blocks: 120,
                roles: 4,
                ..raid5(layout)
            };
            let mut seen = std::collections::HashSet::new();
            for block in 0..g.logical_blocks {
                let p = g.place(block);
                let role = g.data_role(p.unit, p.chunk);
                assert_ne!(role, g.parity_role(p.unit));
                assert!(p.member_block < g.member_data_blocks);
                assert!(
                    seen.insert((role, p.member_block)),
                    "block {block} collides"
                );
            }
        }
    }
}
