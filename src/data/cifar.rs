//! CIFAR-10 / CIFAR-100 "binary version" batch files.
//!
//! CIFAR-10 records are 1 label byte + 3072 pixel bytes; CIFAR-100 records are 2 label
//! bytes (coarse, fine) + 3072 pixel bytes. Pixels are stored as 1024 R, 1024 G, 1024 B
//! bytes of a 32×32 image, which is already the planar CHW layout of [`ImageSet`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::names::{file_name, PointNames};
use super::{DatasetKind, ImageSet};

const PIXELS: usize = 3 * 32 * 32;

/// The ten CIFAR-10 class names, in label order (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which of CIFAR-100's two labels to keep. The fine (100-class) label is the default,
/// as in torchvision's `CIFAR100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cifar100Label {
    #[default]
    Fine,
    Coarse,
}

fn read_records(
    files: &[PathBuf],
    label_bytes: usize,
    label_index: usize,
    n_classes: u32,
) -> Result<(Vec<u8>, Vec<u32>)> {
    if files.is_empty() {
        bail!("no CIFAR batch files given");
    }
    let rec = label_bytes + PIXELS;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let data = std::fs::read(f).map_err(|e| anyhow!("{}: cannot read: {e}", f.display()))?;
        if data.is_empty() || data.len() % rec != 0 {
            bail!(
                "{}: size {} bytes is not a multiple of the {rec}-byte CIFAR-{} record \
                 ({} whole records + {} bytes)",
                f.display(),
                data.len(),
                if label_bytes == 1 { 10 } else { 100 },
                data.len() / rec,
                data.len() % rec
            );
        }
        pixels.reserve(data.len() / rec * PIXELS);
        for (k, r) in data.chunks_exact(rec).enumerate() {
            let label = r[label_index] as u32;
            if label >= n_classes {
                bail!(
                    "{}: record {k}: label {label} out of range (< {n_classes}); wrong CIFAR variant?",
                    f.display()
                );
            }
            labels.push(label);
            pixels.extend_from_slice(&r[label_bytes..]);
        }
    }
    Ok((pixels, labels))
}

/// Each point's name: its batch file and its record's index within it.
fn record_names(files: &[PathBuf], label_bytes: usize) -> PointNames {
    let rec = (label_bytes + PIXELS) as u64;
    PointNames::Records(
        files
            .iter()
            .map(|f| {
                let n = std::fs::metadata(f).map(|m| m.len() / rec).unwrap_or(0);
                (file_name(f), n as usize)
            })
            .collect(),
    )
}

fn source_of(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads one or several CIFAR-10 batch files, concatenated in the given order.
pub fn read_cifar10(files: &[PathBuf]) -> Result<ImageSet> {
    let (pixels, labels) = read_records(files, 1, 0, 10)?;
    Ok(ImageSet {
        source: source_of(files),
        pixels,
        labels: Some(labels),
        class_names: Some(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
        channels: 3,
        height: 32,
        width: 32,
        kind: DatasetKind::Cifar10,
        names: record_names(files, 1),
        notes: Vec::new(),
    })
}

/// Reads one or several CIFAR-100 batch files (`train.bin`, `test.bin`). Class names are
/// taken from `fine_label_names.txt` / `coarse_label_names.txt` beside the first file
/// when present.
pub fn read_cifar100(files: &[PathBuf], which: Cifar100Label) -> Result<ImageSet> {
    let (index, n, names_file) = match which {
        Cifar100Label::Coarse => (0, 20, "coarse_label_names.txt"),
        Cifar100Label::Fine => (1, 100, "fine_label_names.txt"),
    };
    let (pixels, labels) = read_records(files, 2, index, n)?;
    let class_names = files
        .first()
        .and_then(|f| f.parent())
        .map(|d| d.join(names_file))
        .and_then(|p| read_names(&p, n as usize));
    Ok(ImageSet {
        source: source_of(files),
        pixels,
        labels: Some(labels),
        class_names,
        channels: 3,
        height: 32,
        width: 32,
        kind: DatasetKind::Cifar100,
        names: record_names(files, 2),
        notes: Vec::new(),
    })
}

/// Class names, one per non-empty line; ignored unless there are exactly `n`.
fn read_names(path: &Path, n: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (names.len() == n).then_some(names)
}
