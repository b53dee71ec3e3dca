//! The SSL augmentation: reproducibility, torchvision semantics on hand-checked cases,
//! and config validation.

use std::path::PathBuf;

use memprune::data::augment::{
    clean, clean_batch, sample_crop, sample_params, view, views_batch, AugmentConfig, CropBox,
};
use memprune::data::rng::Rng;
use memprune::data::{open, ImageSet, Normalization, Split};

mod common;

fn cifar() -> ImageSet {
    let root = common::data_fx().join("cifar10");
    open(&root, Split::Train).unwrap()
}

fn fashion_small() -> ImageSet {
    let root: PathBuf = common::asset("fashion-mnist");
    let mut set = open(&root, Split::Test).unwrap();
    set.pixels.truncate(8 * 28 * 28);
    set
}

fn tiny(channels: usize, h: usize, w: usize, pixels: Vec<u8>) -> ImageSet {
    common::image_set(channels, h, w, pixels, None)
}

fn pools() -> (rayon::ThreadPool, rayon::ThreadPool) {
    let p1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let p2 = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    (p1, p2)
}

#[test]
fn views_are_identical_across_thread_counts_batches_and_orders() {
    for (set, size) in [(cifar(), Some(24)), (fashion_small(), None)] {
        let cfg = AugmentConfig {
            size,
            ..AugmentConfig::default()
        };
        let norm = Normalization::default_for(set.kind, set.channels);
        let items: Vec<(usize, u64)> = (0..set.len())
            .flat_map(|p| (0..6u64).map(move |v| (p, v)))
            .collect();
        let (p1, p2) = pools();
        let a = p1.install(|| views_batch(&cfg, &norm, &set, &items, 7));
        let b = p2.install(|| views_batch(&cfg, &norm, &set, &items, 7));
        assert_eq!(a, b, "1 vs 2 threads");
        let len = cfg.view_len(&set);
        // Reversed order and a different batch composition give the same views.
        let rev: Vec<_> = items.iter().rev().cloned().collect();
        let c = p2.install(|| views_batch(&cfg, &norm, &set, &rev, 7));
        for (k, chunk) in c.chunks(len).enumerate() {
            assert_eq!(
                chunk,
                &a[(items.len() - 1 - k) * len..(items.len() - k) * len]
            );
        }
        let some = [items[5], items[1]];
        let d = views_batch(&cfg, &norm, &set, &some, 7);
        assert_eq!(&d[..len], &a[5 * len..6 * len]);
        assert_eq!(&d[len..], &a[len..2 * len]);
        // And the single-view function agrees.
        let mut one = vec![0f32; len];
        view(&cfg, &norm, &set, items[3].0, 7, items[3].1, &mut one);
        assert_eq!(one, &a[3 * len..4 * len]);
    }
}

#[test]
fn seed_point_and_view_all_change_the_view() {
    // Two identical images: only the point index differs.
    let img: Vec<u8> = (0..3 * 16 * 16).map(|i| (i * 7 % 251) as u8).collect();
    let set = tiny(3, 16, 16, [img.clone(), img].concat());
    let cfg = AugmentConfig::default();
    let norm = Normalization::default_for(set.kind, 3);
    let v = |p: usize, seed: u64, vi: u64| {
        let mut out = vec![0f32; cfg.view_len(&set)];
        view(&cfg, &norm, &set, p, seed, vi, &mut out);
        out
    };
    let base = v(0, 1, 0);
    assert_eq!(base, v(0, 1, 0));
    assert_ne!(base, v(1, 1, 0), "point");
    assert_ne!(base, v(0, 2, 0), "seed");
    assert_ne!(base, v(0, 1, 1), "view");
    // Parameters (the random part) differ too, across many views.
    let crops: std::collections::HashSet<_> = (0..50)
        .map(|k| {
            let c = sample_params(&cfg, 16, 16, 1, 0, k).crop;
            (c.top, c.left, c.height, c.width)
        })
        .collect();
    assert!(crops.len() > 30, "only {} distinct crops", crops.len());
}

