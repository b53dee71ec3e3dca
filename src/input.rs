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

/// The most aliases (`*name`) a YAML file may use: each expands to a copy of its anchor's
/// node, so a 1 MiB file aliasing one 1 MiB string 100,000 times would need 100 GB.
pub const MAX_YAML_ALIASES: usize = 64;

/// The deepest nesting of flow collections (`[`, `{`) a YAML file may have (serde_yaml takes
/// quadratic time on deep nesting before its own limit; block nesting is bounded by it).
pub const MAX_YAML_DEPTH: usize = 64;

/// Bounds what serde_yaml would otherwise expand or recurse into, before it parses `text`:
/// a lexical pre-pass over the text (quoted scalars and comments skipped) that counts
/// aliases (a `*` that begins a node) and flow nesting. It errs on the safe side: an
/// alias-like token inside a block scalar counts too.
pub fn check_yaml_bounds(text: &str) -> Result<()> {
    let b = text.as_bytes();
    let (mut aliases, mut depth, mut line) = (0usize, 0usize, 1usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev = if i == 0 { b'\n' } else { b[i - 1] };
        let at_node = matches!(
            prev,
            b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b'-' | b':'
        );
        match c {
            b'\n' => line += 1,
            b'#' if matches!(prev, b' ' | b'\t' | b'\n') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' if at_node => {
                // A quoted scalar: to its closing quote ("" escapes with \, '' doubles).
                i += 1;
                while i < b.len() {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    if c == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if c == b'\'' && b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    bail!("line {line}: brackets nested deeper than {MAX_YAML_DEPTH}");
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'*' if at_node && b.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) => {
                aliases += 1;
                if aliases > MAX_YAML_ALIASES {
                    bail!("line {line}: more than {MAX_YAML_ALIASES} aliases (`*name`)");
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A YAML file as memprune reads them: bounded ([`MAX_YAML_BYTES`]), UTF-8, byte-order mark
/// dropped, aliases and nesting bounded ([`check_yaml_bounds`]); errors name the file.
pub fn read_yaml(path: &Path, what: &str) -> Result<String> {
    let text = read_text(path, MAX_YAML_BYTES, what)?;
    check_yaml_bounds(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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

    #[test]
    fn yaml_aliases_and_nesting_are_bounded_before_parsing() {
        let ok =
            "a: &x \"*not an alias\"\nb: *x # *c\nglob: block*\nc: [1, {d: 2}]\ne: 'it''s *'\n";
        check_yaml_bounds(ok).unwrap();
        let bomb = format!(
            "s: &s {}\nl: [{}]\n",
            "x".repeat(1000),
            vec!["*s"; 100].join(", ")
        );
        let e = check_yaml_bounds(&bomb).unwrap_err().to_string();
        assert!(e.contains("aliases"), "{e}");
        let t = std::time::Instant::now();
        let deep = "[".repeat(200_000);
        let e = check_yaml_bounds(&deep).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
        assert!(t.elapsed().as_secs() < 1);
    }
}
