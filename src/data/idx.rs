//! MNIST / Fashion-MNIST IDX files (images: magic 0x00000803, labels: 0x00000801).
//!
//! Files may be plain or gzip-compressed; gzip is detected by its `1f 8b` magic, not by the
//! file name, because mirrors are inconsistent about `.gz` suffixes. Every error is one line
//! that names the file and the problem.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::names::{file_name, PointNames};
use super::{DatasetKind, ImageSet};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        inflate_bounded(path, &raw)
    } else {
        Ok(raw)
    }
}

/// Inflates an IDX .gz no further than the size its own header declares (+1 byte, to tell
/// a longer stream): a gzip bomb fails after its header, not after gigabytes.
fn inflate_bounded(path: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    let p = path.display();
    let corrupt = |e: std::io::Error| anyhow!("{p}: corrupt gzip: {e}");
    let mut dec = flate2::read::MultiGzDecoder::new(raw);
    let mut out = vec![0u8; 4];
    dec.read_exact(&mut out).map_err(corrupt)?;
    let ndims = out[3] as usize;
    let elem = match out[2] {
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => 1,
    };
    let mut dims = vec![0u8; 4 * ndims];
    dec.read_exact(&mut dims).map_err(corrupt)?;
    out.extend_from_slice(&dims);
    let body = dims
        .chunks(4)
        .try_fold(elem as u64, |a, d| {
            a.checked_mul(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as u64)
        })
        .ok_or_else(|| anyhow!("{p}: the IDX header declares more data than can be addressed"))?;
    crate::data::limits::check_alloc(&format!("{p}: its IDX header's data"), &[body as usize], 1)?;
    out.reserve((body as usize).min(raw.len().saturating_mul(64)));
    dec.take(body + 1).read_to_end(&mut out).map_err(corrupt)?;
    if (out.len() - 4 - 4 * ndims) as u64 > body {
        bail!("{p}: the gzip inflates past the {body} bytes of data its IDX header declares");
    }
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks magic and total size; returns the header's dimension words.
fn parse_header(path: &Path, data: &[u8], magic: u32, ndims: usize) -> Result<Vec<usize>> {
    let p = path.display();
    let header = 4 + 4 * ndims;
    if data.len() < 4 {
        bail!(
            "{p}: truncated: expected at least {header} bytes got {}",
            data.len()
        );
    }
    let m = be_u32(data, 0);
    if m != magic {
        let what = if magic == IMAGES_MAGIC {
            "images"
        } else {
            "labels"
        };
        bail!("{p}: bad magic 0x{m:08x}, expected 0x{magic:08x} (IDX {what} file)");
    }
    if data.len() < header {
        bail!(
            "{p}: truncated: expected at least {header} bytes got {}",
            data.len()
        );
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| be_u32(data, 4 + 4 * d) as usize)
        .collect();
    let body = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("{p}: header dimensions {dims:?} overflow"))?;
    let expected = header + body;
    if data.len() < expected {
        bail!(
            "{p}: truncated: expected {expected} bytes got {}",
            data.len()
        );
    }
    if data.len() > expected {
        bail!(
            "{p}: {} trailing bytes: expected {expected} bytes got {}",
            data.len() - expected,
            data.len()
        );
    }
    Ok(dims)
}

/// Reads an IDX image file (n × rows × cols bytes) as a single-channel [`ImageSet`]
/// without labels and with kind `Unknown` (see [`read_idx_pair`] / [`crate::data::open()`]).
pub fn read_idx_images(path: &Path) -> Result<ImageSet> {
    let mut data = read_maybe_gz(path)?;
    let dims = parse_header(path, &data, IMAGES_MAGIC, 3)?;
    if dims[1] == 0 || dims[2] == 0 {
        bail!(
            "{}: images of size {}x{} are empty",
            path.display(),
            dims[1],
            dims[2]
        );
    }
    data.drain(..16);
    let names = PointNames::Records(vec![(file_name(path), dims[0])]);
    Ok(ImageSet {
        source: path.display().to_string(),
        pixels: data,
        labels: None,
        class_names: None,
        channels: 1,
        height: dims[1],
        width: dims[2],
        kind: DatasetKind::Unknown,
        names,
        notes: Vec::new(),
    })
}

/// Reads an IDX label file (one byte per label).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let data = read_maybe_gz(path)?;
    parse_header(path, &data, LABELS_MAGIC, 1)?;
    Ok(data[8..].iter().map(|&b| b as u32).collect())
}

/// Reads an image file and its label file, checking that their counts agree.
pub fn read_idx_pair(images: &Path, labels: &Path, kind: DatasetKind) -> Result<ImageSet> {
    let mut set = read_idx_images(images)?;
    let l = read_idx_labels(labels)?;
    if l.len() != set.len() {
        bail!(
            "{}: count mismatch: {} labels for {} images in {}",
            labels.display(),
            l.len(),
            set.len(),
            images.display()
        );
    }
    set.labels = Some(l);
    set.kind = kind;
    Ok(set)
}