#[test]
fn clean_at_native_size_is_exactly_the_normalised_image() {
    for set in [cifar(), fashion_small()] {
        let cfg = AugmentConfig::default();
        let norm = Normalization::default_for(set.kind, set.channels);
        let plane = set.height * set.width;
        let mut out = vec![0f32; cfg.view_len(&set)];
        for p in 0..set.len() {
            clean(&cfg, &norm, &set, p, &mut out);
            let expect: Vec<f32> = set
                .image(p)
                .iter()
                .enumerate()
                .map(|(k, &b)| (b as f32 / 255.0 - norm.mean[k / plane]) / norm.std[k / plane])
                .collect();
            assert_eq!(out, expect);
        }
        let batch = clean_batch(&cfg, &norm, &set, &[1, 0]);
        clean(&cfg, &norm, &set, 0, &mut out);
        assert_eq!(&batch[out.len()..], &out[..]);
    }
}

#[test]
fn full_crop_with_flip_is_the_mirrored_image() {
    let set = cifar();
    let cfg = AugmentConfig {
        crop_scale: (1.0, 1.0),
        crop_ratio: (1.0, 1.0),
        flip_p: 1.0,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        ..AugmentConfig::default()
    };
    let norm = Normalization::identity(3);
    let mut out = vec![0f32; cfg.view_len(&set)];
    for vi in 0..5 {
        view(&cfg, &norm, &set, 1, 3, vi, &mut out);
        let img = set.image(1);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let src = img[(c * 32 + y) * 32 + (31 - x)] as f32 / 255.0;
                    assert_eq!(out[(c * 32 + y) * 32 + x], src);
                }
            }
        }
    }
}

#[test]
fn bilinear_upscale_uses_half_pixel_centres() {
    // 1 channel, 2x2 -> 4x4. PyTorch interpolate(bilinear, align_corners=False) of a row
    // [0, 1] at 4 samples is [0, 0.25, 0.75, 1].
    let set = tiny(1, 2, 2, vec![0, 255, 0, 255]);
    let cfg = AugmentConfig {
        size: Some(4),
        ..AugmentConfig::identity()
    };
    let mut out = vec![0f32; 16];
    clean(&cfg, &Normalization::identity(1), &set, 0, &mut out);
    for row in out.chunks(4) {
        assert_eq!(row, &[0.0, 0.25, 0.75, 1.0]);
    }
    // Downscale 4x4 -> 2x2 without antialias samples at 0.5 and 2.5: the mean of pixels
    // (0, 1) and (2, 3) in each direction.
    let set = tiny(1, 4, 4, (0..16).map(|i| i as u8 * 10).collect());
    let cfg = AugmentConfig {
        size: Some(2),
        ..AugmentConfig::identity()
    };
    let mut out = vec![0f32; 4];
    clean(&cfg, &Normalization::identity(1), &set, 0, &mut out);
    let expect = [25.0f32, 45.0, 105.0, 125.0].map(|v| v / 255.0);
    for (o, e) in out.iter().zip(expect) {
        assert!((o - e).abs() < 1e-6, "{out:?} vs {expect:?}");
    }
}

#[test]
fn crop_sampling_follows_torchvision() {
    let mut rng = Rng::from_key(&[1, 2, 3]);
    for _ in 0..2000 {
        let c = sample_crop(&mut rng, 28, 20, (0.08, 1.0), (0.75, 4.0 / 3.0));
        assert!(c.height >= 1 && c.width >= 1);
        assert!(c.top + c.height <= 28 && c.left + c.width <= 20, "{c:?}");
    }
    // Scale too small for any whole pixel: 10 failed tries, then the central fallback.
    let c = sample_crop(&mut rng, 28, 28, (1e-4, 1e-4), (0.75, 4.0 / 3.0));
    assert_eq!(
        c,
        CropBox {
            top: 0,
            left: 0,
            height: 28,
            width: 28
        }
    );
    // Fallback on a wide image clamps to the largest allowed ratio, centred.
    let c = sample_crop(&mut rng, 10, 40, (1e-4, 1e-4), (0.75, 4.0 / 3.0));
    assert_eq!(
        c,
        CropBox {
            top: 0,
            left: 13,
            height: 10,
            width: 13
        }
    );
}

