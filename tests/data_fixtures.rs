//! The generator of the tiny committed fixtures in tests/fixtures/data/ (their pixel formula:
//! `common::fixture_pixel`).
//!
//! Regenerate with `cargo test --test data_fixtures -- --ignored make_fixtures`.

use std::path::Path;

mod common;
use common::{data_fx, fixture_pixel};

fn cifar_records(label_bytes: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, lb) in label_bytes.iter().enumerate() {
        out.extend_from_slice(lb);
        let label = *lb.last().unwrap() as usize;
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(fixture_pixel(label, k, c, y, x));
                }
            }
        }
    }
    out
}

fn png_rgb(path: &Path, label: usize, k: usize, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([0, 1, 2].map(|c| fixture_pixel(label, k, c, y as usize, x as usize)))
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn png_gray(path: &Path, label: usize, k: usize, w: u32, h: u32) {
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([fixture_pixel(label, k, 0, y as usize, x as usize)])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

#[test]
#[ignore]
fn make_fixtures() {
    let root = data_fx();
    let c10 = root.join("cifar10/cifar-10-batches-bin");
    std::fs::create_dir_all(&c10).unwrap();
    std::fs::write(c10.join("data_batch_1.bin"), cifar_records(&[&[3], &[7]])).unwrap();
    std::fs::write(c10.join("test_batch.bin"), cifar_records(&[&[0]])).unwrap();
    let c100 = root.join("cifar100");
    std::fs::create_dir_all(&c100).unwrap();
    std::fs::write(
        c100.join("train.bin"),
        cifar_records(&[&[4, 42], &[19, 99]]),
    )
    .unwrap();
    std::fs::write(c100.join("test.bin"), cifar_records(&[&[0, 5]])).unwrap();
    // RGB folder with train/test splits: classes "cat" (0) and "dog" (1), 4 wide x 3 high.
    let f = root.join("folder");
    png_rgb(&f.join("train/cat/a.png"), 0, 0, 4, 3);
    png_rgb(&f.join("train/cat/b.png"), 0, 1, 4, 3);
    png_rgb(&f.join("train/dog/a.png"), 1, 0, 4, 3);
    png_rgb(&f.join("test/cat/z.png"), 0, 5, 4, 3);
    png_rgb(&f.join("test/dog/z.png"), 1, 5, 4, 3);
    let jpg = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 128]));
    jpg.save(f.join("train/dog/c.jpg")).unwrap();
    std::fs::write(f.join("train/dog/notes.txt"), "not an image\n").unwrap();
    // Grayscale folder without splits.
    let g = root.join("gray");
    png_gray(&g.join("one/x.png"), 0, 0, 5, 5);
    png_gray(&g.join("two/y.png"), 1, 0, 5, 5);
}

/// The committed CIFAR fixtures are what the generator writes.
#[test]
fn cifar_fixtures_match_generator() {
    let c10 = data_fx().join("cifar10/cifar-10-batches-bin");
    assert_eq!(
        std::fs::read(c10.join("data_batch_1.bin")).unwrap(),
        cifar_records(&[&[3], &[7]])
    );
    let c100 = data_fx().join("cifar100");
    assert_eq!(
        std::fs::read(c100.join("test.bin")).unwrap(),
        cifar_records(&[&[0, 5]])
    );
}
