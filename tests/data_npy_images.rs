//! NumPy image arrays as a data folder (`train_images.npy`, `train_labels.npy`, ...).

use memprune::data::npy::{npy_bytes_i64, npy_bytes_u8};
use memprune::data::open::open;
use memprune::data::Split;
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: Vec<u8>) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn color_arrays_are_read_planar_with_their_labels() {
    let d = tempfile::tempdir().unwrap();
    // Two 1x2 RGB images; pixel (y, x) channel c of image i = 100 i + 10 x + c.
    let mut hwc = Vec::new();
    for i in 0..2u8 {
        for x in 0..2u8 {
            for c in 0..3u8 {
                hwc.push(100 * i + 10 * x + c);
            }
        }
    }
    write(
        d.path(),
        "train_images.npy",
        npy_bytes_u8(&[2, 1, 2, 3], &hwc).unwrap(),
    );
    write(
        d.path(),
        "train_labels.npy",
        npy_bytes_i64(&[2], &[7, 3]).unwrap(),
    );
    let set = open(d.path(), Split::Train).unwrap();
    assert_eq!(
        (set.len(), set.channels, set.height, set.width),
        (2, 3, 1, 2)
    );
    assert_eq!(
        set.pixels,
        vec![0, 10, 1, 11, 2, 12, 100, 110, 101, 111, 102, 112]
    );
    assert_eq!(set.labels, Some(vec![7, 3]));
    assert_eq!(set.names.get(1).as_deref(), Some("train_images.npy#1"));
}

#[test]
fn grayscale_arrays_take_uint8_labels_and_the_test_split() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "train_images.npy",
        npy_bytes_u8(&[3, 2, 2], &[9; 12]).unwrap(),
    );
    let px: Vec<u8> = (0..8).collect();
    write(
        d.path(),
        "test_images.npy",
        npy_bytes_u8(&[2, 2, 2], &px).unwrap(),
    );
    write(
        d.path(),
        "test_labels.npy",
        npy_bytes_u8(&[2], &[1, 0]).unwrap(),
    );
    let train = open(d.path(), Split::Train).unwrap();
    assert_eq!(
        (train.len(), train.channels, train.labels.clone()),
        (3, 1, None)
    );
    let test = open(d.path(), Split::Test).unwrap();
    assert_eq!(test.pixels, px);
    assert_eq!(test.labels, Some(vec![1, 0]));
}

fn error_of(dir: &Path, split: Split) -> String {
    format!("{:#}", open(dir, split).unwrap_err())
}

#[test]
fn bad_arrays_are_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "train_images.npy",
        npy_bytes_u8(&[2, 1, 1, 2], &[0; 4]).unwrap(),
    );
    let e = error_of(d.path(), Split::Train);
    assert!(
        e.contains("train_images.npy") && e.contains("2 channels"),
        "{e}"
    );

    write(
        d.path(),
        "train_images.npy",
        npy_bytes_u8(&[2, 1, 1], &[0; 2]).unwrap(),
    );
    write(
        d.path(),
        "train_labels.npy",
        npy_bytes_i64(&[3], &[0, 1, 2]).unwrap(),
    );
    let e = error_of(d.path(), Split::Train);
    assert!(
        e.contains("train_labels.npy") && e.contains("one label per image"),
        "{e}"
    );

    write(
        d.path(),
        "train_labels.npy",
        npy_bytes_i64(&[2], &[0, -1]).unwrap(),
    );
    let e = error_of(d.path(), Split::Train);
    assert!(
        e.contains("train_labels.npy") && e.contains("label -1"),
        "{e}"
    );

    let e = error_of(d.path(), Split::Test);
    assert!(e.contains("no test_images.npy"), "{e}");

    let f32_bytes = memprune::data::npy::npy_bytes_f32(&[1, 1, 1], &[0.5]).unwrap();
    write(d.path(), "train_images.npy", f32_bytes);
    let e = error_of(d.path(), Split::Train);
    assert!(e.contains("train_images.npy") && e.contains("<f4"), "{e}");
}
