//! `keel volume …`: the volume's command-line contract.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use keel_raid::{CreateSpec, Layout, Level, Volume, VolumeOptions, VolumeState, BLOCK_SIZE};

use crate::util::{parse_size, progress};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume in DIR: DIR/disk0.img … and DIR/spare0.img …, or the
    /// disks given with --disk.
    Create(CreateArgs),
    /// Show the volume's level, state and disks.
    Status(StatusArgs),
    /// Write a file's bytes into the volume's logical address space.
    Write(WriteArgs),
    /// Read bytes from the volume's logical address space into a file.
    Read(ReadArgs),
    /// Mark a disk failed (like `mdadm --fail`); a spare takes its place.
    Fail(FailArgs),
    /// Rebuild onto spares in the foreground, with a progress bar.
    Rebuild(OpenArgs),
    /// Read and verify every block; repair from redundancy.
    Scrub(ScrubArgs),
}

#[derive(Args)]
pub struct OpenArgs {
    /// The volume directory (holds volume.toml).
    pub dir: PathBuf,
    /// Assemble a RAID-5 volume that was not shut down cleanly while
    /// degraded (stripes written at the crash may be wrong).
    #[arg(long)]
    pub force: bool,
    /// Open member disks with O_DIRECT.
    #[arg(long)]
    pub direct: bool,
}

impl OpenArgs {
    pub fn open(&self) -> anyhow::Result<Volume> {
        Volume::open_dir(
            &self.dir,
            VolumeOptions {
                background_rebuild: false,
                force: self.force,
                direct: self.direct,
            },
        )
        .with_context(|| format!("cannot open volume {}", self.dir.display()))
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Directory for the volume (created if missing).
    pub dir: PathBuf,
    /// single, raid1 or raid5.
    #[arg(long)]
    pub level: Level,
    /// Member disks (not counting spares).
    #[arg(long)]
    pub disks: usize,
    /// Hot spares.
    #[arg(long, default_value_t = 0)]
    pub spares: usize,
    /// Usable capacity, like 64MiB or 1G.
    #[arg(long)]
    pub size: String,
    /// RAID-5 chunk size.
    #[arg(long, default_value = "64KiB")]
    pub chunk: String,
    /// RAID-5 parity layout: left-symmetric (md's default) or
    /// left-asymmetric (the lecture's drawing).
    #[arg(long, default_value = "left-symmetric")]
    pub layout: String,
    /// Use existing files or block devices instead of creating images
    /// (repeat: members first, then spares).
    #[arg(long = "disk")]
    pub disk_paths: Vec<PathBuf>,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub open: OpenArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub open: OpenArgs,
    /// The file to write ('-' for standard input).
    #[arg(long)]
    pub input: PathBuf,
    /// Byte offset in the volume.
    #[arg(long, default_value = "0")]
    pub offset: String,
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub open: OpenArgs,
    /// Byte offset in the volume.
    #[arg(long, default_value = "0")]
    pub offset: String,
    /// Bytes to read (default: to the end of the volume).
    #[arg(long)]
    pub length: Option<String>,
    /// The file to write ('-' for standard output).
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Args)]
pub struct FailArgs {
    #[command(flatten)]
    pub open: OpenArgs,
    /// Index of the disk (as in `keel volume status`).
    #[arg(long)]
    pub disk: usize,
}

