//! Small helpers shared by the commands.

use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

/// Parses a size such as `4096`, `64K`, `64KiB`, `1M`, `1G`, `2TiB` (powers
/// of 1024; a bare number is bytes).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let value: u64 = digits
        .parse()
        .with_context(|| format!("size {text:?} does not start with a number"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => bail!("size {text:?} has an unknown unit {other:?} (use K, M, G or T)"),
    };
    value
        .checked_mul(1u64 << shift)
        .with_context(|| format!("size {text:?} is too large"))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A spinner on stderr for long work of unknown length, showing its latest
/// step (hidden when stderr is not a terminal).
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix}: {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs `work` with a spinner named `what` that shows each progress message
/// (also logged at info level), and clears it before returning.
pub fn with_spinner<T>(what: &str, work: impl FnOnce(&mut dyn FnMut(&str)) -> T) -> T {
    let spinner = spinner(what);
    let result = work(&mut |message: &str| {
        tracing::info!("{message}");
        spinner.set_message(message.to_string());
    });
    spinner.finish_and_clear();
    result
}

/// The directory a benchmark works in: `dir` if given (created), else a new
/// temporary directory under the current one, so the file system measured is
/// the one the user runs in. The guard removes the temporary directory.
pub fn bench_dir(
    dir: Option<&std::path::Path>,
    prefix: &str,
) -> anyhow::Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok((dir.to_path_buf(), None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(".")
                .context("cannot make a directory for the benchmark in the current directory")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

pub fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
