//! The recovery decision table of docs/journal.md, one test per row.

use keel_disk::{BlockDevice, MemDisk};
use keel_journal::format::{encode_transaction, Header, TxnId, HEADER_MAGIC};
use keel_journal::{
    format_log_with_epoch, HomeStore, Journal, JournalError, LogRegion, StopReason, WriteBackStore,
};

const BLOCK: usize = 512;
const LOG_REGION: LogRegion = LogRegion {
    first_block: 0,
    block_count: 17,
};
const HOME_FIRST: u64 = 17;
const HOME_BLOCKS: u64 = 32;

type TestJournal<'a> = Journal<&'a MemDisk, WriteBackStore<&'a MemDisk>>;

fn new_disk() -> MemDisk {
    let disk = MemDisk::new(BLOCK, HOME_FIRST + HOME_BLOCKS);
    format_log_with_epoch(&disk, LOG_REGION, 100).unwrap();
    disk
}

fn open(disk: &MemDisk) -> (TestJournal<'_>, keel_journal::RecoveryReport) {
    Journal::open(
        disk,
        LOG_REGION,
        WriteBackStore::with_region(disk, HOME_FIRST, HOME_BLOCKS),
    )
    .unwrap()
}

fn image(fill: u8) -> Vec<u8> {
    vec![fill; BLOCK]
}

fn home(disk: &MemDisk, block: u64) -> Vec<u8> {
    let mut buf = image(0);
    disk.read_blocks(HOME_FIRST + block, &mut buf).unwrap();
    buf
}

fn commit(journal: &TestJournal<'_>, writes: &[(u64, u8)]) {
    let mut txn = journal.begin();
    for (block, fill) in writes {
        txn.write(*block, &image(*fill)).unwrap();
    }
    txn.commit().unwrap();
}

/// Writes the blocks of a transaction at the journal's head without the
/// journal (as a crash leaves them), keeping the blocks `keep` says.
fn write_raw(
    disk: &MemDisk,
    journal: &TestJournal<'_>,
    writes: &[(u64, u8)],
    revokes: &[u64],
    keep: impl Fn(usize) -> bool,
) {
    let status = journal.status();
    let images: Vec<(u64, Vec<u8>)> = writes.iter().map(|(b, f)| (*b, image(*f))).collect();
    let refs: Vec<(u64, &[u8])> = images.iter().map(|(b, i)| (*b, &i[..])).collect();
    let mut out = Vec::new();
    let blocks = encode_transaction(
        &mut out,
        BLOCK,
        status.epoch,
        status.space.next_sequence,
        &refs,
        revokes,
        status.space.head,
    );
    for index in 0..blocks as usize {
        if keep(index) {
            let position = status.space.head.0 + index as u64;
            let block = 1 + position % LOG_REGION.log_blocks();
            disk.write_blocks(block, &out[index * BLOCK..(index + 1) * BLOCK])
                .unwrap();
        }
    }
}

#[test]
fn empty_log_ends_at_no_header() {
    let disk = new_disk();
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 0);
    assert_eq!(report.stop, StopReason::NoHeader);
}

#[test]
fn committed_transactions_are_redone_in_order() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(1, 10), (2, 20)]);
        commit(&journal, &[(2, 21), (3, 30)]);
        // Not home yet: the write-back store holds them until a checkpoint.
        assert_eq!(home(&disk, 2), image(0));
        let mut buf = image(0);
        journal.read(2, &mut buf).unwrap();
        assert_eq!(buf, image(21), "reads see the latest committed version");
    }
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 2);
    assert_eq!(report.blocks_redone, 3);
    assert_eq!(home(&disk, 1), image(10));
    assert_eq!(home(&disk, 2), image(21));
    assert_eq!(home(&disk, 3), image(30));
}

