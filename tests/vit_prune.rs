//! Pruning ViTs: MLP neurons and attention heads removed equal them masked, the kept heads
//! compute what they did, the residual stream needs `allow_inexact`, and bad ViT policies
//! are one clear line with nothing written.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::coupling::coupling_groups;
use memprune::model::{Encoder, LoadOptions};
use memprune::rewrite::{prune_tensors, GroupCut, PruneMode};
use std::path::{Path, PathBuf};

mod common;
use common::tensors::rel_err;

fn vit_f() -> PathBuf {
    common::asset("models/vit-mae-f.safetensors")
}

fn rewritten(enc: &Encoder, cuts: &[GroupCut], mode: PruneMode, heads: Option<String>) -> Encoder {
    let groups = coupling_groups(enc);
    let t = prune_tensors(&enc.checkpoint.stored, &groups, cuts, mode).unwrap();
    let mut meta = enc.checkpoint.metadata.clone();
    if let Some(h) = heads {
        meta.insert("memprune.heads".into(), h);
    }
    let opts = LoadOptions {
        sub_layers_only: false,
        ..Default::default()
    };
    Encoder::from_checkpoint(
        Checkpoint::from_tensors(&enc.checkpoint.path, t, meta),
        &opts,
    )
    .unwrap()
}

fn input() -> Tensor {
    let v: Vec<f32> = (0..4 * 28 * 28)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (4, 1, 28, 28), &Device::Cpu).unwrap()
}

/// Every block loses 20 % of its MLP neurons and one head: the removed model's every
/// sub-layer output and its representation equal the masked model's to 1e-5 of their scale.
#[test]
fn removed_equals_masked_for_mlp_neurons_and_heads() {
    let enc = Encoder::load(&vit_f(), &LoadOptions::default()).unwrap();
    let mut cuts = Vec::new();
    for b in 1..=6 {
        cuts.push(GroupCut {
            group: format!("block{b}.fc1"),
            channels: (0..512).filter(|c| (c * 7 + b) % 5 == 0).collect(),
        });
        cuts.push(GroupCut {
            group: format!("block{b}.heads"),
            channels: vec![b % 4],
        });
    }
    let removed = rewritten(&enc, &cuts, PruneMode::Remove, Some("3".into()));
    let masked = rewritten(&enc, &cuts, PruneMode::Mask, None);
    assert!(
        removed.describe().contains("3 heads"),
        "{}",
        removed.describe()
    );
    assert!(removed.params() < masked.params());
    let x = input();
    let (tr, tm) = (
        removed.forward_taps(&x).unwrap(),
        masked.forward_taps(&x).unwrap(),
    );
    let names: Vec<&str> = removed.layers.iter().map(|l| l.name.as_str()).collect();
    for ((a, b), name) in tr.iter().zip(&tm).zip(&names) {
        // Taps whose units were removed have fewer columns; the others must agree.
        if a.dims() == b.dims() {
            let e = rel_err(a, b);
            assert!(e < 1e-5, "{name}: removed and masked differ by {e}");
        }
    }
    let e = rel_err(
        &removed.features(&x).unwrap(),
        &masked.features(&x).unwrap(),
    );
    assert!(e < 1e-5, "pool: {e}");
}

/// Removing head 2 of block 1: the other heads' outputs (before `proj`) are what they were.
#[test]
fn the_kept_heads_compute_what_they_did() {
    let opts = LoadOptions::default();
    let enc = Encoder::load(&vit_f(), &opts).unwrap();
    let cuts = [GroupCut {
        group: "block1.heads".into(),
        channels: vec![2],
    }];
    let pruned = rewritten(&enc, &cuts, PruneMode::Remove, Some("3,4,4,4,4,4".into()));
    let x = input();
    let heads_tap = |e: &Encoder| {
        let i = e
            .layers
            .iter()
            .position(|l| l.name == "block1.heads")
            .unwrap();
        e.forward_taps(&x).unwrap()[i].clone()
    };
    let (before, after) = (heads_tap(&enc), heads_tap(&pruned));
    assert_eq!(after.dim(2).unwrap(), 96);
    let hd = 32;
    let kept = Tensor::cat(
        &[
            before.narrow(2, 0, 2 * hd).unwrap(),
            before.narrow(2, 3 * hd, hd).unwrap(),
        ],
        2,
    )
    .unwrap();
    let e = rel_err(&after, &kept);
    assert!(e < 1e-6, "kept heads changed by {e}");
}

fn policy(dir: &Path, name: &str, model: &Path, action: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.safetensors"));
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "model: {}\nmetrics: {{views: 2}}\ndata: {{points: 20}}\nactions:\n  - prune: {action}\nevaluation: {{probe: false, speed: false}}\noutput: {{checkpoint: {}}}\n",
            model.display(),
            out.display()
        ),
    )
    .unwrap();
    (p, out)
}

#[test]
fn bad_vit_policies_are_one_clear_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let resnet = common::asset("models/resnet9-simclr-f.safetensors");
    let cases: [(&str, &Path, &str, &str); 5] = [
        (
            "no-head-left",
            &vit_f(),
            "{criterion: l1-norm, count: 4, units: heads}",
            "would empty layer `block1.heads`",
        ),
        (
            "heads-on-resnet",
            &resnet,
            "{criterion: l1-norm, count: 1, units: heads}",
            "has no attention heads",
        ),
        (
            "stream",
            &vit_f(),
            "{criterion: l1-norm, count: 1, layers: [stream]}",
            "allow_inexact: true",
        ),
        (
            "mlp-on-resnet",
            &resnet,
            "{criterion: random, fraction: 0.1, units: mlp}",
            "has no MLP neurons",
        ),
        (
            // Only the stream has channels, and it is inexact: the line says so, not that an
            // `exclude` the policy lacks left nothing.
            "channels-inexact",
            &vit_f(),
            "{criterion: l1-norm, count: 1, units: channels}",
            "allow_inexact: true",
        ),
    ];
    for (name, model, action, want) in cases {
        let (p, out) = policy(dir.path(), name, model, action);
        let r = common::memprune_threads(&["--policy", p.to_str().unwrap()], "2");
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!err.contains("exclude"), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains(p.to_str().unwrap()),
            "{name}: names the policy: {err}"
        );
        assert!(!out.exists(), "{name}: wrote {}", out.display());
    }
}

/// With `allow_inexact`, a residual-stream channel goes and the report says how much the
/// representation moved against masking it (LayerNorm now normalises over fewer channels).
#[test]
fn allow_inexact_removes_stream_channels_and_reports_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let (p, out) = policy(
        dir.path(),
        "inexact",
        &vit_f(),
        "{criterion: l1-norm, count: 2, layers: [stream], allow_inexact: true}",
    );
    let text = common::ok(&common::memprune_threads(
        &["--policy", p.to_str().unwrap()],
        "2",
    ));
    assert!(
        text.contains("not exact: removing units of stream changed the representation by"),
        "{text}"
    );
    let enc = Encoder::load(&out, &LoadOptions::default()).unwrap();
    assert!(enc.describe().contains("width 126"), "{}", enc.describe());
}
