//! Every caller ranks the layers `measure layer` shows: on the embedded ViT a policy's
//! `by: dlayermem` scores the same sub-layers with the same dLayerMem as `measure layer`,
//! and marks trainable the top of that ranking.

mod common;

use common::{json, ok, root, s};
use memprune::model::{Encoder, LoadOptions};

/// (name, the score a policy ranks by: the corrected dLayerMem, the corrected LayerMem of the
/// first layer) of `measure layer`'s JSON layers.
fn ranked(layers: &[serde_json::Value]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = layers
        .iter()
        .map(|l| {
            let score = l["dcorrected"]
                .as_f64()
                .or(l["corrected"].as_f64())
                .unwrap();
            (l["name"].as_str().unwrap().to_string(), score)
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[test]
fn a_policy_ranks_a_vits_layers_as_measure_layer_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = root().join("assets/models/vit-mae-f.safetensors");
    let g = root().join("assets/models/vit-mae-g.safetensors");
    let data = root().join("assets/fashion-mnist-planted");
    let out = dir.path().join("layer.json");
    ok(&common::memprune_threads(
        &[
            "measure",
            "layer",
            s(&f),
            "--reference",
            s(&g),
            "--data",
            s(&data),
            "--points",
            "20",
            "--views",
            "2",
            "-q",
            "--json",
            s(&out),
        ],
        "2",
    ));
    let shown = json(&out)["layers"].as_array().unwrap().clone();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "model: {}\nreference: {}\ndata:\n  path: {}\n  points: 20\nmetrics:\n  views: 2\n  seed: 0\nactions:\n  - freeze: {{layers: [\"*\"]}}\n  - train: {{by: dlayermem, top: 3}}\noutput:\n  checkpoint: {}\n",
            s(&f),
            s(&g),
            s(&data),
            s(&dir.path().join("out.safetensors"))
        ),
    )
    .unwrap();
    let pf = memprune::plan::PolicyFile::load(&policy).unwrap();
    let planned = memprune::jobs::policy::plan_policy(pf, false).unwrap();
    let lm = planned.scores.layer_mem.as_ref().unwrap();
    // The same layers (no heads or fc1 taps between the sub-layers), the same scores.
    let names: Vec<&str> = lm.iter().map(|l| l.name.as_str()).collect();
    let shown_names: Vec<&str> = shown.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, shown_names);
    assert_eq!(
        names.len(),
        13,
        "6 blocks x (attn, mlp) and pool: {names:?}"
    );
    for (l, j) in lm.iter().zip(&shown) {
        let want = j["dcorrected"].as_f64();
        assert_eq!(
            l.dcorrected.map(|v| v as f32),
            want.map(|v| v as f32),
            "{}",
            l.name
        );
    }
    // The policy trains the 3 sub-layers `measure layer` ranks highest (`pool` trains
    // nothing of its own and is not a candidate).
    let top: Vec<String> = ranked(&shown)
        .into_iter()
        .filter(|(n, _)| n != "pool")
        .take(3)
        .map(|(n, _)| n)
        .collect();
    let mut trained = planned.plan.trainable.clone().unwrap();
    let mut want = top.clone();
    trained.sort();
    want.sort();
    assert_eq!(trained, want, "ranking shown: {:?}", ranked(&shown));
}

/// The one LayerMem computation refuses a ViT loaded with its heads and fc1 taps as layers:
/// there is no way to rank other layers than `measure layer` has.
#[test]
fn layer_mem_refuses_a_vit_loaded_with_unit_taps() {
    let f = root().join("assets/models/vit-mae-f.safetensors");
    let data = root().join("assets/fashion-mnist-planted");
    let full = Encoder::load(&f, &LoadOptions::default()).unwrap();
    let sub = memprune::jobs::layer_mem::load(&f, &LoadOptions::default()).unwrap();
    let set = memprune::data::open(&data, memprune::data::Split::Train).unwrap();
    let settings = memprune::measure::ViewSettings {
        augment: Default::default(),
        normalization: memprune::data::Normalization::default_for(set.kind, set.channels),
        seed: 0,
        batch: 64,
    };
    let e = memprune::jobs::layer_mem::with_control(
        &full,
        &sub,
        &set,
        &[0, 1],
        None,
        1,
        &settings,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("block1.heads"), "{e}");
    let ok = memprune::jobs::layer_mem::with_control(
        &sub,
        &sub,
        &set,
        &[0, 1],
        None,
        1,
        &settings,
        false,
    )
    .unwrap();
    assert_eq!(ok.len(), 13);
}
