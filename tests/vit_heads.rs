//! Head counts shapes cannot tell: a timm ViT of width 128 with 4 heads of width 32 and no
//! metadata (`tests/fixtures/vit/timm_w128_h4*`, made by
//! `examples/make_vit_heads_fixture.py`). Head-level operations refuse the width / 64
//! guess with one line naming `--heads` / `heads:`; with `heads: 4` pruning heads is exact
//! against timm with those heads masked; bad `memprune.heads` metadata is one clear line.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::{Encoder, LoadOptions};
use std::path::{Path, PathBuf};

mod common;
use common::tensors::rel_err;
use common::vit_fx;

fn io(name: &str) -> Tensor {
    let t = candle_core::safetensors::load(vit_fx("timm_w128_h4_io.safetensors"), &Device::Cpu)
        .unwrap();
    t[name].clone()
}

fn policy(dir: &Path, name: &str, heads: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.safetensors"));
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "model: {}\n{heads}data: {{points: 8}}\nactions:\n  - prune: {{criterion: l1-norm, count: 1, units: heads}}\nevaluation: {{probe: false, speed: false}}\noutput: {{checkpoint: {}}}\n",
            vit_fx("timm_w128_h4.safetensors").display(),
            out.display()
        ),
    )
    .unwrap();
    (p, out)
}

#[test]
fn pruning_heads_is_refused_on_a_guess_and_exact_with_heads_4() {
    let dir = tempfile::tempdir().unwrap();
    // Without a count: one line naming `heads:`, nothing written.
    let (p, out) = policy(dir.path(), "guess", "");
    let r = common::memprune_threads(&["--policy", p.to_str().unwrap()], "2");
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(last.contains("`heads:`") && last.contains("guess"), "{err}");
    assert!(!out.exists());

    // With `heads: 4`: one head of each block goes, and the pruned model computes timm's
    // model with those heads masked.
    let (p, out) = policy(dir.path(), "given", "heads: 4\n");
    let r = common::memprune_threads(&["--policy", p.to_str().unwrap()], "2");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let before = Checkpoint::load(&vit_fx("timm_w128_h4.safetensors"), None).unwrap();
    let after = Checkpoint::load(&out, None).unwrap();
    assert_eq!(after.metadata["memprune.heads"], "3,3");
    // Which head went: the one whose 32 columns of `proj` are no longer there.
    let gone = |b: usize| -> usize {
        let name = format!("blocks.{b}.attn.proj.weight");
        let (w0, w1) = (before.get(&name).unwrap(), after.get(&name).unwrap());
        assert_eq!(w1.dims(), &[128, 96]);
        let kept: Vec<Vec<f32>> = (0..96)
            .map(|c| {
                w1.narrow(1, c, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        (0..4)
            .find(|&h| {
                let c: Vec<f32> = w0
                    .narrow(1, h * 32, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                !kept.contains(&c)
            })
            .unwrap()
    };
    let (a, b) = (gone(0), gone(1));
    let enc = Encoder::load(&out, &LoadOptions::default()).unwrap();
    assert!(enc.describe().contains("3 heads from memprune's metadata"));
    let x = io("input");
    let want = io(&format!("masked.{a}.{b}"));
    let e = rel_err(&enc.features(&x).unwrap(), &want);
    assert!(
        e < 1e-5,
        "removed heads {a}, {b}: differs from timm masked by {e}"
    );
    // And the unpruned model with --heads 4 is timm's.
    let full = Encoder::load(
        &vit_fx("timm_w128_h4.safetensors"),
        &LoadOptions {
            heads: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let e = rel_err(&full.features(&x).unwrap(), &io("features"));
    assert!(e < 1e-5, "{e}");
}

#[test]
fn measuring_heads_on_a_guess_is_refused_and_the_source_is_said() {
    let m = vit_fx("timm_w128_h4.safetensors");
    let o = common::memprune_threads(&["inspect", m.to_str().unwrap()], "1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.contains("2 heads GUESSED"), "{out}");
    let o = common::memprune_threads(&["inspect", m.to_str().unwrap(), "--heads", "4"], "1");
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 heads from --heads"));
    let o = common::memprune_threads(
        &[
            "measure",
            "unit",
            m.to_str().unwrap(),
            "--points",
            "4",
            "--views",
            "2",
        ],
        "2",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(last.contains("--heads") && last.contains("guess"), "{err}");
}

#[test]
fn bad_heads_metadata_is_one_clear_line() {
    let ck = Checkpoint::load(&vit_fx("timm_w128_h4.safetensors"), None).unwrap();
    for bad in ["abc", "-1", "4.0", "4,4,abc", "[4,4]", "4,4,4"] {
        let meta = [("memprune.heads".to_string(), bad.to_string())].into();
        let c = Checkpoint::from_tensors(&ck.path, ck.stored.clone(), meta);
        let e = Encoder::from_checkpoint(c, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`memprune.heads`") && e.contains(bad),
            "{bad}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
