//! `memprune inspect` and `measure unit|layer|class` on every ViT fixture layout, end to end;
//! results that do not depend on the thread count or the batch size.

use std::path::{Path, PathBuf};

mod common;
use common::{json, ok, root};

fn fx(name: &str) -> String {
    common::vit_fx(name).to_str().unwrap().to_string()
}

/// (checkpoint, extra load flags, data folder): 3-channel layouts on the tiny CIFAR-10
/// fixture (32x32), the 1-channel DINOv2-style one on the embedded Fashion-MNIST.
fn layouts() -> Vec<(String, Vec<&'static str>, PathBuf)> {
    let cifar = root().join("tests/fixtures/data/cifar10");
    let fmnist = root().join("assets/fashion-mnist");
    vec![
        (fx("vit_tiny.safetensors"), vec![], cifar.clone()),
        (fx("dino_teacher.pth"), vec!["--heads", "4"], cifar.clone()),
        (
            fx("dino_teacher.pth"),
            vec!["--heads", "4", "--key", "student"],
            cifar.clone(),
        ),
        (
            fx("mae.pth"),
            vec!["--heads", "4", "--tokens", "cls"],
            cifar,
        ),
        (fx("dinov2_reg.safetensors"), vec!["--heads", "4"], fmnist),
    ]
}

#[test]
fn inspect_and_measure_run_on_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (ck, flags, data)) in layouts().into_iter().enumerate() {
        let data = data.to_str().unwrap().to_string();
        let mut a = vec!["inspect", ck.as_str(), "--size", "32"];
        a.extend(&flags);
        let text = ok(&common::memprune_threads(&a, "2"));
        assert!(text.contains("vit (depth 2"), "{text}");
        assert!(text.contains("block2.fc1"), "{text}");
        for metric in ["unit", "class", "layer"] {
            let out = dir.path().join(format!("{i}-{metric}.json"));
            let mut a = vec![
                "measure",
                metric,
                ck.as_str(),
                "--data",
                data.as_str(),
                "--points",
                "2",
                "--views",
                "2",
                "-q",
                "--json",
                out.to_str().unwrap(),
                // The tiny CIFAR-10 fixture has 1 test point: too few for the control.
                "--no-control",
            ];
            if metric == "layer" {
                a.extend(["--reference", ck.as_str()]);
            }
            a.extend(&flags);
            ok(&common::memprune_threads(&a, "2"));
            let j = json(&out);
            let names: Vec<String> = j["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    l["layer"]
                        .as_str()
                        .or(l["name"].as_str())
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            if metric == "layer" {
                assert_eq!(
                    names,
                    [
                        "block1.attn",
                        "block1.mlp",
                        "block2.attn",
                        "block2.mlp",
                        "pool"
                    ],
                    "{ck} {flags:?}"
                );
            } else {
                // UnitMem/ClassMem score the heads and the GELU neurons; the residual streams
                // and `pool` have no lower bound of act_u and are named as not scored.
                assert_eq!(
                    names,
                    ["block1.heads", "block1.fc1", "block2.heads", "block2.fc1"],
                    "{ck} {metric}"
                );
                assert_eq!(j["unscored_layers"].as_array().unwrap().len(), 5, "{ck}");
            }
        }
    }
}

#[test]
fn vit_unit_mem_is_identical_across_threads_and_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let ck = fx("dinov2_reg.safetensors");
    let args = [
        "unit",
        ck.as_str(),
        "--heads",
        "4",
        "--points",
        "6",
        "--views",
        "3",
    ];
    let run = |threads: &str, batch: &str, name: &str| {
        common::measure_json(dir.path(), &args, threads, batch, name)["layers"].clone()
    };
    let a = run("1", "256", "a.json");
    assert_eq!(a, run("2", "5", "b.json"));
    assert_eq!(a, run("2", "1", "c.json"));
}

/// The shipped MAE ViT pair: every command on the embedded data, with its controls.
#[test]
fn the_shipped_vit_pair_is_inspected_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    let f = root().join("assets/models/vit-mae-f.safetensors");
    let g = root().join("assets/models/vit-mae-g.safetensors");
    let (f, g) = (f.to_str().unwrap(), g.to_str().unwrap());
    let text = ok(&common::memprune_threads(&["inspect", f], "2"));
    assert!(
        text.contains("vit (depth 6, width 128, mlp 512, 4 heads from memprune's metadata"),
        "{text}"
    );
    assert!(
        text.contains("decoder_pred.weight"),
        "the decoder is listed as unused"
    );
    for metric in ["unit", "class", "layer"] {
        let out = dir.path().join(format!("{metric}.json"));
        let mut a = vec![
            "measure",
            metric,
            f,
            "--views",
            "2",
            "-q",
            "--json",
            out.to_str().unwrap(),
        ];
        if metric == "layer" {
            a.extend(["--reference", g]);
        } else {
            a.extend(["--points", "30"]);
        }
        ok(&common::memprune_threads(&a, "2"));
        let j = json(&out);
        let layers = j["layers"].as_array().unwrap();
        // UnitMem: 6 x (heads, fc1); the 12 residual streams and `pool` are not scored.
        let want = if metric == "layer" { 13 } else { 12 };
        assert_eq!(layers.len(), want, "{metric}");
        let text = serde_json::to_string(&j).unwrap();
        assert!(
            !text.contains("NaN") && !text.contains("null,\"corrected"),
            "{metric}"
        );
    }
}

/// `--pool avg` makes the representation the mean of the patch tokens: `inspect` says so,
/// and `pool` then differs from the class token's; a checkpoint without a class token
/// refuses `--pool cls`.
#[test]
fn pool_chooses_the_representation() {
    let f = root().join("assets/models/vit-mae-f.safetensors");
    let f = f.to_str().unwrap();
    let text = ok(&common::memprune_threads(
        &["inspect", f, "--pool", "avg"],
        "2",
    ));
    assert!(text.contains("pool: mean of patch tokens"), "{text}");
    let text = ok(&common::memprune_threads(&["inspect", f], "2"));
    assert!(!text.contains("pool: mean"), "{text}");
    let enc = |pool| {
        let opts = memprune::model::LoadOptions {
            pool,
            ..Default::default()
        };
        memprune::model::Encoder::load(Path::new(f), &opts).unwrap()
    };
    let x = candle_core::Tensor::ones(
        (2, 1, 28, 28),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let feat = |e: &memprune::model::Encoder| {
        e.features(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    use memprune::model::options::VitPool;
    assert_ne!(
        feat(&enc(Some(VitPool::Avg))),
        feat(&enc(Some(VitPool::Cls)))
    );
    assert_eq!(feat(&enc(None)), feat(&enc(Some(VitPool::Cls))));
}
