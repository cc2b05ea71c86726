//! The `keel volume` command-line contract, through the real binary and real
//! image files.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use keel_disk::SimRng;

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run keel")
}

fn ok(args: &[&str]) -> String {
    let out = keel(args);
    assert!(
        out.status.success(),
        "keel {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = keel(args);
    assert!(
        !out.status.success(),
        "keel {args:?} succeeded but should fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "want a one-line reason, got: {stderr}"
    );
    stderr
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("valid JSON")
}

fn seed() -> u64 {
    let seed = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("seed {seed} (replay with KEEL_SEED={seed})");
    seed
}

fn flip_bits(path: &Path, count: usize, rng: &mut SimRng) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = file.metadata().unwrap().len();
    for _ in 0..count {
        // Stay clear of the superblocks, bitmap and checksum table at the start.
        let at = (1 << 20) + rng.below(len - (1 << 20));
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at).unwrap();
        byte[0] ^= 1 << rng.below(8);
        file.write_all_at(&byte, at).unwrap();
    }
    file.sync_all().unwrap();
}

#[test]
fn raid5_with_spare_survives_bit_rot_and_a_deleted_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let d = dir.to_str().unwrap();
    let mut rng = SimRng::new(seed());
    ok(&[
        "volume", "create", d, "--level", "raid5", "--disks", "4", "--spares", "1", "--size",
        "16MiB", "--chunk", "16KiB",
    ]);
    for name in [
        "disk0.img",
        "disk1.img",
        "disk2.img",
        "disk3.img",
        "spare0.img",
        "volume.toml",
    ] {
        assert!(dir.join(name).exists(), "{name} missing");
    }
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["level"], "raid5");
    assert_eq!(status["state"], "healthy");
    assert_eq!(status["size_bytes"], 16 << 20);
    assert_eq!(status["disks"].as_array().unwrap().len(), 5);
    assert_eq!(status["disks"][4]["role"], "spare");

    let mut data = vec![0u8; 10 << 20];
    rng.fill(&mut data);
    let input = tmp.path().join("input.bin");
    std::fs::write(&input, &data).unwrap();
    ok(&[
        "volume",
        "write",
        d,
        "--input",
        input.to_str().unwrap(),
        "--offset",
        "12345",
    ]);

    flip_bits(&dir.join("disk1.img"), 40, &mut rng);
    let output = tmp.path().join("output.bin");
    let out = output.to_str().unwrap();
    ok(&[
        "volume",
        "read",
        d,
        "--offset",
        "12345",
        "--length",
        &data.len().to_string(),
        "--output",
        out,
    ]);
    assert!(
        std::fs::read(&output).unwrap() == data,
        "read back differs after bit rot"
    );
    let scrub = json(&["volume", "scrub", d, "--json"]);
    assert!(scrub["checked_blocks"].as_u64().unwrap() > 0);
    assert_eq!(scrub["unrepairable_blocks"], 0, "{scrub}");
    let again = json(&["volume", "scrub", d, "--json"]);
    assert_eq!(
        again["repaired_blocks"], 0,
        "second scrub still repairing: {again}"
    );

    std::fs::remove_file(dir.join("disk2.img")).unwrap();
    ok(&[
        "volume",
        "read",
        d,
        "--offset",
        "12345",
        "--length",
        &data.len().to_string(),
        "--output",
        out,
    ]);
    assert!(
        std::fs::read(&output).unwrap() == data,
        "degraded read differs"
    );
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["state"], "rebuilding", "{status}");
    assert_eq!(status["disks"][2]["state"], "failed");
    ok(&["volume", "rebuild", d]);
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["disks"][4]["state"], "active");
    // The rebuilt spare carries its share: lose another disk and read.
    std::fs::remove_file(dir.join("disk0.img")).unwrap();
    ok(&[
        "volume",
        "read",
        d,
        "--offset",
        "12345",
        "--length",
        &data.len().to_string(),
        "--output",
        out,
    ]);
    assert!(
        std::fs::read(&output).unwrap() == data,
        "read after rebuild and a second loss differs"
    );
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["state"], "degraded", "{status}");
}

