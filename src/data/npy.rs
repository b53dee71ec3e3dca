//! NumPy `.npy` (format version 1.0, little-endian, C order) writer and a small reader.
//!
//! Used by `--dump-views`, `embed` and result dumps so anyone can recompute memprune's
//! numbers with `numpy.load`, no Rust needed. memprune's own rather than candle's
//! `Tensor::read_npy`, which sizes its buffer from the header before reading: a 128-byte
//! file declaring 2^40 floats aborts the process, an overflowing shape panics, trailing
//! bytes are ignored (measured on candle 0.11.1).

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // magic(6) + version(2) + len(2) + dict + padding + '\n' is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let hlen = dict.len() + pad + 1;
    let mut h = Vec::with_capacity(10 + hlen);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&[1, 0]);
    h.extend_from_slice(&(hlen as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

fn npy_bytes<const N: usize>(
    descr: &str,
    shape: &[usize],
    count: usize,
    values: impl Iterator<Item = [u8; N]>,
) -> Result<Vec<u8>> {
    let expected: usize = shape.iter().product();
    if expected != count {
        bail!("shape {shape:?} holds {expected} values but {count} were given");
    }
    let mut out = header(descr, shape);
    out.reserve(count * N);
    for b in values {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// The bytes of a float32 `.npy` array of `shape` (product must equal `data.len()`).
pub fn npy_bytes_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    npy_bytes(
        "<f4",
        shape,
        data.len(),
        data.iter().map(|v| v.to_le_bytes()),
    )
}

/// The bytes of a uint8 `.npy` array of `shape` (product must equal `data.len()`).
pub fn npy_bytes_u8(shape: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    npy_bytes("|u1", shape, data.len(), data.iter().map(|&v| [v]))
}

/// The bytes of an int64 `.npy` array of `shape` (product must equal `data.len()`).
pub fn npy_bytes_i64(shape: &[usize], data: &[i64]) -> Result<Vec<u8>> {
    npy_bytes(
        "<i8",
        shape,
        data.len(),
        data.iter().map(|v| v.to_le_bytes()),
    )
}

fn write_bytes(path: &Path, bytes: Result<Vec<u8>>) -> Result<()> {
    let bytes = bytes.map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let f = std::fs::File::create(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    let mut w = BufWriter::new(f);
    let io = |e: std::io::Error| anyhow!("{}: write failed: {e}", path.display());
    w.write_all(&bytes).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
}

/// Writes `data` as a float32 array of `shape` (product must equal `data.len()`).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_bytes(path, npy_bytes_f32(shape, data))
}

/// Writes `data` as an int64 array of `shape` (product must equal `data.len()`).
pub fn write_npy_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write_bytes(path, npy_bytes_i64(shape, data))
}

/// Reads a float32, C-order `.npy` file (version 1.0 or 2.0) as (shape, values).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let (shape, data) = read_npy(path, "<f4", 4)?;
    Ok((
        shape,
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

/// Reads an int64, C-order `.npy` file (version 1.0 or 2.0) as (shape, values).
pub fn read_npy_i64(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let (shape, data) = read_npy(path, "<i8", 8)?;
    Ok((
        shape,
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect(),
    ))
}

/// Parses the header of a `.npy` file of dtype `descr` (`width` bytes per value) and returns
/// the shape and the raw little-endian data.
fn read_npy(path: &Path, descr: &str, width: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let (_, shape, data) = read_npy_of(path, &[(descr, width)])?;
    Ok((shape, data))
}

/// A `.npy` file of one of the `accepted` dtypes (descr, bytes per value): the dtype found,
/// the shape and the raw little-endian data.
pub fn read_npy_of(
    path: &Path,
    accepted: &[(&str, usize)],
) -> Result<(String, Vec<usize>, Vec<u8>)> {
    let p = path.display();
    let mut b = std::fs::read(path).map_err(|e| anyhow!("{p}: cannot read: {e}"))?;
    if b.len() < 10 || &b[..6] != MAGIC {
        bail!("{p}: not a .npy file");
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => bail!("{p}: unsupported .npy version {v}"),
    };
    let body = start + hlen;
    if b.len() < body {
        bail!("{p}: truncated header");
    }
    let dict =
        std::str::from_utf8(&b[start..body]).map_err(|_| anyhow!("{p}: header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let k = format!("'{key}':");
        let i = dict
            .find(&k)
            .ok_or_else(|| anyhow!("{p}: header has no {key}"))?;
        Ok(dict[i + k.len()..].trim_start())
    };
    let descr_field = field("descr")?;
    let Some(&(descr, width)) = accepted
        .iter()
        .find(|(d, _)| descr_field.starts_with(&format!("'{d}'")))
    else {
        let names: Vec<&str> = accepted.iter().map(|(d, _)| *d).collect();
        let found = descr_field.split(',').next().unwrap_or("").trim();
        bail!("{p}: dtype {found} is not {}", names.join(" or "));
    };
    if !field("fortran_order")?.starts_with("False") {
        bail!("{p}: Fortran order is not supported");
    }
    let s = field("shape")?;
    let close = s
        .find(')')
        .filter(|_| s.starts_with('('))
        .ok_or_else(|| anyhow!("{p}: bad shape"))?;
    let shape = s[1..close]
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<usize>()
                .map_err(|_| anyhow!("{p}: bad shape entry {t:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = shape
        .iter()
        .try_fold(width, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("{p}: shape {shape:?} is too large"))?
        / width;
    if b.len() - body != width * n {
        bail!(
            "{p}: expected {} data bytes for shape {shape:?}, got {}",
            width * n,
            b.len() - body
        );
    }
    Ok((descr.to_string(), shape, b.split_off(body)))
}
