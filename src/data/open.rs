//! Opening a dataset from a path, whatever its format (IDX, CIFAR binary, image folders).
//!
//! Detection is by the file names the official distributions use, so that
//! `memprune --data DIR` works on a freshly unpacked download.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::cifar::{read_cifar10, read_cifar100, Cifar100Label};
use super::folder::{
    class_dirs, class_names, read_image_folder, read_image_folder_with, FolderRead,
};
use super::idx::{read_idx_images, read_idx_pair};
use super::options::{no_test_split, DataOptions};
use super::resize::Prep;
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
/// - a directory holding NumPy image arrays `train_images.npy` / `test_images.npy` (uint8,
///   N x H x W or N x H x W x C) with optional `train_labels.npy` / `test_labels.npy`
///   ([`super::npy_images`]).
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
///
/// An image folder's test split takes the training split's class list; a folder without
/// `train/` and `test/` has no test split (refused: see [`open_with`] for `--test-data` and
/// `--holdout`).
pub fn open(path: &Path, split: Split) -> Result<ImageSet> {
    open_with(path, split, &DataOptions::default())
}

/// [`open`] with the data flags: the test split from `--test-data` or a `--holdout` of a
/// folder without `train/`/`test/`, and images resized and cropped (`--resize`, `--crop`, or
/// for a folder of mixed sizes the checkpoint's input size).
pub fn open_with(path: &Path, split: Split, o: &DataOptions) -> Result<ImageSet> {
    o.validate()?;
    if let (Split::Test, Some(t)) = (split, &o.test_data) {
        return open_test_data(path, t, o);
    }
    let flat = path.is_dir() && !is_split_folder(path) && is_class_folder(path)?;
    if flat {
        let how = FolderRead {
            prep: o.prep(),
            default_size: o.default_size.clone(),
            ..Default::default()
        };
        return match (o.holdout, split) {
            (Some(f), _) => {
                let all = read_image_folder_with(path, &how)?;
                holdout(all, f, o.holdout_seed, split)
            }
            (None, Split::Train) => read_image_folder_with(path, &how),
            (None, Split::Test) => bail!(no_test_split(path)),
        };
    }
    if let Some(f) = o.holdout {
        bail!(
            "--holdout {f}: {} has its own test split (--holdout splits an image folder              without train/ and test/ subfolders)",
            path.display()
        );
    }
    if path.is_dir() && is_split_folder(path) {
        let train = path.join("train");
        let how = FolderRead {
            classes: match split {
                Split::Train => None,
                Split::Test => Some(class_names(&train)?),
            },
            base: Some(path.to_path_buf()),
            prep: o.prep(),
            default_size: o.default_size.clone(),
        };
        let dir = match split {
            Split::Train => train,
            Split::Test => path.join("test"),
        };
        return read_image_folder_with(&dir, &how);
    }
    let set = open_format(path, split)?;
    prep_set(set, o.prep())
}

/// `--test-data DIR`: an image folder labelled by the training split's class list (a
/// `train/`+`test/` folder's test/), or another format's test split.
fn open_test_data(data: &Path, t: &Path, o: &DataOptions) -> Result<ImageSet> {
    let classes = if data.is_dir() && is_split_folder(data) {
        Some(class_names(&data.join("train"))?)
    } else if data.is_dir() && is_class_folder(data)? {
        Some(class_names(data)?)
    } else {
        None
    };
    let folder = if t.is_dir() && is_split_folder(t) {
        Some(t.join("test"))
    } else if t.is_dir() && is_class_folder(t)? {
        Some(t.to_path_buf())
    } else {
        None
    };
    match folder {
        Some(dir) => read_image_folder_with(
            &dir,
            &FolderRead {
                classes,
                base: Some(t.to_path_buf()),
                prep: o.prep(),
                default_size: o.default_size.clone(),
            },
        ),
        None => prep_set(open_format(t, Split::Test)?, o.prep()),
    }
}

/// An image folder with `train/` and `test/` subfolders.
fn is_split_folder(path: &Path) -> bool {
    path.join("train").is_dir() && path.join("test").is_dir()
}

/// A folder of class subfolders (and none of the files of the other formats).
fn is_class_folder(path: &Path) -> Result<bool> {
    if has_any_idx(path)
        || [
            "data_batch_1.bin",
            "test_batch.bin",
            "train.bin",
            "test.bin",
        ]
        .iter()
        .any(|f| path.join(f).is_file())
        || ["cifar-10-batches-bin", "cifar-100-binary"]
            .iter()
            .any(|d| path.join(d).is_dir())
    {
        return Ok(false);
    }
    Ok(!class_dirs(path)?.is_empty())
}

/// The training or the held-out part of `all`: `round(f * n)` points drawn by `seed` are
/// held out (at least one, and at least one left for training).
fn holdout(all: ImageSet, f: f64, seed: u64, split: Split) -> Result<ImageSet> {
    let n = all.len();
    let k = ((f * n as f64).round() as usize).clamp(1, n.max(2) - 1);
    if n < 2 {
        bail!(
            "--holdout {f}: {} has {n} image(s), too few to split",
            all.source
        );
    }
    let held = super::Subset::random(k, crate::data::rng::hash_key(&[HOLDOUT_TAG, seed]), n)?;
    let held_set: std::collections::HashSet<usize> = held.indices.iter().copied().collect();
    let keep: Vec<usize> = match split {
        Split::Test => held.indices.clone(),
        Split::Train => (0..n).filter(|i| !held_set.contains(i)).collect(),
    };
    let mut set = all.select(&keep);
    set.notes.push(format!(
        "{} split of --holdout {f} (seed {seed}): {} of {n} images {}",
        if split == Split::Test {
            "test"
        } else {
            "training"
        },
        keep.len(),
        if split == Split::Test {
            "held out"
        } else {
            "kept for training"
        }
    ));
    Ok(set)
}

/// Tags the hold-out draw apart from other draws of the same seed.
const HOLDOUT_TAG: u64 = 0x0068_6f6c_646f_7574;

/// IDX and CIFAR images resized / cropped as asked (each image on its own).
fn prep_set(mut set: ImageSet, prep: Prep) -> Result<ImageSet> {
    if prep.is_none() {
        return Ok(set);
    }
    let (c, w, h) = (set.channels, set.width, set.height);
    let (nw, nh) = prep.output_size(w, h);
    let mut pixels = Vec::with_capacity(set.len() * c * nw * nh);
    for i in 0..set.len() {
        let (px, _, _) = prep.apply(set.image(i).to_vec(), c, w, h, &set.source)?;
        pixels.extend_from_slice(&px);
    }
    set.pixels = pixels;
    set.width = nw;
    set.height = nh;
    set.notes
        .push(format!("{} (--resize/--crop)", prep.describe()));
    Ok(set)
}

/// The formats with their own splits (IDX, CIFAR), and image folders read as stored.
fn open_format(path: &Path, split: Split) -> Result<ImageSet> {
    if path.is_file() {
        return open_idx_file(path);
    }
    if !path.is_dir() {
        if let Some(line) = crate::defaults::missing(path) {
            bail!(line);
        }
        bail!("{}: no such file or directory", path.display());
    }
    if super::npy_images::is_npy_folder(path) {
        return super::npy_images::open(path, split);
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