#[test]
fn fail_marks_a_disk_and_too_many_losses_are_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mirror");
    let d = dir.to_str().unwrap();
    ok(&[
        "volume", "create", d, "--level", "raid1", "--disks", "2", "--size", "4MiB",
    ]);
    let input = tmp.path().join("in.bin");
    std::fs::write(&input, vec![7u8; 100_000]).unwrap();
    ok(&["volume", "write", d, "--input", input.to_str().unwrap()]);
    ok(&["volume", "fail", d, "--disk", "1"]);
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["state"], "degraded");
    assert_eq!(status["disks"][1]["state"], "failed");
    let error = fails(&["volume", "fail", d, "--disk", "7"]);
    assert!(error.contains("no disk 7"), "{error}");
    std::fs::remove_file(dir.join("disk0.img")).unwrap();
    let error = fails(&["volume", "status", d]);
    assert!(
        error.contains("lost") && error.contains("disk0.img"),
        "{error}"
    );
}

#[test]
fn truncated_or_garbage_members_degrade_the_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let d = dir.to_str().unwrap();
    ok(&[
        "volume", "create", d, "--level", "raid5", "--disks", "3", "--size", "4MiB",
    ]);
    let input = tmp.path().join("in.bin");
    let mut data = vec![0u8; 4 << 20];
    SimRng::new(1).fill(&mut data);
    std::fs::write(&input, &data).unwrap();
    ok(&["volume", "write", d, "--input", input.to_str().unwrap()]);
    // Truncate one member to an odd length.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("disk1.img"))
        .unwrap();
    file.set_len(5000).unwrap();
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["state"], "degraded", "{status}");
    let output = tmp.path().join("out.bin");
    ok(&["volume", "read", d, "--output", output.to_str().unwrap()]);
    assert!(std::fs::read(&output).unwrap() == data);
    // Garbage over a second member's superblocks: too many lost now.
    let garbage = vec![0xA5u8; 8192];
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("disk2.img"))
        .unwrap()
        .write_all_at(&garbage, 0)
        .unwrap();
    let error = fails(&["volume", "read", d, "--output", output.to_str().unwrap()]);
    assert!(error.contains("volume has failed"), "{error}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing");
    let error = fails(&["volume", "status", missing.to_str().unwrap()]);
    assert!(error.contains("volume.toml"), "{error}");
    let d = tmp.path().join("x");
    let error = fails(&[
        "volume",
        "create",
        d.to_str().unwrap(),
        "--level",
        "raid5",
        "--disks",
        "2",
        "--size",
        "1MiB",
    ]);
    assert!(error.contains("at least 3"), "{error}");
    let error = fails(&[
        "volume",
        "create",
        d.to_str().unwrap(),
        "--level",
        "raid1",
        "--disks",
        "2",
        "--size",
        "1Q",
    ]);
    assert!(error.contains("unit"), "{error}");
    ok(&[
        "volume",
        "create",
        d.to_str().unwrap(),
        "--level",
        "single",
        "--disks",
        "1",
        "--size",
        "1MiB",
    ]);
    let error = fails(&[
        "volume",
        "create",
        d.to_str().unwrap(),
        "--level",
        "single",
        "--disks",
        "1",
        "--size",
        "1MiB",
    ]);
    assert!(error.contains("already"), "{error}");
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 2 << 20]).unwrap();
    let error = fails(&[
        "volume",
        "write",
        d.to_str().unwrap(),
        "--input",
        big.to_str().unwrap(),
    ]);
    assert!(error.contains("do not fit"), "{error}");
}

#[test]
fn create_on_existing_files_with_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..3 {
        let path = tmp.path().join(format!("existing{i}.raw"));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        paths.push(path.to_str().unwrap().to_string());
    }
    let dir = tmp.path().join("v");
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "volume", "create", d, "--level", "raid1", "--disks", "2", "--spares", "1", "--size",
        "4MiB",
    ];
    for path in &paths {
        args.push("--disk");
        args.push(path);
    }
    ok(&args);
    let status = json(&["volume", "status", d, "--json"]);
    assert_eq!(status["state"], "healthy");
    assert_eq!(status["disks"][2]["path"], paths[2].as_str());
    // Too small a file is refused, naming it.
    let small = tmp.path().join("small.raw");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(64 << 10)
        .unwrap();
    let dir2 = tmp.path().join("w");
    let error = fails(&[
        "volume",
        "create",
        dir2.to_str().unwrap(),
        "--level",
        "single",
        "--disks",
        "1",
        "--size",
        "4MiB",
        "--disk",
        small.to_str().unwrap(),
    ]);
    assert!(
        error.contains("small.raw") && error.contains("needs"),
        "{error}"
    );
}
