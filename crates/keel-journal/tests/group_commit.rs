//! Many threads commit at once: every commit is durable and readable, groups
//! share flushes, and a failed flush stops the journal instead of lying.

use std::sync::atomic::{AtomicU64, Ordering};

use keel_disk::{BlockDevice, DiskError, MemDisk, SimDisk};
use keel_journal::{format_log_with_epoch, Journal, JournalError, LogRegion, WriteBackStore};

/// A device that counts flushes and can be made to fail them.
struct CountingDisk {
    inner: MemDisk,
    flushes: AtomicU64,
}

impl BlockDevice for CountingDisk {
    fn name(&self) -> &str {
        "counting"
    }
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read_blocks(&self, start: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.inner.read_blocks(start, buf)
    }
    fn write_blocks(&self, start: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.inner.write_blocks(start, buf)
    }
    fn flush(&self) -> Result<(), DiskError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        // Give committers time to queue up behind the flush, as a disk does.
        std::thread::sleep(std::time::Duration::from_micros(300));
        Ok(())
    }
}

#[test]
fn concurrent_commits_are_all_durable_and_share_flushes() {
    let region = LogRegion {
        first_block: 0,
        block_count: 65,
    };
    let log = CountingDisk {
        inner: MemDisk::new(512, 65),
        flushes: AtomicU64::new(0),
    };
    let home = MemDisk::new(512, 16 * 8);
    format_log_with_epoch(&log, region, 1).unwrap();
    let (journal, _) = Journal::open(&log, region, WriteBackStore::new(&home)).unwrap();
    let threads = 16u64;
    let per_thread = 40u64;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let journal = &journal;
            scope.spawn(move || {
                for number in 0..per_thread {
                    let mut txn = journal.begin();
                    let block = thread * 8 + number % 8;
                    let mut image = vec![0u8; 512];
                    image[0..8].copy_from_slice(&number.to_le_bytes());
                    image[8..16].copy_from_slice(&thread.to_le_bytes());
                    txn.write(block, &image).unwrap();
                    let committed = txn.commit().unwrap();
                    let mut buf = vec![0u8; 512];
                    journal.read(block, &mut buf).unwrap();
                    assert!(
                        committed.lsn <= journal.status().space.head,
                        "lsn beyond the head"
                    );
                    // Another thread never writes this block: we read our own.
                    assert_eq!(buf, image);
                }
            });
        }
    });
    let status = journal.status();
    assert_eq!(status.stats.commits, threads * per_thread);
    assert!(status.stats.groups <= status.stats.commits);
    eprintln!(
        "{} commits in {} groups, {} flushes, {} checkpoints",
        status.stats.commits,
        status.stats.groups,
        log.flushes.load(Ordering::Relaxed),
        status.stats.checkpoints
    );
    drop(journal);
    let (_, _) = Journal::open(&log, region, WriteBackStore::new(&home)).unwrap();
    for thread in 0..threads {
        for slot in 0..8 {
            let mut buf = vec![0u8; 512];
            home.read_blocks(thread * 8 + slot, &mut buf).unwrap();
            let last = (0..per_thread).filter(|n| n % 8 == slot).max().unwrap();
            assert_eq!(buf[0..8], last.to_le_bytes());
        }
    }
}

#[test]
fn failed_device_poisons_the_journal() {
    let disk = SimDisk::new("failing", 512, 64, 1);
    let region = LogRegion {
        first_block: 0,
        block_count: 32,
    };
    format_log_with_epoch(&disk, region, 1).unwrap();
    let (journal, _) =
        Journal::open(&disk, region, WriteBackStore::with_region(&disk, 32, 32)).unwrap();
    let mut txn = journal.begin();
    txn.write(1, &[1u8; 512]).unwrap();
    txn.commit().unwrap();
    disk.fail();
    let mut txn = journal.begin();
    txn.write(2, &[2u8; 512]).unwrap();
    let error = txn.commit().unwrap_err();
    assert!(matches!(error, JournalError::Disk(_)), "{error}");
    let mut txn = journal.begin();
    txn.write(3, &[3u8; 512]).unwrap();
    let error = txn.commit().unwrap_err();
    assert!(matches!(error, JournalError::Poisoned { .. }), "{error}");
    assert!(error.to_string().contains("reopen"), "{error}");
    assert!(journal.checkpoint().is_err());
}

#[test]
fn aborted_transactions_leave_nothing() {
    let disk = MemDisk::new(512, 64);
    let region = LogRegion {
        first_block: 0,
        block_count: 32,
    };
    format_log_with_epoch(&disk, region, 1).unwrap();
    let (journal, _) =
        Journal::open(&disk, region, WriteBackStore::with_region(&disk, 32, 32)).unwrap();
    let head = journal.status().space.head;
    let mut txn = journal.begin();
    txn.write(4, &[4u8; 512]).unwrap();
    let mut buf = vec![0u8; 512];
    txn.read(4, &mut buf).unwrap();
    assert_eq!(buf, vec![4u8; 512], "a transaction reads its own writes");
    txn.abort();
    journal.read(4, &mut buf).unwrap();
    assert_eq!(buf, vec![0u8; 512]);
    assert_eq!(journal.status().space.head, head, "abort writes nothing");
    assert!(matches!(
        journal.begin().write(40, &[0u8; 512]),
        Err(JournalError::BlockOutOfRange { block: 40, .. })
    ));
    assert!(matches!(
        journal.begin().write(1, &[0u8; 100]),
        Err(JournalError::WrongImageSize { .. })
    ));
}

#[test]
fn commit_all_writes_one_group_in_order() {
    let disk = MemDisk::new(512, 64);
    let region = LogRegion {
        first_block: 0,
        block_count: 32,
    };
    format_log_with_epoch(&disk, region, 1).unwrap();
    let (journal, _) =
        Journal::open(&disk, region, WriteBackStore::with_region(&disk, 32, 32)).unwrap();
    let transactions: Vec<_> = (0..3u8)
        .map(|index| {
            let mut txn = journal.begin();
            // All three write block 5: the last one in the list wins.
            txn.write(5, &[index; 512]).unwrap();
            txn.write(10 + u64::from(index), &[index; 512]).unwrap();
            txn
        })
        .collect();
    let committed = journal.commit_all(transactions).unwrap();
    assert_eq!(committed.len(), 3);
    assert!(committed
        .windows(2)
        .all(|w| w[1].sequence.0 == w[0].sequence.0 + 1));
    assert!(committed.windows(2).all(|w| w[1].lsn > w[0].lsn));
    let stats = journal.status().stats;
    assert_eq!((stats.commits, stats.groups), (3, 1));
    let mut buf = vec![0u8; 512];
    journal.read(5, &mut buf).unwrap();
    assert_eq!(buf, vec![2u8; 512]);
    assert!(journal.commit_all(Vec::new()).unwrap().is_empty());
    drop(journal);
    let (journal, report) =
        Journal::open(&disk, region, WriteBackStore::with_region(&disk, 32, 32)).unwrap();
    assert_eq!(report.transactions, 3);
    journal.read(12, &mut buf).unwrap();
    assert_eq!(buf, vec![2u8; 512]);
}
