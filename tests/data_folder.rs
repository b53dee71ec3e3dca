//! Image folders on the committed PNG/JPEG fixtures, and size-mismatch errors.

mod common;
use common::{data_fx, fixture_pixel};

use memprune::data::folder::read_image_folder;
use memprune::data::{open, DatasetKind, Split};

#[test]
fn rgb_folder_with_splits() {
    let root = data_fx().join("folder");
    let train = open(&root, Split::Train).unwrap();
    assert_eq!(train.kind, DatasetKind::Folder);
    // cat/a.png, cat/b.png, dog/a.png, dog/c.jpg (notes.txt skipped)
    assert_eq!(
        (train.len(), train.channels, train.height, train.width),
        (4, 3, 3, 4)
    );
    assert_eq!(train.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
    assert_eq!(
        train.class_names.as_deref(),
        Some(&["cat".to_string(), "dog".to_string()][..])
    );
    for (i, (label, k)) in [(0, 0), (0, 1), (1, 0)].into_iter().enumerate() {
        let img = train.image(i);
        for c in 0..3 {
            for y in 0..3 {
                for x in 0..4 {
                    assert_eq!(img[(c * 3 + y) * 4 + x], fixture_pixel(label, k, c, y, x));
                }
            }
        }
    }
    let test = open(&root, Split::Test).unwrap();
    assert_eq!(test.len(), 2);
    assert_eq!(test.image(1)[5], fixture_pixel(1, 5, 0, 1, 1));
}

#[test]
fn grayscale_folder_without_splits() {
    let root = data_fx().join("gray");
    // No test split: the training images are not unseen points.
    let e = open(&root, Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("--holdout F") && e.contains("--test-data DIR"),
        "{e}"
    );
    let set = open(&root, Split::Train).unwrap();
    assert_eq!(
        (set.len(), set.channels, set.height, set.width),
        (2, 1, 5, 5)
    );
    assert_eq!(set.labels.as_deref(), Some(&[0, 1][..]));
    assert_eq!(set.image(1)[2 * 5 + 3], fixture_pixel(1, 0, 0, 2, 3));
}

#[test]
fn mixed_gray_and_rgb_is_rgb_and_size_mismatch_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    image::GrayImage::from_pixel(2, 2, image::Luma([10]))
        .save(a.join("g.png"))
        .unwrap();
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
        .save(b.join("c.png"))
        .unwrap();
    let set = read_image_folder(dir.path()).unwrap();
    assert_eq!(set.channels, 3);
    assert_eq!(set.image(0), &[10; 12][..]);
    assert_eq!(set.image(1), &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3][..]);

    image::RgbImage::from_pixel(3, 2, image::Rgb([0, 0, 0]))
        .save(b.join("wide.png"))
        .unwrap();
    let e = format!("{:#}", read_image_folder(dir.path()).unwrap_err());
    assert!(
        e.contains("wide.png") && e.contains("3x2, expected 2x2"),
        "{e}"
    );

    std::fs::write(b.join("wide.png"), b"not a png").unwrap();
    let e = format!("{:#}", read_image_folder(dir.path()).unwrap_err());
    assert!(e.contains("wide.png") && e.contains("cannot decode"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    assert!(read_image_folder(empty.path()).is_err());
}
