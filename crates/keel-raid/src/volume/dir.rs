//! Directory volumes: `DIR/volume.toml` lists the disks.

use super::*;

/// The manifest file in a volume directory.
pub const MANIFEST: &str = "volume.toml";

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// Member and spare disks, relative to the directory or absolute. The
    /// superblocks on the disks are authoritative; this only says where to look.
    disks: Vec<PathBuf>,
}

impl Volume {
    /// Creates a volume in directory `dir`. With `paths` empty it creates
    /// `disk0.img …` and `spare0.img …` in `dir`; otherwise it uses the given
    /// files or block devices (members first, then `spares` of them).
    pub fn create_dir(
        dir: &Path,
        spec: &CreateSpec,
        disks: usize,
        spares: usize,
        paths: &[PathBuf],
        options: VolumeOptions,
    ) -> Result<Volume> {
        std::fs::create_dir_all(dir).map_err(|source| RaidError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let manifest_path = dir.join(MANIFEST);
        if manifest_path.exists() {
            return Err(RaidError::Invalid(format!(
                "{} already exists: {} holds a volume",
                manifest_path.display(),
                dir.display()
            )));
        }
        spec.validate(disks)?;
        let geometry = spec.member_geometry(disks);
        let mut files = Vec::new();
        let created = paths.is_empty();
        if created {
            files.extend((0..disks).map(|i| PathBuf::from(format!("disk{i}.img"))));
            files.extend((0..spares).map(|i| PathBuf::from(format!("spare{i}.img"))));
        } else {
            if paths.len() != disks + spares {
                return Err(RaidError::Invalid(format!(
                    "{} --disk paths given for {disks} disks and {spares} spares",
                    paths.len()
                )));
            }
            // Paths given by the user are relative to where they stand, so
            // the manifest records them absolute.
            for path in paths {
                files.push(std::fs::canonicalize(path).map_err(|source| RaidError::Io {
                    path: path.display().to_string(),
                    source,
                })?);
            }
        }
        let mut devices: Vec<(String, Arc<dyn BlockDevice>)> = Vec::new();
        for file in &files {
            let path = dir.join(file);
            let disk = if created {
                FileDisk::create(&path, BLOCK_SIZE, geometry.total_blocks())?
            } else {
                FileDisk::open(
                    &path,
                    FileDiskOptions {
                        direct: options.direct,
                        ..FileDiskOptions::default()
                    },
                )?
            };
            devices.push((path.display().to_string(), Arc::new(disk)));
        }
        let spare_devices = devices.split_off(disks);
        let volume = Volume::create(
            &dir.display().to_string(),
            spec,
            devices,
            spare_devices,
            created,
            options,
        )?;
        let text = toml::to_string(&Manifest { disks: files })
            .map_err(|e| RaidError::Invalid(e.to_string()))?;
        write_durably(&manifest_path, text.as_bytes())?;
        Ok(volume)
    }

    /// Assembles the volume in directory `dir`.
    pub fn open_dir(dir: &Path, options: VolumeOptions) -> Result<Volume> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| RaidError::Io {
            path: manifest_path.display().to_string(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| RaidError::Format {
            path: manifest_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let disks = manifest
            .disks
            .iter()
            .map(|file| {
                let path = dir.join(file);
                let device = FileDisk::open(
                    &path,
                    FileDiskOptions {
                        direct: options.direct,
                        ..FileDiskOptions::default()
                    },
                )
                .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
                .map_err(|e| e.to_string());
                (path.display().to_string(), device)
            })
            .collect();
        Volume::assemble(&dir.display().to_string(), disks, options)
    }
}

pub(super) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| RaidError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    // IMPORTANT: fsync the directory so the rename (the manifest's name) is durable.
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}