#[test]
fn torn_image_fails_the_checksum_and_is_not_redone() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(1, 10)]);
        // Block 2 of the raw transaction (its second image) never lands.
        write_raw(&disk, &journal, &[(1, 11), (2, 22)], &[], |i| i != 2);
    }
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 1);
    assert!(
        matches!(report.stop, StopReason::ChecksumMismatch { .. }),
        "{:?}",
        report.stop
    );
    assert_eq!(home(&disk, 1), image(10));
    assert_eq!(home(&disk, 2), image(0));
}

#[test]
fn missing_commit_record_is_incomplete() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        // Descriptor and image land, the commit record does not.
        write_raw(&disk, &journal, &[(4, 44)], &[], |i| i < 2);
    }
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 0);
    assert!(
        matches!(report.stop, StopReason::Incomplete { .. }),
        "{:?}",
        report.stop
    );
    assert_eq!(home(&disk, 4), image(0));
}

#[test]
fn debris_of_an_earlier_epoch_is_not_redone() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(5, 50)]);
    }
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 1);
    // Write a complete transaction with a stale epoch at the head.
    let (journal, _) = open(&disk);
    let status = journal.status();
    let mut out = Vec::new();
    let stale = [(6u64, &image(66)[..])];
    encode_transaction(
        &mut out,
        BLOCK,
        status.epoch - 1,
        status.space.next_sequence,
        &stale,
        &[],
        status.space.head,
    );
    for (index, chunk) in out.chunks(BLOCK).enumerate() {
        let block = 1 + (status.space.head.0 + index as u64) % LOG_REGION.log_blocks();
        disk.write_blocks(block, chunk).unwrap();
    }
    drop(journal);
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 0);
    assert!(
        matches!(report.stop, StopReason::OtherEpoch { .. }),
        "{:?}",
        report.stop
    );
    assert_eq!(home(&disk, 6), image(0));
}

#[test]
fn debris_of_an_earlier_lap_is_not_redone() {
    let disk = new_disk();
    let (journal, _) = open(&disk);
    let status = journal.status();
    let mut out = Vec::new();
    let old = [(7u64, &image(77)[..])];
    // Same epoch, an older sequence: what an earlier lap leaves at the head.
    encode_transaction(
        &mut out,
        BLOCK,
        status.epoch,
        TxnId(status.space.next_sequence.0.wrapping_sub(5)),
        &old,
        &[],
        status.space.head,
    );
    for (index, chunk) in out.chunks(BLOCK).enumerate() {
        let block = 1 + (status.space.head.0 + index as u64) % LOG_REGION.log_blocks();
        disk.write_blocks(block, chunk).unwrap();
    }
    drop(journal);
    let (_, report) = open(&disk);
    assert!(
        matches!(report.stop, StopReason::OtherSequence { .. }),
        "{:?}",
        report.stop
    );
    assert_eq!(home(&disk, 7), image(0));
}

#[test]
fn bad_header_stops_the_scan() {
    let disk = new_disk();
    let (journal, _) = open(&disk);
    let head = journal.status().space.head.0;
    let mut block = image(0);
    block[0..4].copy_from_slice(&HEADER_MAGIC);
    block[4] = 9; // unknown kind
    disk.write_blocks(1 + head % LOG_REGION.log_blocks(), &block)
        .unwrap();
    drop(journal);
    let (_, report) = open(&disk);
    assert!(
        matches!(report.stop, StopReason::BadHeader { .. }),
        "{:?}",
        report.stop
    );
}

#[test]
fn transaction_past_the_log_capacity_stops_the_scan() {
    let disk = new_disk();
    let (journal, _) = open(&disk);
    let status = journal.status();
    // A descriptor claiming 30 images in a 16-block log.
    let mut block = image(0);
    Header {
        kind: keel_journal::format::BlockKind::Descriptor,
        epoch: status.epoch,
        sequence: status.space.next_sequence,
        count: 30,
    }
    .encode(&mut block);
    disk.write_blocks(1 + status.space.head.0 % LOG_REGION.log_blocks(), &block)
        .unwrap();
    drop(journal);
    let (_, report) = open(&disk);
    assert_eq!(report.stop, StopReason::PastLogEnd);
}