#[derive(Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub open: OpenArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: VolumeCommand) -> anyhow::Result<ExitCode> {
    match command {
        VolumeCommand::Create(args) => create(args),
        VolumeCommand::Status(args) => status(args),
        VolumeCommand::Write(args) => write(args),
        VolumeCommand::Read(args) => read(args),
        VolumeCommand::Fail(args) => fail(args),
        VolumeCommand::Rebuild(args) => rebuild(args),
        VolumeCommand::Scrub(args) => scrub(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let layout = match args.layout.as_str() {
        "left-symmetric" => Layout::LeftSymmetric,
        "left-asymmetric" | "lecture" => Layout::LeftAsymmetric,
        other => bail!("unknown layout {other:?} (left-symmetric or left-asymmetric)"),
    };
    let spec = CreateSpec {
        level: args.level,
        layout,
        size_bytes: parse_size(&args.size)?,
        chunk_bytes: parse_size(&args.chunk)?,
    };
    let volume = Volume::create_dir(
        &args.dir,
        &spec,
        args.disks,
        args.spares,
        &args.disk_paths,
        VolumeOptions {
            background_rebuild: false,
            ..VolumeOptions::default()
        },
    )
    .with_context(|| format!("cannot create volume in {}", args.dir.display()))?;
    let status = volume.status();
    volume.close().context("cannot close the new volume")?;
    println!(
        "created {} volume {} in {}: {} bytes usable on {} disks + {} spares",
        status.level.name(),
        status.uuid,
        args.dir.display(),
        status.size_bytes,
        args.disks,
        args.spares
    );
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let volume = args.open.open()?;
    let status = volume.status();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "{} volume {} ({:?} layout, chunk {} KiB): {:?}, {} bytes",
            status.level.name(),
            status.uuid,
            status.layout,
            status.chunk_bytes / 1024,
            status.state,
            status.size_bytes
        );
        for disk in &status.disks {
            let progress = disk
                .rebuild_progress
                .map(|p| format!(" {:.0}% rebuilt", p * 100.0))
                .unwrap_or_default();
            let reason = disk
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            println!(
                "  disk {:>2}  {:<8} {:<10}{progress} {}{reason}",
                disk.index, disk.role, disk.state, disk.path
            );
        }
    }
    volume.close()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads `[offset, offset + len)` of the volume, block-aligned underneath.
fn read_bytes(volume: &Volume, offset: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let bs = BLOCK_SIZE as u64;
    let first = offset / bs;
    let end = (offset + len).div_ceil(bs);
    let mut buf = vec![0u8; ((end - first) * bs) as usize];
    let chunk = 256usize;
    for (i, piece) in buf.chunks_mut(chunk * BLOCK_SIZE).enumerate() {
        volume.read(first + (i * chunk) as u64, piece)?;
    }
    let skip = (offset - first * bs) as usize;
    Ok(buf[skip..skip + len as usize].to_vec())
}

fn write(args: WriteArgs) -> anyhow::Result<ExitCode> {
    let offset = parse_size(&args.offset)?;
    let mut data = Vec::new();
    if args.input.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut data)?;
    } else {
        File::open(&args.input)
            .and_then(|mut f| f.read_to_end(&mut data))
            .with_context(|| format!("cannot read {}", args.input.display()))?;
    }
    let volume = args.open.open()?;
    let size = volume.status().size_bytes;
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|end| end > size)
    {
        bail!(
            "{} bytes at offset {offset} do not fit in the volume ({size} bytes)",
            data.len()
        );
    }
    if !data.is_empty() {
        let bs = BLOCK_SIZE as u64;
        let first = offset / bs;
        let end = (offset + data.len() as u64).div_ceil(bs);
        // Partial blocks at either edge keep their other bytes.
        let mut buf = read_edges(&volume, first, end, offset, data.len() as u64)?;
        let skip = (offset - first * bs) as usize;
        buf[skip..skip + data.len()].copy_from_slice(&data);
        let bar = progress(buf.len() as u64, "write");
        let chunk = 256 * BLOCK_SIZE;
        for (i, piece) in buf.chunks(chunk).enumerate() {
            volume.write(first + (i * 256) as u64, piece)?;
            bar.inc(piece.len() as u64);
        }
        bar.finish_and_clear();
    }
    // Durable before we say so.
    volume.close().context("cannot flush the volume")?;
    println!("wrote {} bytes at offset {offset}", data.len());
    Ok(ExitCode::SUCCESS)
}

