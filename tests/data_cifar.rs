//! CIFAR-10/100 binary batches on the tiny committed fixtures.

mod common;
use common::{data_fx, fixture_pixel};

use memprune::data::cifar::{read_cifar10, read_cifar100, Cifar100Label};
use memprune::data::{open, DatasetKind, Split};

#[test]
fn cifar10_dir_and_subfolder() {
    for root in [
        data_fx().join("cifar10"),
        data_fx().join("cifar10/cifar-10-batches-bin"),
    ] {
        let train = open(&root, Split::Train).unwrap();
        assert_eq!(train.kind, DatasetKind::Cifar10);
        assert_eq!(
            (train.len(), train.channels, train.height, train.width),
            (2, 3, 32, 32)
        );
        assert_eq!(train.labels.as_deref(), Some(&[3, 7][..]));
        assert_eq!(train.class_names.as_ref().unwrap()[3], "cat");
        // Planar CHW, straight from the record.
        let img = train.image(1);
        assert_eq!(img[(2 * 32 + 5) * 32 + 9], fixture_pixel(7, 1, 2, 5, 9));
        assert_eq!(img[0], fixture_pixel(7, 1, 0, 0, 0));
        let test = open(&root, Split::Test).unwrap();
        assert_eq!(test.labels.as_deref(), Some(&[0][..]));
    }
}

#[test]
fn cifar10_several_batches_concatenate() {
    let d = data_fx().join("cifar10/cifar-10-batches-bin");
    let set = read_cifar10(&[d.join("data_batch_1.bin"), d.join("test_batch.bin")]).unwrap();
    assert_eq!(set.labels.as_deref(), Some(&[3, 7, 0][..]));
    assert_eq!(set.image(2)[100], fixture_pixel(0, 0, 0, 3, 4));
}

#[test]
fn cifar100_fine_and_coarse() {
    let root = data_fx().join("cifar100");
    let train = open(&root, Split::Train).unwrap();
    assert_eq!(train.kind, DatasetKind::Cifar100);
    assert_eq!(train.labels.as_deref(), Some(&[42, 99][..]));
    assert_eq!(train.image(0)[3 * 32 + 1], fixture_pixel(42, 0, 0, 3, 1));
    let coarse = read_cifar100(&[root.join("train.bin")], Cifar100Label::Coarse).unwrap();
    assert_eq!(coarse.labels.as_deref(), Some(&[4, 19][..]));
    assert_eq!(coarse.pixels, train.pixels);
    assert_eq!(
        open(&root, Split::Test).unwrap().labels.as_deref(),
        Some(&[5][..])
    );
}

#[test]
fn bad_sizes_and_labels_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_batch_1.bin");
    std::fs::write(&p, vec![0u8; 3073 + 10]).unwrap();
    let e = format!("{:#}", read_cifar10(std::slice::from_ref(&p)).unwrap_err());
    assert!(
        e.contains("data_batch_1.bin") && e.contains("not a multiple of the 3073-byte"),
        "{e}"
    );
    // A CIFAR-100 file read as CIFAR-10 (a size that happens to fit) trips the label check.
    let mut rec = vec![0u8; 3073];
    rec[0] = 55;
    std::fs::write(&p, &rec).unwrap();
    let e = format!("{:#}", read_cifar10(&[p]).unwrap_err());
    assert!(e.contains("label 55 out of range"), "{e}");
    // Missing test batch.
    let e = format!("{:#}", open(dir.path(), Split::Test).unwrap_err());
    assert!(e.contains("test_batch.bin"), "{e}");
}

#[test]
fn cifar100_binary_subfolder_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(data_fx().join("cifar100/train.bin"), sub.join("train.bin")).unwrap();
    let set = open(tmp.path(), Split::Train).unwrap();
    assert_eq!(set.labels.as_deref(), Some(&[42, 99][..]));
    let e = format!("{:#}", open(tmp.path(), Split::Test).unwrap_err());
    assert!(e.contains("test.bin"), "{e}");
}
