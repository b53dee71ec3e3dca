//! Opening a dataset from a path, whatever its format (IDX, CIFAR binary, image folders).
//!
//! Detection is by the file names the official distributions use, so that
//! `memprune --data DIR` works on a freshly unpacked download.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::cifar::{read_cifar10, read_cifar100, Cifar100Label};
use super::folder::{class_dirs, read_image_folder};
use super::idx::{read_idx_images, read_idx_pair};
use super::{DatasetKind, ImageSet};

/// Which half of a dataset to read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// Opens the `split` of the dataset at `path`. Recognised, in this order:
///
/// - a single IDX images file (plain or gzip); its labels are used when a file of the same
///   name with `labels-idx1` instead of `images-idx3` (with or without `.gz`) lies beside it.
///   The split is ignored.
/// - a directory holding `train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]`
///   (or `t10k-...` for the test split): MNIST, or Fashion-MNIST when the directory's name
///   or its parent's name contains "fashion" (case-insensitive; e.g. `fashion-mnist/` or
///   torchvision's `FashionMNIST/raw/`). The two share the format, so only the name tells.
/// - a directory of CIFAR-10 `data_batch_{1..5}.bin` / `test_batch.bin` (or its
///   `cifar-10-batches-bin/` subfolder): the training split is the batches present, in order.
/// - a directory of CIFAR-100 `train.bin` / `test.bin` (or its `cifar-100-binary/`
///   subfolder), with fine labels.
/// - an image-folder root with `train/` and `test/` subfolders (each one subfolder per class),
///   or directly the class subfolders (then the split is ignored).
pub fn open(path: &Path, split: Split) -> Result<ImageSet> {
    if path.is_file() {
        return open_idx_file(path);
    }
    if !path.is_dir() {
        bail!("{}: no such file or directory", path.display());
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    if let Some(images) = find(path, &format!("{prefix}-images-idx3-ubyte")) {
        let Some(labels) = find(path, &format!("{prefix}-labels-idx1-ubyte")) else {
            bail!(
                "{}: no {prefix}-labels-idx1-ubyte[.gz] beside {}",
                path.display(),
                images.display()
            );
        };
        return read_idx_pair(&images, &labels, idx_kind(path));
    }
    if has_any_idx(path) {
        bail!(
            "{}: no {prefix}-images-idx3-ubyte[.gz] for this split",
            path.display()
        );
    }
    for dir in [path.to_path_buf(), path.join("cifar-10-batches-bin")] {
        let train: Vec<PathBuf> = (1..=5)
            .map(|k| dir.join(format!("data_batch_{k}.bin")))
            .filter(|p| p.is_file())
            .collect();
        let test = dir.join("test_batch.bin");
        if !train.is_empty() || test.is_file() {
            return match split {
                Split::Train if train.is_empty() => {
                    bail!("{}: no data_batch_{{1..5}}.bin", dir.display())
                }
                Split::Train => read_cifar10(&train),
                Split::Test if !test.is_file() => bail!("{}: no test_batch.bin", dir.display()),
                Split::Test => read_cifar10(&[test]),
            };
        }
    }
    for dir in [path.to_path_buf(), path.join("cifar-100-binary")] {
        let (train, test) = (dir.join("train.bin"), dir.join("test.bin"));
        if train.is_file() || test.is_file() {
            let file = if split == Split::Train { train } else { test };
            if !file.is_file() {
                bail!("{}: missing", file.display());
            }
            return read_cifar100(&[file], Cifar100Label::Fine);
        }
    }
    let (train, test) = (path.join("train"), path.join("test"));
    if train.is_dir() && test.is_dir() {
        return read_image_folder(if split == Split::Train { &train } else { &test });
    }
    if !class_dirs(path)?.is_empty() {
        return read_image_folder(path);
    }
    bail!(
        "{}: not a recognised dataset (expected IDX train/t10k files, CIFAR-10/100 .bin \
         batches, or an image folder with class subfolders)",
        path.display()
    )
}

/// `dir/name.gz` or `dir/name`, whichever exists (gzip first).
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn has_any_idx(dir: &Path) -> bool {
    ["train", "t10k"]
        .iter()
        .any(|p| find(dir, &format!("{p}-images-idx3-ubyte")).is_some())
}

/// Fashion-MNIST if the directory or its parent is named like it, else MNIST.
fn idx_kind(dir: &Path) -> DatasetKind {
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let named_fashion = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .is_some_and(|n| n.to_string_lossy().to_lowercase().contains("fashion"))
    };
    if named_fashion(Some(&abs)) || named_fashion(abs.parent()) {
        DatasetKind::FashionMnist
    } else {
        DatasetKind::Mnist
    }
}

fn open_idx_file(path: &Path) -> Result<ImageSet> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dir = path.parent().unwrap_or(Path::new("."));
    let labels = name.contains("images-idx3").then(|| {
        let base = name.replace("images-idx3", "labels-idx1");
        let base = base.strip_suffix(".gz").unwrap_or(&base).to_string();
        find(dir, &base)
    });
    match labels.flatten() {
        Some(l) => read_idx_pair(path, &l, idx_kind(dir)),
        None => {
            let mut set = read_idx_images(path)?;
            set.kind = idx_kind(dir);
            Ok(set)
        }
    }
}