#[test]
fn jitter_on_grayscale_is_brightness_and_contrast_only() {
    let set = fashion_small();
    let norm = Normalization::default_for(set.kind, 1);
    let base = AugmentConfig {
        jitter_p: 1.0,
        grayscale_p: 1.0,
        ..AugmentConfig::identity()
    };
    let only_colour = AugmentConfig {
        brightness: 0.0,
        contrast: 0.0,
        ..base.clone()
    };
    let mut a = vec![0f32; 784];
    let mut b = vec![0f32; 784];
    view(&only_colour, &norm, &set, 2, 0, 0, &mut a);
    clean(&only_colour, &norm, &set, 2, &mut b);
    assert_eq!(
        a, b,
        "saturation, hue and grayscale must be no-ops on 1 channel"
    );
    // Brightness only: clamp(x * f), f from the drawn parameters.
    let bright = AugmentConfig {
        brightness: 0.4,
        ..only_colour.clone()
    };
    bright.validate().unwrap();
    let f = sample_params(&bright, 28, 28, 0, 2, 0)
        .jitter
        .unwrap()
        .brightness
        .unwrap();
    assert!((0.6..=1.4).contains(&f));
    view(&bright, &Normalization::identity(1), &set, 2, 0, 0, &mut a);
    for (o, &p) in a.iter().zip(set.image(2)) {
        assert_eq!(*o, (p as f32 / 255.0 * f).clamp(0.0, 1.0));
    }
}