#[test]
fn revoked_blocks_are_not_redone_over_their_reuse() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(8, 80), (9, 90)]);
        let mut txn = journal.begin();
        txn.revoke(8).unwrap();
        txn.commit().unwrap();
        // Block 8 is reused for unjournaled data, written straight home.
        disk.write_blocks(HOME_FIRST + 8, &image(88)).unwrap();
        // Block 9 is revoked and then journaled again: the new image wins.
        let mut txn = journal.begin();
        txn.revoke(9).unwrap();
        txn.commit().unwrap();
        commit(&journal, &[(9, 91)]);
    }
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 4);
    assert_eq!(home(&disk, 8), image(88), "revoked image redone over reuse");
    assert_eq!(home(&disk, 9), image(91));
}

#[test]
fn image_that_looks_like_a_header_is_escaped() {
    let disk = new_disk();
    let mut tricky = image(3);
    tricky[0..4].copy_from_slice(&HEADER_MAGIC);
    {
        let (journal, _) = open(&disk);
        let mut txn = journal.begin();
        txn.write(10, &tricky).unwrap();
        txn.commit().unwrap();
    }
    let (_, report) = open(&disk);
    assert_eq!(report.transactions, 1);
    assert_eq!(home(&disk, 10), tricky);
}

#[test]
fn recovery_is_idempotent() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(1, 1), (2, 2)]);
        commit(&journal, &[(2, 3)]);
    }
    let before = disk.image();
    let (_, first) = open(&disk);
    let after_first = disk.image();
    // Recovering the same pre-recovery image twice gives the same home state.
    let again = MemDisk::from_image("again", BLOCK, before);
    let _ = open(&again);
    let _ = open(&again);
    let home_range = HOME_FIRST as usize * BLOCK..;
    assert_eq!(after_first[home_range.clone()], again.image()[home_range]);
    assert_eq!(first.transactions, 2);
}

#[test]
fn bad_superblocks_are_errors_naming_the_block() {
    let disk = MemDisk::new(BLOCK, 64);
    let error = Journal::open(&disk, LOG_REGION, WriteBackStore::with_region(&disk, 17, 8))
        .err()
        .unwrap();
    assert!(matches!(error, JournalError::Superblock { .. }), "{error}");
    assert!(error.to_string().contains("not formatted"), "{error}");
    format_log_with_epoch(&disk, LOG_REGION, 1).unwrap();
    let mut block = image(0);
    disk.read_blocks(0, &mut block).unwrap();
    block[20] ^= 0x40;
    disk.write_blocks(0, &block).unwrap();
    let error = Journal::open(&disk, LOG_REGION, WriteBackStore::with_region(&disk, 17, 8))
        .err()
        .unwrap();
    assert!(error.to_string().contains("checksum"), "{error}");
    assert!(error.to_string().contains("block 0"), "{error}");
}

#[test]
fn full_log_waits_for_a_checkpoint_and_wraps() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        // 16 log blocks, 4 per transaction: many laps around the log.
        for round in 0..50u8 {
            commit(&journal, &[(u64::from(round % 5), round), (20, round)]);
        }
        let status = journal.status();
        assert!(status.stats.checkpoints >= 10, "{status:?}");
        assert!(status.space.head.0 > 4 * LOG_REGION.log_blocks());
        let store = journal.store();
        assert!(store.dirty_blocks() <= 6);
        assert_eq!(HomeStore::block_count(store), HOME_BLOCKS);
    }
    let (_, report) = open(&disk);
    assert!(report.transactions <= 4);
    for round in 45..50u8 {
        assert_eq!(home(&disk, u64::from(round % 5)), image(round));
    }
    assert_eq!(home(&disk, 20), image(49));
}

#[test]
fn too_large_transaction_is_refused_without_harm() {
    let disk = new_disk();
    let (journal, _) = open(&disk);
    let mut txn = journal.begin();
    for block in 0..20 {
        txn.write(block, &image(1)).unwrap();
    }
    let error = txn.commit().unwrap_err();
    assert!(
        matches!(error, JournalError::TransactionTooLarge { .. }),
        "{error}"
    );
    commit(&journal, &[(1, 5)]);
}

