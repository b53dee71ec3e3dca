//! Issue 11, the bugs found by reading the code, each with its regression test: images
//! taller than wide, training through the ImageNet stem's 3x3 stride-2 max-pool,
//! `experiment prune` on f16/bf16 checkpoints, `min_keep` above a layer's size, and mask
//! mode on an f64 checkpoint.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{edited, memprune, ok, parity, s, tiny_idx, write_idx};
use std::path::{Path, PathBuf};

/// An MNIST-layout folder of `n` (and `n / 2` test) images of `h` rows x `w` columns.
fn idx_of(dir: &Path, name: &str, n: usize, h: usize, w: usize) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let px: Vec<u8> = (0..count * h * w).map(|i| (i * 37 % 251) as u8).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 2) as u8).collect();
        write_idx(
            &d.join(format!("{prefix}-images-idx3-ubyte")),
            0x803,
            &[count as u32, h as u32, w as u32],
            &px,
        );
        write_idx(
            &d.join(format!("{prefix}-labels-idx1-ubyte")),
            0x801,
            &[count as u32],
            &labels,
        );
    }
    d
}

#[test]
fn images_taller_than_wide_are_measured_on_square_views_of_the_shorter_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = idx_of(dir.path(), "tall", 12, 20, 16);
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
    ok(&memprune(&[
        "measure",
        "unit",
        s(&parity("resnet9_c1.safetensors")),
        "--data",
        s(&data),
        "--points",
        "4",
        "--views",
        "2",
        "-q",
        "--json",
        s(&json),
    ]));
    assert!(common::json(&json)["layers"].as_array().unwrap().len() > 5);
}

#[test]
fn the_imagenet_stem_trains() {
    // Images over 64 pixels get the ImageNet stem (7x7 stride 2, 3x3 stride-2 max-pool),
    // whose pool's backward candle refuses (kernel != stride).
    let dir = tempfile::tempdir().unwrap();
    let data = idx_of(dir.path(), "big", 8, 72, 72);
    let out = dir.path().join("r18.safetensors");
    let text = ok(&memprune(&[
        "train",
        "--framework",
        "simclr",
        "--arch",
        "resnet18",
        "--widths",
        "2,2,2,2",
        "--data",
        s(&data),
        "--epochs",
        "1",
        "--batch",
        "4",
        "-q",
        "--out",
        s(&out),
    ]));
    assert!(text.contains("trained 1 epochs"), "{text}");
    let inspect = ok(&memprune(&["inspect", s(&out), "--size", "72"]));
    assert!(inspect.contains("imagenet stem"), "{inspect}");
}

#[test]
fn the_stem_pool_gradient_goes_to_each_window_maximum() {
    use memprune::model::pool::max_pool2d;
    // A 1x1x5x5 input with distinct values: every output's gradient goes to the argmax of
    // its 3x3 window (stride 2, padding 1), summed where windows overlap.
    let v: Vec<f32> = (0..25).map(|i| ((i * 7) % 25) as f32).collect();
    let x = candle_core::Var::from_vec(v.clone(), (1, 1, 5, 5), &Device::Cpu).unwrap();
    let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
    assert_eq!(y.dims(), [1, 1, 3, 3]);
    let g = y.sum_all().unwrap().backward().unwrap();
    let dx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
    let mut want = vec![0f32; 25];
    for oy in 0..3 {
        for ox in 0..3 {
            let mut best = (f32::NEG_INFINITY, 0);
            for i in 0..3 {
                for j in 0..3 {
                    let (iy, ix) = ((oy * 2 + i) as isize - 1, (ox * 2 + j) as isize - 1);
                    if (0..5).contains(&iy) && (0..5).contains(&ix) {
                        let k = (iy * 5 + ix) as usize;
                        if v[k] > best.0 {
                            best = (v[k], k);
                        }
                    }
                }
            }
            want[best.1] += 1.0;
        }
    }
    assert_eq!(dx.to_vec1::<f32>().unwrap(), want);
}

#[test]
fn experiment_prune_runs_on_half_precision_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 40);
    let json = dir.path().join("t6.json");
    for ckpt in ["resnet9_c1_bf16.safetensors", "resnet9_c1.safetensors"] {
        ok(&memprune(&[
            "experiment",
            "prune",
            s(&parity(ckpt)),
            "--data",
            s(&data),
            "--points",
            "20",
            "--views",
            "2",
            "--draws",
            "1",
            "--modes",
            "mask,remove",
            "-q",
            "--json",
            s(&json),
        ]));
        let j = common::json(&json);
        assert!(j["rows"].as_array().unwrap().len() >= 6, "{ckpt}: {j}");
        std::fs::remove_file(&json).unwrap();
    }
    // The f16 encoder pruned in memory computes as the one loaded from its file.
    let c = memprune::checkpoint::Checkpoint::load(&parity("resnet9_narrow_f16.safetensors"), None)
        .unwrap();
    let mem = memprune::checkpoint::Checkpoint::from_tensors(
        Path::new("in-memory"),
        c.stored.clone(),
        Default::default(),
    );
    for (k, t) in &c.tensors {
        assert_eq!(mem.tensors[k].dtype(), t.dtype(), "{k}");
    }
    assert_eq!(mem.stored["block1.conv.weight"].dtype(), DType::F16);
}

