//! A real process is killed with SIGKILL while committing to a journal on
//! real files; every transaction it acknowledged must survive, atomically.
//!
//! The child is this test binary, re-invoked with `KEEL_JOURNAL_CHILD_DIR`
//! set: it recovers the journal, then each of its writer threads commits
//! transactions `i, i+1, ...` on its own blocks and prints `ack w i` after
//! each commit returns. The parent kills it at a random moment, reopens
//! (recovers) the journal itself and checks, writer by writer, that the home
//! blocks are exactly the result of transactions `0..=m`, where `m` is the
//! last acknowledged transaction or the one after it (in flight). With four
//! writers the commits share groups, so the kill lands inside group commits.
//!
//! `KEEL_SEED` fixes the random kill moments; `KEEL_KILL_ROUNDS` (default 6)
//! sets the number of kills.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_disk::{FileDisk, FileDiskOptions, SimRng};
use keel_journal::{format_log, Journal, LogRegion, WriteBackStore};

const BLOCK: usize = 4096;
const LOG_BLOCKS: u64 = 1 + 96;
const HOME_BLOCKS: u64 = 64;
const CHILD_DIR: &str = "KEEL_JOURNAL_CHILD_DIR";
const CHILD_START: &str = "KEEL_JOURNAL_CHILD_START";

/// The blocks transaction `number` of `writer` writes, and their contents: a
/// pure function of both, so the parent can rebuild any prefix. Each writer
/// owns `HOME_BLOCKS / writers` blocks.
fn transaction(writers: u64, writer: u64, number: u64) -> Vec<(u64, Vec<u8>)> {
    let span = HOME_BLOCKS / writers;
    let count = 1 + number % 4;
    let mut blocks: Vec<u64> = (0..count)
        .map(|k| writer * span + (number * 7 + k * 13) % span)
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks
        .into_iter()
        .map(|block| {
            let mut image = vec![0u8; BLOCK];
            let mut rng = SimRng::new(number << 16 | writer << 8 | block);
            rng.fill(&mut image);
            image[0..8].copy_from_slice(&number.to_le_bytes());
            image[8..16].copy_from_slice(&block.to_le_bytes());
            (block, image)
        })
        .collect()
}

type FileJournal = Journal<FileDisk, WriteBackStore<FileDisk>>;

fn open_journal(dir: &Path) -> FileJournal {
    let options = FileDiskOptions {
        block_size: BLOCK,
        ..FileDiskOptions::default()
    };
    let log = FileDisk::open(&dir.join("log.img"), options).expect("open log");
    let home = FileDisk::open(&dir.join("home.img"), options).expect("open home");
    let region = LogRegion::whole(&log);
    Journal::open(log, region, WriteBackStore::new(home))
        .expect("recover")
        .0
}

/// The child: `starts[w]` is the next transaction number of writer `w`.
fn child(dir: &Path, starts: &[u64]) -> ! {
    let journal = open_journal(dir);
    let writers = starts.len() as u64;
    std::thread::scope(|scope| {
        for (writer, &start) in starts.iter().enumerate() {
            let journal = &journal;
            scope.spawn(move || {
                for number in start.. {
                    let mut txn = journal.begin();
                    for (block, image) in transaction(writers, writer as u64, number) {
                        txn.write(block, &image).expect("write");
                    }
                    txn.commit().expect("commit");
                    // The acknowledgement leaves only after commit returned.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {writer} {number}").expect("pipe");
                    out.flush().expect("pipe");
                }
            });
        }
    });
    unreachable!()
}

/// Home blocks of `writer` after its transactions `0..=last`.
fn model(writers: u64, writer: u64, last: Option<u64>) -> Vec<Vec<u8>> {
    let span = HOME_BLOCKS / writers;
    let mut home = vec![vec![0u8; BLOCK]; span as usize];
    if let Some(last) = last {
        for number in 0..=last {
            for (block, image) in transaction(writers, writer, number) {
                home[(block - writer * span) as usize] = image;
            }
        }
    }
    home
}

