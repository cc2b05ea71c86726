//! The log parser on random and corrupted bytes: it never panics, and it
//! never accepts a transaction whose bytes were changed.

use keel_journal::format::{encode_transaction, Lsn, Superblock, TxnId};
use keel_journal::recovery::scan_log;
use proptest::prelude::*;

const BLOCK: usize = 512;

fn superblock(log_blocks: u64, tail: u64) -> Superblock {
    Superblock {
        block_size: BLOCK as u32,
        log_blocks,
        epoch: 3,
        tail: Lsn(tail),
        tail_sequence: TxnId(10),
        head: Lsn(tail),
    }
}

fn scan(log: &[u8], superblock: &Superblock) -> keel_journal::recovery::ScanOutcome {
    let blocks = (log.len() / BLOCK) as u64;
    scan_log(superblock, |lsn, buf: &mut [u8]| {
        let at = (lsn.0 % blocks) as usize * BLOCK;
        buf.copy_from_slice(&log[at..at + BLOCK]);
        Ok::<(), ()>(())
    })
    .expect("reads never fail here")
}

/// A log holding `count` valid transactions from position 0.
fn valid_log(count: usize, log_blocks: usize) -> Vec<u8> {
    let mut log = Vec::new();
    for index in 0..count {
        let image = vec![index as u8 + 1; BLOCK];
        let writes = [(index as u64, &image[..]), (100 + index as u64, &image[..])];
        encode_transaction(
            &mut log,
            BLOCK,
            3,
            TxnId(10 + index as u64),
            &writes,
            &[7],
            Lsn(0),
        );
    }
    log.resize(log_blocks * BLOCK, 0);
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn superblock_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Superblock::decode(&bytes);
    }

    #[test]
    fn scan_of_random_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), BLOCK * 8),
        tail in 0u64..1000,
    ) {
        let outcome = scan(&bytes, &superblock(8, tail));
        prop_assert!(outcome.transactions.is_empty() || outcome.end.0 <= tail + 8);
    }

    #[test]
    fn corrupted_transaction_is_never_accepted(
        flips in proptest::collection::vec((0usize..5 * BLOCK, 0u8..8), 1..4),
    ) {
        // Five blocks per transaction (descriptor, two images, revoke, commit).
        let mut log = valid_log(3, 24);
        let clean = scan(&log, &superblock(24, 0));
        prop_assert_eq!(clean.transactions.len(), 3);
        // Corrupt bits of the second transaction (each bit at most once, so
        // two flips never cancel). Only the first 36 bytes of a commit
        // record mean anything (the rest is padding).
        let bits: std::collections::BTreeSet<(usize, u8)> = flips
            .iter()
            .map(|(offset, bit)| {
                let offset = if *offset >= 4 * BLOCK { 4 * BLOCK + offset % 36 } else { *offset };
                (offset, *bit)
            })
            .collect();
        for (offset, bit) in bits {
            log[5 * BLOCK + offset] ^= 1 << bit;
        }
        let outcome = scan(&log, &superblock(24, 0));
        prop_assert_eq!(outcome.transactions.len(), 1, "stop: {:?}", outcome.stop);
        prop_assert_eq!(outcome.end, Lsn(5));
    }

    #[test]
    fn random_blocks_inside_a_valid_log_never_panic(
        garbage in proptest::collection::vec(any::<u8>(), BLOCK),
        at in 0usize..20,
    ) {
        let mut log = valid_log(3, 24);
        log[at * BLOCK..(at + 1) * BLOCK].copy_from_slice(&garbage);
        let outcome = scan(&log, &superblock(24, 0));
        prop_assert!(outcome.transactions.len() <= 3);
        // Transactions before the damaged block are intact.
        prop_assert!(outcome.transactions.len() >= at / 5);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any superblock with a valid checksum, over any log contents: opening
    /// returns a journal or an error, never panics.
    #[test]
    fn open_with_arbitrary_superblock_never_panics(
        log_blocks in prop_oneof![Just(24u64), 0u64..40],
        epoch in prop_oneof![Just(3u64), any::<u64>()],
        tail in prop_oneof![Just(0u64), 0u64..30, any::<u64>()],
        tail_sequence in prop_oneof![Just(10u64), any::<u64>()],
        head_offset in 0u64..50,
        garbage in proptest::collection::vec(any::<u8>(), BLOCK * 24),
        with_valid_log in any::<bool>(),
    ) {
        use keel_disk::{BlockDevice, MemDisk};
        use keel_journal::{Journal, LogRegion, WriteBackStore};
        let region = LogRegion { first_block: 0, block_count: 25 };
        let disk = MemDisk::new(BLOCK, 25 + 16);
        let log = if with_valid_log { valid_log(3, 24) } else { garbage };
        disk.write_blocks(1, &log).unwrap();
        let superblock = Superblock {
            block_size: BLOCK as u32,
            log_blocks,
            epoch,
            tail: Lsn(tail),
            tail_sequence: TxnId(tail_sequence),
            head: Lsn(tail.saturating_add(head_offset)),
        };
        let mut block = vec![0u8; BLOCK];
        superblock.encode(&mut block);
        disk.write_blocks(0, &block).unwrap();
        let _ = Journal::open(&disk, region, WriteBackStore::with_region(&disk, 25, 16));
    }
}