fn read_edges(
    volume: &Volume,
    first: u64,
    end: u64,
    offset: u64,
    len: u64,
) -> anyhow::Result<Vec<u8>> {
    let bs = BLOCK_SIZE as u64;
    let mut buf = vec![0u8; ((end - first) * bs) as usize];
    if !offset.is_multiple_of(bs) {
        volume.read(first, &mut buf[..BLOCK_SIZE])?;
    }
    if !(offset + len).is_multiple_of(bs) {
        let at = buf.len() - BLOCK_SIZE;
        volume.read(end - 1, &mut buf[at..])?;
    }
    Ok(buf)
}

fn read(args: ReadArgs) -> anyhow::Result<ExitCode> {
    let offset = parse_size(&args.offset)?;
    let volume = args.open.open()?;
    let size = volume.status().size_bytes;
    if offset > size {
        bail!("offset {offset} is past the end of the volume ({size} bytes)");
    }
    let len = match &args.length {
        Some(length) => parse_size(length)?,
        None => size - offset,
    };
    if offset + len > size {
        bail!("{len} bytes at offset {offset} run past the end of the volume ({size} bytes)");
    }
    let data = if len == 0 {
        Vec::new()
    } else {
        read_bytes(&volume, offset, len)?
    };
    if args.output.as_os_str() == "-" {
        std::io::stdout().write_all(&data)?;
    } else {
        std::fs::write(&args.output, &data)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    let repaired = volume.status().repaired_blocks;
    volume.close()?;
    if repaired > 0 {
        eprintln!("repaired {repaired} blocks from redundancy while reading");
    }
    Ok(ExitCode::SUCCESS)
}

fn fail(args: FailArgs) -> anyhow::Result<ExitCode> {
    let volume = args.open.open()?;
    volume
        .fail_disk(args.disk)
        .with_context(|| format!("failing disk {}", args.disk))?;
    let status = volume.status();
    volume.close()?;
    println!(
        "disk {} marked failed; volume is {:?}",
        args.disk, status.state
    );
    Ok(ExitCode::SUCCESS)
}

fn rebuild(args: OpenArgs) -> anyhow::Result<ExitCode> {
    let volume = args.open()?;
    if volume.status().state != VolumeState::Rebuilding {
        println!("nothing to rebuild: volume is {:?}", volume.status().state);
        volume.close()?;
        return Ok(ExitCode::SUCCESS);
    }
    let bar = progress(0, "rebuild");
    let started = std::time::Instant::now();
    volume
        .rebuild(|done, total| {
            bar.set_length(total * BLOCK_SIZE as u64);
            bar.set_position(done * BLOCK_SIZE as u64);
        })
        .context("rebuild failed")?;
    bar.finish_and_clear();
    let status = volume.status();
    volume.close()?;
    println!(
        "rebuild finished in {:.1} s; volume is {:?}",
        started.elapsed().as_secs_f64(),
        status.state
    );
    Ok(ExitCode::SUCCESS)
}

fn scrub(args: ScrubArgs) -> anyhow::Result<ExitCode> {
    let volume = args.open.open()?;
    let bar = progress(0, "scrub");
    let report = volume
        .scrub(|done, total| {
            bar.set_length(total * BLOCK_SIZE as u64);
            bar.set_position(done * BLOCK_SIZE as u64);
        })
        .context("scrub failed")?;
    bar.finish_and_clear();
    volume.close()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} blocks: {} repaired, {} unrepairable, {} parity mismatches fixed",
            report.checked_blocks,
            report.repaired_blocks,
            report.unrepairable_blocks,
            report.parity_mismatches
        );
        for error in &report.errors {
            println!("  {error}");
        }
    }
    if report.unrepairable_blocks > 0 {
        eprintln!(
            "keel: scrub found {} unrepairable blocks",
            report.unrepairable_blocks
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
