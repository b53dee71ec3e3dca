//! Image folders: `root/<class>/<image>.{png,jpg,jpeg}`, one subfolder per class.
//!
//! Class subfolders sorted by name give the label order (as torchvision's `ImageFolder`);
//! files inside a class are sorted by name too, so the point indices are stable across
//! machines. Hidden entries (starting with `.`) and other extensions are skipped. Every
//! image must have the size of the first one (memprune does not resize at load time, so
//! that a point is exactly the file's pixels). The set is grayscale when every file is
//! 8-bit single-channel (L8), otherwise RGB (alpha is dropped).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;

use super::{DatasetKind, ImageSet};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of `dir` that satisfy `keep`.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| anyhow!("{}: cannot list: {e}", dir.display()))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e
            .map_err(|e| anyhow!("{}: cannot list: {e}", dir.display()))?
            .path();
        if !hidden(&p) && keep(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The class subfolders of `root`, sorted by name.
pub fn class_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    sorted_entries(root, |p| p.is_dir())
}

struct Decoded {
    rgb: Vec<u8>, // planar CHW, 3 channels
    gray: bool,
    w: u32,
    h: u32,
}

fn decode(path: &Path) -> Result<Decoded> {
    let img = image::ImageReader::open(path)
        .map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?
        .decode()
        .map_err(|e| anyhow!("{}: cannot decode image: {e}", path.display()))?;
    let gray = img.color() == image::ColorType::L8;
    let (w, h) = (img.width(), img.height());
    let rgb = img.into_rgb8();
    let plane = (w * h) as usize;
    let mut planar = vec![0u8; 3 * plane];
    for (k, px) in rgb.pixels().enumerate() {
        planar[k] = px[0];
        planar[plane + k] = px[1];
        planar[2 * plane + k] = px[2];
    }
    Ok(Decoded {
        rgb: planar,
        gray,
        w,
        h,
    })
}

/// Reads an image-folder root (one subfolder per class). Decodes in parallel.
pub fn read_image_folder(root: &Path) -> Result<ImageSet> {
    let classes = class_dirs(root)?;
    if classes.is_empty() {
        bail!("{}: no class subfolders", root.display());
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        for f in sorted_entries(dir, |p| p.is_file() && is_image(p))? {
            files.push(f);
            labels.push(label as u32);
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no .png/.jpg/.jpeg images in its class subfolders",
            root.display()
        );
    }
    let decoded: Vec<Decoded> = files.par_iter().map(|f| decode(f)).collect::<Result<_>>()?;
    let (w, h) = (decoded[0].w, decoded[0].h);
    for (d, f) in decoded.iter().zip(&files) {
        if (d.w, d.h) != (w, h) {
            bail!(
                "{}: image is {}x{}, expected {w}x{h} (the size of {})",
                f.display(),
                d.w,
                d.h,
                files[0].display()
            );
        }
    }
    let gray = decoded.iter().all(|d| d.gray);
    let plane = (w * h) as usize;
    let channels = if gray { 1 } else { 3 };
    let mut pixels = Vec::with_capacity(decoded.len() * channels * plane);
    for d in &decoded {
        pixels.extend_from_slice(&d.rgb[..channels * plane]);
    }
    Ok(ImageSet {
        source: root.display().to_string(),
        pixels,
        labels: Some(labels),
        class_names: Some(
            classes
                .iter()
                .map(|c| {
                    c.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
        ),
        channels,
        height: h as usize,
        width: w as usize,
        kind: DatasetKind::Folder,
    })
}