#[test]
fn read_error_in_the_log_is_an_error_not_an_end() {
    let disk = keel_disk::SimDisk::new("media", BLOCK, HOME_FIRST + HOME_BLOCKS, 1);
    format_log_with_epoch(&disk, LOG_REGION, 100).unwrap();
    {
        let (journal, _) = Journal::open(
            &disk,
            LOG_REGION,
            WriteBackStore::with_region(&disk, HOME_FIRST, HOME_BLOCKS),
        )
        .unwrap();
        let mut txn = journal.begin();
        txn.write(1, &image(1)).unwrap();
        txn.commit().unwrap();
    }
    // The committed transaction's image (log area block 1 = device block 2)
    // cannot be read.
    disk.inject_read_error(2);
    let error = Journal::open(
        &disk,
        LOG_REGION,
        WriteBackStore::with_region(&disk, HOME_FIRST, HOME_BLOCKS),
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            error,
            JournalError::Disk(keel_disk::DiskError::Media { block: 2, .. })
        ),
        "{error}"
    );
}

#[test]
fn scan_ending_before_the_recorded_head_is_lost_log() {
    let disk = new_disk();
    // A superblock that says 4 blocks of log were durable, over an empty log.
    let superblock = keel_journal::format::Superblock {
        block_size: BLOCK as u32,
        log_blocks: LOG_REGION.log_blocks(),
        epoch: 100,
        tail: keel_journal::Lsn(0),
        tail_sequence: TxnId(1),
        head: keel_journal::Lsn(4),
    };
    let mut block = image(0);
    superblock.encode(&mut block);
    disk.write_blocks(0, &block).unwrap();
    let error = Journal::open(
        &disk,
        LOG_REGION,
        WriteBackStore::with_region(&disk, HOME_FIRST, HOME_BLOCKS),
    )
    .err()
    .unwrap();
    assert!(matches!(error, JournalError::LostLog { .. }), "{error}");
}

#[test]
fn damaged_committed_transaction_before_a_later_group_is_lost_log() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(1, 10)]); // log blocks 0..3
        commit(&journal, &[(2, 20)]); // a later group: durable before = 3
    }
    // Bit rot in the first transaction's image (log area block 1).
    let mut block = image(0);
    disk.read_blocks(2, &mut block).unwrap();
    block[100] ^= 1;
    disk.write_blocks(2, &block).unwrap();
    let error = Journal::open(
        &disk,
        LOG_REGION,
        WriteBackStore::with_region(&disk, HOME_FIRST, HOME_BLOCKS),
    )
    .err()
    .unwrap();
    assert!(matches!(error, JournalError::LostLog { .. }), "{error}");
    assert!(error.to_string().contains("damaged"), "{error}");
}

#[test]
fn inspect_shows_the_log_without_changing_it() {
    let disk = new_disk();
    {
        let (journal, _) = open(&disk);
        commit(&journal, &[(1, 10), (2, 20)]);
        let mut txn = journal.begin();
        txn.revoke(1).unwrap();
        txn.commit().unwrap();
    }
    let before = disk.image();
    let inspection = keel_journal::inspect_log(&disk, LOG_REGION).unwrap();
    assert_eq!(disk.image(), before, "inspect writes nothing");
    assert_eq!(inspection.transactions.len(), 2);
    assert_eq!(inspection.transactions[0].home_blocks, vec![1, 2]);
    assert_eq!(inspection.transactions[1].revoked_blocks, vec![1]);
    assert_eq!(inspection.stop, StopReason::NoHeader);
    // Closing checkpoints: nothing left to redo.
    let (journal, _) = open(&disk);
    journal.close().unwrap();
    let inspection = keel_journal::inspect_log(&disk, LOG_REGION).unwrap();
    assert!(inspection.transactions.is_empty());
}
