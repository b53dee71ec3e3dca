//! IDX reading: the embedded Fashion-MNIST subset, gzip/plain equivalence, and errors.

use std::io::Read;
use std::path::{Path, PathBuf};

use memprune::data::idx::{read_idx_images, read_idx_labels, read_idx_pair};
use memprune::data::{open, DatasetKind, Split};

mod common;

fn assets() -> PathBuf {
    common::asset("fashion-mnist")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    let e = format!("{:#}", r.unwrap_err());
    assert!(!e.contains('\n'), "error must be one line: {e}");
    e
}

#[test]
fn embedded_train_and_test_splits() {
    let train = open(&assets(), Split::Train).unwrap();
    assert_eq!(train.len(), 10_000);
    assert_eq!((train.channels, train.height, train.width), (1, 28, 28));
    assert_eq!(train.kind, DatasetKind::FashionMnist);
    let labels = train.labels.as_ref().unwrap();
    assert_eq!(&labels[..4], &[9, 0, 0, 3]);
    assert_eq!(labels[9_999], 6);
    // First image: known byte sum and centre pixel (checked with Python).
    assert_eq!(
        train.image(0).iter().map(|&b| b as u64).sum::<u64>(),
        76_247
    );
    assert_eq!(train.image(0)[14 * 28 + 14], 217);

    let test = open(&assets(), Split::Test).unwrap();
    assert_eq!(test.len(), 2_000);
    assert_eq!(&test.labels.as_ref().unwrap()[..4], &[9, 2, 1, 1]);
}

#[test]
fn gzip_and_plain_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let gz_images = assets().join("t10k-images-idx3-ubyte.gz");
    let gz_labels = assets().join("t10k-labels-idx1-ubyte.gz");
    // Plain copies, one of them under a misleading .gz-less name: detection is by magic.
    let plain_images = dir.path().join("t10k-images-idx3-ubyte");
    let plain_labels = dir.path().join("t10k-labels-idx1-ubyte");
    std::fs::write(&plain_images, gunzip(&gz_images)).unwrap();
    std::fs::write(&plain_labels, gunzip(&gz_labels)).unwrap();
    let a = read_idx_pair(&gz_images, &gz_labels, DatasetKind::Mnist).unwrap();
    let b = read_idx_pair(&plain_images, &plain_labels, DatasetKind::Mnist).unwrap();
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(a.labels, b.labels);
    // A gzip file named without .gz is still detected.
    let disguised = dir.path().join("disguised");
    std::fs::copy(&gz_labels, &disguised).unwrap();
    assert_eq!(read_idx_labels(&disguised).unwrap(), b.labels.unwrap());
    // The temp directory is not called "fashion": MNIST.
    assert_eq!(
        open(dir.path(), Split::Test).unwrap().kind,
        DatasetKind::Mnist
    );
    // A single images file finds its labels beside it.
    let single = open(&plain_images, Split::Train).unwrap();
    assert_eq!(single.len(), 2_000);
    assert!(single.labels.is_some());
}

fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

#[test]
fn truncated_bad_magic_and_corrupt_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short-images-idx3-ubyte");
    let mut bytes = header(0x803, &[3, 2, 2]);
    bytes.extend_from_slice(&[1, 2, 3, 4, 5]); // 12 needed
    std::fs::write(&p, &bytes).unwrap();
    let e = err_of(read_idx_images(&p));
    assert!(e.contains("short-images-idx3-ubyte"), "{e}");
    assert!(e.contains("truncated: expected 28 bytes got 21"), "{e}");

    let p = dir.path().join("labels-as-images");
    std::fs::write(&p, header(0x801, &[0])).unwrap();
    let e = err_of(read_idx_images(&p));
    assert!(
        e.contains("labels-as-images") && e.contains("bad magic 0x00000801"),
        "{e}"
    );

    let p = dir.path().join("tiny");
    std::fs::write(&p, [0u8, 0]).unwrap();
    assert!(err_of(read_idx_labels(&p)).contains("truncated"));

    // A gzip stream cut in half.
    let gz = std::fs::read(assets().join("train-labels-idx1-ubyte.gz")).unwrap();
    let p = dir.path().join("cut.gz");
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let e = err_of(read_idx_labels(&p));
    assert!(e.contains("cut.gz") && e.contains("corrupt gzip"), "{e}");

    let e = err_of(read_idx_images(&dir.path().join("missing")));
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn count_mismatch_between_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("im");
    let labels = dir.path().join("lb");
    let mut b = header(0x803, &[2, 1, 1]);
    b.extend_from_slice(&[7, 8]);
    std::fs::write(&images, b).unwrap();
    let mut l = header(0x801, &[3]);
    l.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&labels, l).unwrap();
    let e = err_of(read_idx_pair(&images, &labels, DatasetKind::Mnist));
    assert!(
        e.contains("count mismatch") && e.contains("3 labels for 2 images"),
        "{e}"
    );
    assert_eq!(read_idx_images(&images).unwrap().pixels, vec![7, 8]);
}

#[test]
fn open_reports_missing_split_and_unknown_dirs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        assets().join("train-images-idx3-ubyte.gz"),
        dir.path().join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    let e = err_of(open(dir.path(), Split::Train));
    assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
    let e = err_of(open(dir.path(), Split::Test));
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(err_of(open(empty.path(), Split::Train)).contains("not a recognised dataset"));
}

#[test]
fn fashion_is_told_from_mnist_by_directory_names() {
    let tmp = tempfile::tempdir().unwrap();
    // torchvision's layout: FashionMNIST/raw/<files>; the parent's name counts.
    let raw = tmp.path().join("FashionMNIST/raw");
    let plain = tmp.path().join("mnist");
    for dir in [&raw, &plain] {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            std::fs::copy(assets().join(f), dir.join(f)).unwrap();
        }
    }
    assert_eq!(
        open(&raw, Split::Test).unwrap().kind,
        DatasetKind::FashionMnist
    );
    assert_eq!(open(&plain, Split::Test).unwrap().kind, DatasetKind::Mnist);
    let single = open(&raw.join("t10k-images-idx3-ubyte.gz"), Split::Train).unwrap();
    assert_eq!(single.kind, DatasetKind::FashionMnist);
    assert_eq!(single.labels.as_ref().unwrap()[0], 9);
}
