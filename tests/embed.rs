//! `memprune embed`: the features written are the probe's (`encoder_features`), bit for bit,
//! in .npy and safetensors, with indices and labels; `--layer` gives a layer's act_u;
//! threads and batch change nothing; `--pool` is respected; outputs never go over inputs.

use candle_core::Device;
use memprune::data::{self, Split};
use memprune::eval::probe::{encoder_features, encoder_unit_acts, ProbeSettings};
use memprune::model::options::VitPool;
use memprune::model::{Encoder, LoadOptions};
use std::path::Path;

mod common;
use common::{memprune, memprune_threads, ok, parity, refused, s, tiny_idx};

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn embed_writes_the_probe_features_with_indices_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 40);
    let model = parity("resnet9_c1.safetensors");
    let enc = Encoder::load(&model, &LoadOptions::default()).unwrap();
    for split in [Split::Train, Split::Test] {
        let set = data::open(&data, split).unwrap();
        let want = encoder_features(&enc, &set, &ProbeSettings::default()).unwrap();
        let name = format!("{split:?}").to_lowercase();
        // .npy: FILE, FILE-stem.indices.npy, FILE-stem.labels.npy.
        let embed = |out: &Path| {
            let args = ["embed", s(&model), "--data", s(&data), "--split", &name];
            ok(&memprune(&[&args[..], &["--out", s(out)]].concat()));
        };
        let out = dir.path().join(format!("{name}.npy"));
        embed(&out);
        let (shape, f) = memprune::data::npy::read_npy_f32(&out).unwrap();
        assert_eq!(shape, want.dims());
        assert_eq!(f, values(&want), "the probe's features, bit for bit");
        let idx = dir.path().join(format!("{name}.indices.npy"));
        let (_, i) = memprune::data::npy::read_npy_i64(&idx).unwrap();
        assert_eq!(i, (0..set.len() as i64).collect::<Vec<_>>());
        let lab = dir.path().join(format!("{name}.labels.npy"));
        let (_, l) = memprune::data::npy::read_npy_i64(&lab).unwrap();
        let labels: Vec<i64> = set
            .labels
            .as_ref()
            .unwrap()
            .iter()
            .map(|&v| v as i64)
            .collect();
        assert_eq!(l, labels);
        // safetensors: `features`, `indices`, `labels`.
        let st = dir.path().join(format!("{name}.safetensors"));
        embed(&st);
        let t = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
        assert_eq!(values(&t["features"]), values(&want));
        assert_eq!(t["indices"].to_vec1::<i64>().unwrap(), i);
        assert_eq!(t["labels"].to_vec1::<i64>().unwrap(), labels);
    }
}

#[test]
fn embed_layer_gives_its_unit_activations_and_refuses_an_unknown_layer() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 20);
    let model = parity("resnet9_c1.safetensors");
    let enc = Encoder::load(&model, &LoadOptions::default()).unwrap();
    let set = data::open(&data, Split::Train).unwrap();
    let at = enc.layers.iter().position(|l| l.name == "block3").unwrap();
    let want = encoder_unit_acts(&enc, &set, &ProbeSettings::default(), at).unwrap();
    assert_eq!(want.dims(), [20, enc.layers[at].units]);
    let out = dir.path().join("b3.safetensors");
    let args = |layer: &str| {
        vec![
            "embed".to_string(),
            s(&model).to_string(),
            "--data".into(),
            s(&data).to_string(),
            "--layer".into(),
            layer.to_string(),
            "--out".into(),
            s(&out).to_string(),
        ]
    };
    let a = args("block3");
    ok(&memprune(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(values(&t["features"]), values(&want));
    std::fs::remove_file(&out).unwrap();
    let a = args("block9");
    let r = memprune(&a.iter().map(String::as_str).collect::<Vec<_>>());
    refused(&r, &["--layer block9", "block1, block2", "res6, pool"]);
    assert!(!out.exists());
}

#[test]
fn embed_is_the_same_whatever_the_threads_and_the_batch() {
    // The embedded f and data (28x28 images). On 8x8 images, whose last feature maps are
    // 1x1, the conv's GEMM still rounds differently with the batch and the threads.
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, batch: &str, threads: &str| {
        let out = dir.path().join(name);
        let args = ["embed", "--batch", batch, "--out", s(&out)];
        ok(&memprune_threads(&args, threads));
        std::fs::read(out).unwrap()
    };
    let a = run("a.safetensors", "500", "2");
    assert_eq!(a, run("b.safetensors", "7", "1"));
    assert_eq!(a, run("c.safetensors", "1", "2"));
}

#[test]
fn embed_respects_the_vit_pool() {
    let dir = tempfile::tempdir().unwrap();
    // 28x28 images: a 2x2 grid of 14x14 patches.
    let model = common::root().join("tests/fixtures/vit/dinov2_reg.safetensors");
    let data = memprune::defaults::data();
    let set = data::open(&data, Split::Train).unwrap();
    let mut got = Vec::new();
    for pool in ["cls", "avg"] {
        let out = dir.path().join(format!("{pool}.npy"));
        ok(&memprune(&[
            "embed",
            s(&model),
            "--heads",
            "4",
            "--pool",
            pool,
            "--data",
            s(&data),
            "--out",
            s(&out),
        ]));
        let opts = LoadOptions {
            heads: Some(4),
            pool: Some(if pool == "cls" {
                VitPool::Cls
            } else {
                VitPool::Avg
            }),
            ..Default::default()
        };
        let enc = Encoder::load(&model, &opts).unwrap();
        let want = encoder_features(&enc, &set, &ProbeSettings::default()).unwrap();
        let (_, f) = memprune::data::npy::read_npy_f32(&out).unwrap();
        assert_eq!(f, values(&want), "--pool {pool}");
        got.push(f);
    }
    assert_ne!(
        got[0], got[1],
        "the class token and the mean of the patch tokens differ"
    );
}

#[test]
fn embed_never_writes_over_an_input_nor_leaves_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 10);
    let model = dir.path().join("m.safetensors");
    std::fs::copy(parity("resnet9_c1.safetensors"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    // The model itself, a file inside the data folder, an extension that is neither.
    for out in [
        model.clone(),
        data.join("feats.npy"),
        dir.path().join("feats.txt"),
    ] {
        let r = memprune(&["embed", s(&model), "--data", s(&data), "--out", s(&out)]);
        refused(&r, &[s(&out)]);
        assert!(!out.exists() || out == model);
    }
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // A bad --mean (two values for one channel) is refused and writes none of the three.
    let out = dir.path().join("x.npy");
    let r = memprune(&[
        "embed",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--mean",
        "0.5,0.5",
    ]);
    refused(&r, &["--mean/--std"]);
    for f in ["x.npy", "x.indices.npy", "x.labels.npy"] {
        assert!(!dir.path().join(f).exists(), "{f}");
    }
}

#[test]
fn images_smaller_than_a_vit_patch_are_refused() {
    // 8x8 images and 14x14 patches: no patch token (the mean of none gave NaN features).
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 4);
    let model = common::root().join("tests/fixtures/vit/dinov2_reg.safetensors");
    let out = dir.path().join("v.npy");
    let r = memprune(&[
        "embed",
        s(&model),
        "--heads",
        "4",
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    refused(&r, &["8x8", "smaller than one 14x14 patch"]);
    assert!(!out.exists());
}