fn recovered_home(dir: &Path) -> Vec<Vec<u8>> {
    let journal = open_journal(dir);
    (0..HOME_BLOCKS)
        .map(|block| {
            let mut buf = vec![0u8; BLOCK];
            journal.read(block, &mut buf).expect("read");
            buf
        })
        .collect()
}

/// The test harness prints "test <name> ... " without a newline before the
/// child's first acknowledgement, so the ack is found anywhere in the line.
fn parse_ack(line: &str) -> Option<(usize, u64)> {
    let at = line.find("ack ")?;
    let mut fields = line[at + 4..].split_whitespace();
    let writer = fields.next()?.parse().expect("ack writer");
    let number = fields.next()?.parse().expect("ack number");
    Some((writer, number))
}

fn child_if_asked() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let starts: Vec<u64> = std::env::var(CHILD_START)
            .expect("starts")
            .split(',')
            .map(|v| v.parse().expect("start"))
            .collect();
        child(Path::new(&dir), &starts);
    }
}

#[test]
fn kill_9_during_commits() {
    child_if_asked();
    kill_rounds("kill_9_during_commits", 1);
}

#[test]
fn kill_9_during_group_commits() {
    child_if_asked();
    kill_rounds("kill_9_during_group_commits", 4);
}

fn kill_rounds(test_name: &str, writers: usize) {
    let seed = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let rounds: u64 = std::env::var("KEEL_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    eprintln!("{test_name}: KEEL_SEED={seed}, {rounds} rounds, {writers} writers");
    let mut rng = SimRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let log = FileDisk::create(&dir.path().join("log.img"), BLOCK, LOG_BLOCKS).unwrap();
    format_log(&log, LogRegion::whole(&log)).unwrap();
    drop(log);
    drop(FileDisk::create(&dir.path().join("home.img"), BLOCK, HOME_BLOCKS).unwrap());

    let mut next: Vec<u64> = vec![0; writers];
    for round in 0..rounds {
        let starts: Vec<String> = next.iter().map(|n| n.to_string()).collect();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, starts.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted_acks = 1 + rng.below(150 * writers as u64);
        let mut last_ack: Vec<Option<u64>> = next.iter().map(|n| n.checked_sub(1)).collect();
        let mut acks = 0;
        let record = |line: &str, last_ack: &mut Vec<Option<u64>>| {
            if let Some((writer, number)) = parse_ack(line) {
                let expected = last_ack[writer].map_or(0, |l| l + 1);
                assert_eq!(
                    number, expected,
                    "writer {writer} acknowledged out of order"
                );
                last_ack[writer] = Some(number);
                return true;
            }
            false
        };
        while acks < wanted_acks {
            match lines.next() {
                Some(Ok(line)) => acks += record(&line, &mut last_ack) as u64,
                _ => panic!("child exited early (seed {seed}, round {round})"),
            }
        }
        // A random moment: somewhere inside a later commit, usually.
        std::thread::sleep(Duration::from_micros(rng.below(2000)));
        child.kill().expect("kill -9"); // SIGKILL on Unix
                                        // Acknowledgements already in the pipe were sent before the kill.
        for line in lines.map_while(Result::ok) {
            record(&line, &mut last_ack);
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "child should have been killed");

        let home = recovered_home(dir.path());
        let span = (HOME_BLOCKS / writers as u64) as usize;
        let mut recovered_all = Vec::new();
        for writer in 0..writers {
            let mine = &home[writer * span..(writer + 1) * span];
            let acknowledged = last_ack[writer];
            let in_flight = acknowledged.map_or(0, |l| l + 1);
            let recovered = if mine == model(writers as u64, writer as u64, acknowledged) {
                acknowledged
            } else if mine == model(writers as u64, writer as u64, Some(in_flight)) {
                Some(in_flight)
            } else {
                panic!(
                    "seed {seed}, round {round}, writer {writer}: recovered blocks are neither its transactions up to the last acknowledged ({acknowledged:?}) nor up to the one in flight"
                );
            };
            next[writer] = recovered.map_or(0, |r| r + 1);
            recovered_all.push((acknowledged, recovered));
        }
        eprintln!("round {round}: (acknowledged, recovered) per writer: {recovered_all:?}");
    }
}
