//! Reading the files a user names whose size memprune does not control (policies, augment
//! files, partial results): each read is bounded by what such a file may reasonably be, so
//! that `/dev/zero`, a FIFO that never ends or a huge file by mistake is one line naming the
//! file, never memory run out.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// A YAML file memprune reads (a policy, an augment file): 1 MiB is thousands of lines.
pub const MAX_YAML_BYTES: u64 = 1 << 20;

/// A partial result: its state is O(units) per shard for `mean`, O(points x units) for
/// `median` (16 GiB is 50,000 points x 10,000 units of median values).
pub const MAX_PARTIAL_BYTES: u64 = 16 << 30;

fn size_words(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} bytes")
    }
}

/// Opens `path` for reading at most `max` bytes (`what` names the kind of file): a regular
/// file larger than that is refused before reading; anything else (a device, a pipe) is read
/// through a limit of `max` + 1 bytes, and [`read_bounded`] refuses it at the limit.
pub fn open_bounded(path: &Path, max: u64, what: &str) -> Result<std::io::Take<std::fs::File>> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.is_dir() {
        bail!("{}: is a folder, not {what}", path.display());
    }
    if meta.is_file() && meta.len() > max {
        bail!(
            "{}: {} bytes, more than {} for {what}",
            path.display(),
            meta.len(),
            size_words(max)
        );
    }
    Ok(f.take(max + 1))
}

/// The bytes of `path`, at most `max` of them (see [`open_bounded`]).
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_bounded(path, max, what)?
        .read_to_end(&mut buf)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if buf.len() as u64 > max {
        bail!(
            "{}: more than {} for {what} (not a regular file, or it grew while read)",
            path.display(),
            size_words(max)
        );
    }
    Ok(buf)
}

/// A bounded text file (see [`read_bounded`]), UTF-8, without a leading byte-order mark.
pub fn read_text(path: &Path, max: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, max, what)?;
    let mut text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", path.display()))?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_large_files_are_refused_at_the_bound() {
        let t = std::time::Instant::now();
        let e = read_bounded(Path::new("/dev/zero"), MAX_YAML_BYTES, "a policy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/zero") && e.contains("1 MiB"), "{e}");
        assert!(t.elapsed().as_secs() < 5);
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b' '; 2000]).unwrap();
        let e = read_bounded(&big, 1000, "a policy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("2000 bytes"), "{e}");
        let bom = dir.path().join("bom.yaml");
        std::fs::write(&bom, "\u{feff}a: 1\n").unwrap();
        assert_eq!(read_text(&bom, 1000, "a policy").unwrap(), "a: 1\n");
    }
}
