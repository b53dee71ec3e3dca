//! Images held as NumPy arrays: a folder with `train_images.npy` and `test_images.npy`
//! (uint8, N x H x W for grayscale or N x H x W x C with C = 1 or 3, the layout of
//! `np.save(x)` for a dataset held in memory, as torchvision's `data` attributes and
//! `tf.keras.datasets` give them) and, optionally, `train_labels.npy` / `test_labels.npy`
//! (one integer label per image: uint8, int32 or int64).
//!
//! The Python package passes arrays to memprune this way; a user can as well (`--data DIR`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::names::PointNames;
use super::npy::read_npy_of;
use super::{DatasetKind, ImageSet, Split};

/// The file names of one split: (images, labels).
pub fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train_images.npy", "train_labels.npy"),
        Split::Test => ("test_images.npy", "test_labels.npy"),
    }
}

/// Whether `dir` holds image arrays (either split).
pub fn is_npy_folder(dir: &Path) -> bool {
    [Split::Train, Split::Test]
        .iter()
        .any(|&s| dir.join(file_names(s).0).is_file())
}

/// Reads one split of an image-array folder.
pub fn open(dir: &Path, split: Split) -> Result<ImageSet> {
    let (images, labels) = file_names(split);
    let images: PathBuf = dir.join(images);
    if !images.is_file() {
        bail!(
            "{}: no {} for the {} split (beside {})",
            dir.display(),
            file_names(split).0,
            split_name(split),
            other_present(dir, split)
        );
    }
    let mut set = read_images(&images)?;
    let labels = dir.join(labels);
    if labels.is_file() {
        set.labels = Some(read_labels(&labels, set.len())?);
    }
    Ok(set)
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "training",
        Split::Test => "test",
    }
}

fn other_present(dir: &Path, split: Split) -> String {
    let other = match split {
        Split::Train => Split::Test,
        Split::Test => Split::Train,
    };
    let name = file_names(other).0;
    if dir.join(name).is_file() {
        name.to_string()
    } else {
        "nothing".to_string()
    }
}

/// A uint8 array N x H x W or N x H x W x C (C = 1 or 3), made planar.
pub fn read_images(path: &Path) -> Result<ImageSet> {
    let p = path.display();
    let (_, shape, data) = read_npy_of(path, &[("|u1", 1)])?;
    let (n, h, w, c) = match shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c @ (1 | 3)] => (n, h, w, c),
        [_, _, _, c] => bail!("{p}: {c} channels per pixel (1 or 3 are read)"),
        _ => bail!("{p}: shape {shape:?} is not N x H x W or N x H x W x C"),
    };
    if n == 0 || h == 0 || w == 0 {
        bail!("{p}: shape {shape:?} holds no image");
    }
    let pixels = if c == 1 {
        data
    } else {
        planar(&data, n, h * w, c)
    };
    Ok(ImageSet {
        source: path.display().to_string(),
        pixels,
        labels: None,
        class_names: None,
        channels: c,
        height: h,
        width: w,
        kind: DatasetKind::Unknown,
        names: PointNames::Records(vec![(super::names::file_name(path), n)]),
        notes: Vec::new(),
    })
}

/// Interleaved (pixel-major) channels to planar (channel-major), image by image.
fn planar(hwc: &[u8], n: usize, pixels: usize, c: usize) -> Vec<u8> {
    let mut out = vec![0u8; hwc.len()];
    for i in 0..n {
        let src = &hwc[i * pixels * c..(i + 1) * pixels * c];
        let dst = &mut out[i * pixels * c..(i + 1) * pixels * c];
        for (px, rgb) in src.chunks_exact(c).enumerate() {
            for (ch, &v) in rgb.iter().enumerate() {
                dst[ch * pixels + px] = v;
            }
        }
    }
    out
}

/// One label per image, non-negative and below 2^32.
pub fn read_labels(path: &Path, images: usize) -> Result<Vec<u32>> {
    let p = path.display();
    let (descr, shape, data) = read_npy_of(path, &[("|u1", 1), ("<i4", 4), ("<i8", 8)])?;
    if shape != [images] {
        bail!("{p}: shape {shape:?}, expected ({images},): one label per image");
    }
    let values: Vec<i64> = match descr.as_str() {
        "|u1" => data.iter().map(|&v| v as i64).collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
            .collect(),
        _ => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v)
                .map_err(|_| anyhow::anyhow!("{p}: label {v} of image {i} is not in 0..2^32"))
        })
        .collect()
}