#[test]
fn grayscale_replicates_luma_and_jitter_stays_in_range() {
    let set = cifar();
    let cfg = AugmentConfig {
        grayscale_p: 1.0,
        ..AugmentConfig::default()
    };
    let norm = Normalization::identity(3);
    let mut out = vec![0f32; cfg.view_len(&set)];
    view(&cfg, &norm, &set, 0, 9, 0, &mut out);
    let (r, rest) = out.split_at(1024);
    let (g, b) = rest.split_at(1024);
    assert_eq!(r, g);
    assert_eq!(g, b);
    // Strong jitter (hue included) keeps values in [0, 1] before normalisation.
    let cfg = AugmentConfig {
        jitter_p: 1.0,
        hue: 0.5,
        brightness: 0.9,
        ..AugmentConfig::default()
    };
    for vi in 0..20 {
        view(&cfg, &norm, &set, 1, 9, vi, &mut out);
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn config_defaults_serde_and_validation() {
    let d = AugmentConfig::default();
    d.validate().unwrap();
    assert_eq!(
        (d.flip_p, d.jitter_p, d.grayscale_p, d.hue),
        (0.5, 0.8, 0.2, 0.1)
    );
    let c: AugmentConfig = serde_json::from_str(r#"{"flip_p": 0.0, "size": 16}"#).unwrap();
    assert_eq!(
        c,
        AugmentConfig {
            flip_p: 0.0,
            size: Some(16),
            ..AugmentConfig::default()
        }
    );
    assert!(serde_json::from_str::<AugmentConfig>(r#"{"flip": 0.0}"#).is_err());
    let round: AugmentConfig = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(round, d);

    let bad = |c: AugmentConfig, needle: &str| {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{e} should mention {needle}");
    };
    bad(
        AugmentConfig {
            flip_p: 1.5,
            ..d.clone()
        },
        "flip_p",
    );
    bad(
        AugmentConfig {
            grayscale_p: -0.1,
            ..d.clone()
        },
        "grayscale_p",
    );
    bad(
        AugmentConfig {
            crop_scale: (0.0, 1.0),
            ..d.clone()
        },
        "crop_scale",
    );
    bad(
        AugmentConfig {
            crop_scale: (0.9, 0.5),
            ..d.clone()
        },
        "crop_scale",
    );
    bad(
        AugmentConfig {
            crop_scale: (0.5, 1.1),
            ..d.clone()
        },
        "crop_scale",
    );
    bad(
        AugmentConfig {
            crop_ratio: (2.0, 1.0),
            ..d.clone()
        },
        "crop_ratio",
    );
    bad(
        AugmentConfig {
            hue: 0.6,
            ..d.clone()
        },
        "hue",
    );
    bad(
        AugmentConfig {
            contrast: -1.0,
            ..d.clone()
        },
        "contrast",
    );
    bad(
        AugmentConfig {
            brightness: f32::NAN,
            ..d.clone()
        },
        "brightness",
    );
    bad(
        AugmentConfig {
            size: Some(0),
            ..d.clone()
        },
        "size",
    );
}

/// The same CASES as tests/fixtures/data/make_torchvision_ref.py, checked against
/// torchvision 0.29's functional ops (float tensors, antialias=False). Tolerance 5e-4:
/// torchvision's tensor grayscale uses 0.2989 for red where memprune (and PIL) use 0.299.
#[test]
fn matches_torchvision_on_fixed_parameters() {
    use memprune::data::augment::{render, Jitter, ViewParams};
    use memprune::data::npy::read_npy_f32;
    let (shape, reference) =
        read_npy_f32(&common::data_fx().join("torchvision_views.npy")).unwrap();
    assert_eq!(shape, vec![5, 3, 20, 20]);
    let j = |order: [u8; 4], b, c, s, h| {
        Some(Jitter {
            order,
            brightness: b,
            contrast: c,
            saturation: s,
            hue: h,
        })
    };
    let crop = |top, left, height, width| CropBox {
        top,
        left,
        height,
        width,
    };
    let cases = [
        ViewParams {
            crop: crop(3, 5, 20, 14),
            flip: true,
            jitter: j([3, 0, 2, 1], Some(1.2), Some(0.7), Some(1.3), Some(0.08)),
            grayscale: false,
        },
        ViewParams {
            crop: crop(0, 0, 32, 32),
            flip: false,
            jitter: j([1, 3, 0, 2], Some(0.8), Some(1.3), Some(0.6), Some(-0.1)),
            grayscale: true,
        },
        ViewParams {
            crop: crop(10, 2, 9, 12),
            flip: true,
            jitter: None,
            grayscale: false,
        },
        ViewParams {
            crop: crop(4, 4, 24, 24),
            flip: false,
            jitter: j([3, 2, 1, 0], None, None, None, Some(-0.45)),
            grayscale: false,
        },
        ViewParams {
            crop: crop(0, 6, 26, 20),
            flip: false,
            jitter: j([2, 1, 0, 3], Some(1.35), Some(0.6), Some(0.0), Some(0.3)),
            grayscale: false,
        },
    ];
    let set = cifar();
    let mut out = vec![0f32; 3 * 20 * 20];
    for (k, p) in cases.iter().enumerate() {
        render(p, &Normalization::identity(3), &set, 1, 20, &mut out);
        let expect = &reference[k * 1200..(k + 1) * 1200];
        let worst = out
            .iter()
            .zip(expect)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 5e-4,
            "case {k}: max |memprune - torchvision| = {worst}"
        );
    }
}

#[test]
fn images_taller_than_wide_are_measured_on_square_views_of_the_shorter_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::idx_folder(dir.path(), "tall", 12, 20, 16);
    let set = memprune::data::open(&data, memprune::data::Split::Train).unwrap();
    let settings = memprune::measure::ViewSettings {
        augment: Default::default(),
        normalization: memprune::data::Normalization::default_for(set.kind, 1),
        seed: 0,
        batch: 8,
    };
    let x = settings.views(&set, &[(0, 0), (3, 1)]).unwrap();
    assert_eq!(x.dims(), [2, 1, 16, 16]);
    let json = dir.path().join("u.json");
    common::ok(&common::memprune(&[
        "measure",
        "unit",
        common::s(&common::parity("resnet9_c1.safetensors")),
        "--data",
        common::s(&data),
        "--points",
        "4",
        "--views",
        "2",
        "-q",
        "--json",
        common::s(&json),
    ]));
    assert!(common::json(&json)["layers"].as_array().unwrap().len() > 5);
}

/// f and g recorded with different augmentations: refused with the flag to set, unless
/// `--augment` chooses.
#[test]
fn a_pair_with_different_recorded_augmentations_is_refused_unless_given() {
    let f = "assets/models/resnet9-simclr-f.safetensors";
    let g = "assets/models/resnet9-supervised.safetensors";
    let args = ["measure", "layer", f, "--reference", g, "--points", "2"];
    common::refused(
        &common::memprune(&args),
        &[g, "another augmentation", "--augment"],
    );
    let dir = tempfile::tempdir().unwrap();
    let aug = dir.path().join("aug.yaml");
    std::fs::write(&aug, "crop_scale: [0.2, 1.0]\njitter_p: 0.0\n").unwrap();
    let mut with = args.to_vec();
    with.extend(["--augment", aug.to_str().unwrap()]);
    let r = common::memprune(&with);
    let err = String::from_utf8_lossy(&r.stderr);
    // Past the augmentation (this pair is then refused for its splits).
    assert!(!err.contains("augmentation"), "{err}");
}