fn plan_policy(min_keep: usize) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(
        &p,
        format!(
            "model: {}\ndata: {{points: 8}}\nmetrics: {{views: 2}}\nactions:\n  - prune: {{criterion: l1-norm, fraction: 0.25, min_keep: {min_keep}}}\nevaluation: {{speed: false, probe: false}}\n",
            s(&parity("resnet9_c1.safetensors"))
        ),
    )
    .unwrap();
    memprune(&["plan", "--policy", s(&p)])
}

#[test]
fn min_keep_larger_than_a_layer_leaves_that_layer_whole() {
    // resnet9_c1's groups: block1 8, res2 16, block3 12, block5 24, res6 32, block7 24 units.
    let text = ok(&plan_policy(20));
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // (units, removed, kept): below the floor nothing goes; above it, down to the floor.
    assert_eq!(row("block1")[1..4], ["8", "0", "8"], "{text}");
    assert_eq!(row("block3")[1..4], ["12", "0", "12"], "{text}");
    assert_eq!(row("block5")[1..4], ["24", "4", "20"], "{text}");
    assert_eq!(row("res6")[1..4], ["32", "8", "24"], "{text}");
    // A floor above every layer prunes nothing: refused, at its line.
    common::refused(
        &plan_policy(100),
        &["policy.yaml", "line 5", "min_keep = 100"],
    );
}

#[test]
fn masking_an_f64_checkpoint_keeps_the_other_rows_bit_for_bit() {
    use memprune::model::coupling::coupling_groups;
    use memprune::model::{Encoder, LoadOptions};
    use memprune::rewrite::{prune_tensors, GroupCut, PruneMode};
    let dir = tempfile::tempdir().unwrap();
    // f64 weights with bits below f32's precision, so an f32 round trip would change them.
    let p = edited(
        "resnet9_c1.safetensors",
        dir.path(),
        "f64.safetensors",
        |t, _| {
            for v in t.values_mut() {
                if v.dtype() == DType::F32 {
                    let x = v.to_dtype(DType::F64).unwrap();
                    *v = (&x + (&x * 1e-12).unwrap()).unwrap();
                }
            }
        },
    );
    let enc = Encoder::load(&p, &LoadOptions::default()).unwrap();
    let groups = coupling_groups(&enc);
    let g = groups.iter().find(|g| g.name == "block3").unwrap();
    let cut = [GroupCut {
        group: g.name.clone(),
        channels: vec![0, 5],
    }];
    let out = prune_tensors(&enc.checkpoint.stored, &groups, &cut, PruneMode::Mask).unwrap();
    let bits = |t: &Tensor| -> Vec<u64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    // Every producer of block3 (conv rows, BatchNorm entries): masked rows are 0, the
    // others keep their bits.
    for name in ["block3.conv.weight", "block3.bn.weight", "block3.bn.bias"] {
        let (w0, w1) = (&enc.checkpoint.stored[name], &out[name]);
        assert_eq!(w1.dtype(), DType::F64, "{name}");
        for row in 0..w0.dim(0).unwrap() {
            let (a, b) = (w0.get(row).unwrap(), w1.get(row).unwrap());
            if row == 0 || row == 5 {
                assert!(bits(&b).iter().all(|&x| x == 0), "{name} row {row}");
            } else {
                assert_eq!(bits(&a), bits(&b), "{name} row {row} changed");
            }
        }
    }
    // An untouched tensor is the very same.
    let t: &Tensor = &out["block1.conv.weight"];
    assert_eq!(bits(t), bits(&enc.checkpoint.stored["block1.conv.weight"]));
}

#[test]
fn a_vit_batch_of_one_image_gives_the_numbers_of_a_larger_batch() {
    // gemm's small-matrix kernel rounds differently: a ViT's lone image (the last of 5
    // points in batches of 2, or K = 1 at --batch 1) used to measure other numbers.
    let dir = tempfile::tempdir().unwrap();
    let ck = common::root().join("tests/fixtures/vit/dinov2_reg.safetensors");
    let run = |batch: &str| {
        let out = dir.path().join(format!("b{batch}.json"));
        ok(&memprune(&[
            "measure",
            "unit",
            s(&ck),
            "--heads",
            "4",
            "--points",
            "5",
            "--views",
            "1",
            "--batch",
            batch,
            "--no-control",
            "-q",
            "--json",
            s(&out),
        ]));
        common::json(&out)["layers"].clone()
    };
    let all = run("256");
    assert_eq!(all, run("2"));
    assert_eq!(all, run("1"));
}
