//! The linear probe: deterministic, and well above chance on separable data.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::data::{ImageSet, Normalization};

mod common;
use memprune::eval::probe::{fit, probe_accuracy, raw_pixel_accuracy, ProbeSettings};
use memprune::model::{Encoder, LoadOptions};
use std::path::Path;

/// Two Gaussian blobs in 5-d, `n` points each.
fn blobs(n: usize, key: u64) -> (Tensor, Vec<u32>) {
    let mut r = memprune::data::rng::Rng::from_key(&[key]);
    let mut v = Vec::new();
    let mut y = Vec::new();
    for i in 0..2 * n {
        let k = (i % 2) as u32;
        for d in 0..5 {
            let centre = if d == 0 { 2.0 * k as f64 - 1.0 } else { 0.0 };
            v.push((centre + r.uniform(-1.0, 1.0)) as f32);
        }
        y.push(k);
    }
    (Tensor::from_vec(v, (2 * n, 5), &Device::Cpu).unwrap(), y)
}

#[test]
fn probe_is_deterministic_and_beats_chance_on_separable_features() {
    let (xtr, ytr) = blobs(100, 1);
    let (xte, yte) = blobs(50, 2);
    let s = ProbeSettings {
        steps: 300,
        ..ProbeSettings::default()
    };
    let a = fit(&xtr, &ytr, &xte, &yte, &s).unwrap();
    let b = fit(&xtr, &ytr, &xte, &yte, &s).unwrap();
    assert_eq!(a.test_accuracy, b.test_accuracy);
    assert_eq!(a.final_loss, b.final_loss);
    assert!(a.test_accuracy > 0.9, "{a:?}");
    assert_eq!((a.classes, a.features, a.test_points), (2, 5, 100));
}

fn images(n: usize, key: u64) -> ImageSet {
    let s = 8;
    let mut r = memprune::data::rng::Rng::from_key(&[key]);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let k = (i % 2) as u32;
        labels.push(k);
        for y in 0..s {
            for _x in 0..s {
                let on = (k == 0) == (y < s / 2);
                pixels.push(((if on { 190 } else { 40 }) + r.below(50) as i32 - 25) as u8);
            }
        }
    }
    common::gray_set(pixels, labels, s)
}

#[test]
fn encoder_and_raw_pixel_probes_work_on_a_tiny_image_set() {
    let (train, test) = (images(60, 3), images(30, 4));
    let t = memprune::model::resnet9_init::resnet9(1, &[4, 8, 8, 8, 8, 16, 16, 16], 0).unwrap();
    let enc = Encoder::from_checkpoint(
        Checkpoint::from_tensors(Path::new("<init>"), t, Default::default()),
        &LoadOptions::default(),
    )
    .unwrap();
    let s = ProbeSettings {
        steps: 200,
        normalization: Some(Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        }),
        ..ProbeSettings::default()
    };
    let a = probe_accuracy(&enc, &train, &test, &s).unwrap();
    let b = probe_accuracy(&enc, &train, &test, &s).unwrap();
    assert_eq!(a.test_accuracy, b.test_accuracy);
    assert!(a.test_accuracy > 0.8, "{a:?}");
    assert_eq!(a.features, 16);
    let raw = raw_pixel_accuracy(&train, &test, &s).unwrap();
    assert!(raw.test_accuracy > 0.9, "{raw:?}");
    assert_eq!(raw.features, 64);
}

/// `probe --device cpu` is the default; in a build without CUDA, `--device cuda` is one
/// clear line; the baselines refuse another device before any work.
#[test]
fn probe_device_option() {
    use common::{memprune, ok, refused};
    let plain = ok(&memprune(&["probe", "--steps", "20"]));
    let cpu = ok(&memprune(&["probe", "--steps", "20", "--device", "cpu"]));
    assert_eq!(plain, cpu);
    if !cfg!(feature = "cuda") {
        refused(
            &memprune(&["probe", "--steps", "20", "--device", "cuda:0"]),
            &["--device cuda:0", "--features cuda"],
        );
    }
    refused(
        &memprune(&["probe", "--raw", "--device", "gpu"]),
        &["--device gpu", "expected cpu, cuda or cuda:N"],
    );
}

/// A tiny temperature must not overflow exp(s / T) (every weight inf, every class tied at inf,
/// the lowest class winning): the nearest neighbour's class wins, as the limit T -> 0 says.
#[test]
fn knn_small_temperature_is_the_nearest_neighbour_not_an_overflow() {
    use memprune::eval::knn::{knn, KnnSettings};
    // The test point (1, 0); the nearest training point (similarity 1) has class 1, two
    // slightly farther ones (similarity ~0.995) class 0.
    let train =
        Tensor::from_vec(vec![1.0f32, 0.0, 1.0, 0.1, 1.0, -0.1], (3, 2), &Device::Cpu).unwrap();
    let test = Tensor::from_vec(vec![1.0f32, 0.0], (1, 2), &Device::Cpu).unwrap();
    for t in [0.001, 1e-6] {
        let s = KnnSettings {
            k: 3,
            temperature: t,
            ..Default::default()
        };
        let r = knn(&train, &[1, 0, 0], &test, &[1], &s).unwrap();
        assert_eq!(r.top1, 1.0, "T = {t}");
    }
}
