//! Meta's DINOv2 checkpoints: chunked blocks (`blocks.CHUNK.BLOCK.*`, `block_chunks > 0`),
//! `register_tokens`, `mask_token`, `ls1.gamma`, a `teacher` container with `backbone.`
//! names and the DINO/iBOT heads. Built in the test by renaming the committed DINOv2-style
//! fixture (no new fixture): memprune must match timm's taps as on the flat original, keep
//! the chunked names when it rewrites, and refuse inconsistent chunking in one clear line.

use candle_core::{DType, Device, Tensor};
use memprune::checkpoint::{write_safetensors_atomic, Checkpoint};
use memprune::model::{Encoder, LoadOptions};
use memprune::rewrite::{prune_tensors, write_rewritten, GroupCut, PruneMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::tensors::rel_err_1;
use common::{vit_fx, vit_options};

/// Every tap against timm's float64 reference of the DINOv2-style fixture, to 1e-4.
fn check_dinov2_taps(enc: &Encoder) {
    let io =
        candle_core::safetensors::load(vit_fx("dinov2_reg_io.safetensors"), &Device::Cpu).unwrap();
    let x = io["input"].to_dtype(DType::F32).unwrap();
    let taps = enc.forward_taps(&x).unwrap();
    assert_eq!(taps.len(), enc.layers.len());
    for (layer, tap) in enc.layers.iter().zip(&taps) {
        let want = io[&format!("tap.{}", layer.name)].clone();
        let e = rel_err_1(tap, &want);
        assert!(e <= 1e-4, "{}: error {e} of the scale", layer.name);
    }
}

/// The DINOv2-style fixture (depth 2) as Meta's training code saves it: every block under
/// its chunk (`chunk_of(block)`), `register_tokens` for timm's `reg_token`, a `mask_token`,
/// all under `backbone.` in the `teacher` dict beside a DINO head and the student.
fn meta_layout(chunk_of: impl Fn(usize) -> usize) -> BTreeMap<String, Tensor> {
    let ck = Checkpoint::load(&vit_fx("dinov2_reg.safetensors"), None).unwrap();
    let mut t = BTreeMap::new();
    for (k, v) in ck.stored {
        let k = if k == "reg_token" {
            "register_tokens".to_string()
        } else if let Some(rest) = k.strip_prefix("blocks.") {
            let (i, tail) = rest.split_once('.').unwrap();
            let i: usize = i.parse().unwrap();
            format!("blocks.{}.{i}.{tail}", chunk_of(i))
        } else {
            k
        };
        t.insert(format!("backbone.{k}"), v);
    }
    let width = t["backbone.cls_token"].dims()[2];
    t.insert(
        "backbone.mask_token".into(),
        Tensor::zeros((1, width), DType::F32, &Device::Cpu).unwrap(),
    );
    let mut out = BTreeMap::new();
    for (who, scale) in [("teacher", 1.0), ("student", 0.5)] {
        for (k, v) in &t {
            out.insert(format!("{who}.{k}"), (v * scale).unwrap());
        }
        out.insert(
            format!("{who}.dino_head.last_layer.weight"),
            Tensor::ones((8, width), DType::F32, &Device::Cpu).unwrap(),
        );
    }
    out
}

fn write(dir: &Path, name: &str, t: &BTreeMap<String, Tensor>) -> PathBuf {
    let p = dir.join(name);
    write_safetensors_atomic(&p, t, &BTreeMap::new(), &[]).unwrap();
    p
}

#[test]
fn meta_chunked_dinov2_teacher_matches_timm_like_the_flat_original() {
    let dir = tempfile::tempdir().unwrap();
    // block_chunks = 2 (one block a chunk) and block_chunks = 1 (both in chunk 0).
    for (name, chunk_of) in [
        ("two_chunks.safetensors", (|i| i) as fn(usize) -> usize),
        ("one_chunk.safetensors", |_| 0),
    ] {
        let p = write(dir.path(), name, &meta_layout(chunk_of));
        let enc = Encoder::load(&p, &vit_options(4, None)).unwrap();
        assert_eq!(
            enc.describe(),
            "vit (depth 2, width 64, mlp 256, 4 heads from --heads, patch 14, grid 2x2, LayerScale, 4 registers, qkv without bias, fc_norm (mean of patch tokens))"
        );
        assert_eq!(
            enc.unused,
            ["dino_head.last_layer.weight", "mask_token"],
            "{name}"
        );
        // LayerScale is read under Meta's name (a scaled gamma would fail the taps).
        assert!(enc
            .arch
            .used_tensors()
            .contains(&"blocks.1.ls2.gamma".to_string()));
        check_dinov2_taps(&enc);
        // The student (all tensors halved) is another network: the key is honoured.
        let s = Encoder::load(&p, &vit_options(4, Some("student"))).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
        assert!(rel_err_1(&s.features(&x).unwrap(), &enc.features(&x).unwrap()) > 1e-2);
    }
}

#[test]
fn pruning_a_chunked_checkpoint_keeps_meta_names_and_equals_pruning_the_flat_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "meta.safetensors", &meta_layout(|i| i));
    let meta = Encoder::load(&p, &vit_options(4, None)).unwrap();
    let flat = Encoder::load(&vit_fx("dinov2_reg.safetensors"), &vit_options(4, None)).unwrap();
    let cut = [
        GroupCut {
            group: "block2.heads".into(),
            channels: vec![1],
        },
        GroupCut {
            group: "block1.fc1".into(),
            channels: vec![0, 5, 17],
        },
    ];
    let removed = vec![
        ("block2.heads".to_string(), 1),
        ("block1.fc1".to_string(), 3),
    ];
    let mut outs = Vec::new();
    for (i, enc) in [&meta, &flat].into_iter().enumerate() {
        let groups = memprune::model::coupling::coupling_groups(enc);
        let t = prune_tensors(&enc.checkpoint.stored, &groups, &cut, PruneMode::Remove).unwrap();
        let out = dir.path().join(format!("pruned{i}.safetensors"));
        write_rewritten(
            &out,
            &enc.checkpoint,
            &t,
            &enc.arch.rewrite_metadata(&removed),
        )
        .unwrap();
        outs.push(out);
    }
    // The file keeps Meta's names (as stored under the `teacher` key).
    let names: Vec<String> = candle_core::safetensors::load(&outs[0], &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    assert!(
        names.contains(&"backbone.blocks.1.1.attn.qkv.weight".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"backbone.register_tokens".to_string()));
    assert!(
        !names.iter().any(|n| n.contains("blocks.1.attn")),
        "{names:?}"
    );
    // It loads again (chunked) as the same network as the pruned flat fixture.
    let (a, b) = (
        Encoder::load(&outs[0], &LoadOptions::default()).unwrap(),
        Encoder::load(&outs[1], &LoadOptions::default()).unwrap(),
    );
    assert!(a.describe().contains("mlp [253, 256]"), "{}", a.describe());
    assert!(a.describe().contains("[4, 3] heads"), "{}", a.describe());
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let (fa, fb) = (a.features(&x).unwrap(), b.features(&x).unwrap());
    assert_eq!(rel_err_1(&fa, &fb), 0.0);
    // And not as the unpruned one.
    assert!(rel_err_1(&fa, &meta.features(&x).unwrap()) > 1e-3);
}

/// `memprune inspect` on `t`: exit code 1, one line naming the file; the line.
fn refused(t: &BTreeMap<String, Tensor>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.safetensors", t);
    let o = common::memprune_threads(&["inspect", p.to_str().unwrap(), "--heads", "4"], "1");
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(p.to_str().unwrap()), "{e}");
    e
}

#[test]
fn inconsistent_chunking_is_one_clear_error() {
    // Block 1 in chunk 2 while chunk 0 holds one block (so chunk 1 should hold it).
    let e = refused(&meta_layout(|i| 2 * i));
    assert!(
        e.contains("blocks.2.1.") && e.contains("belongs in chunk 1"),
        "{e}"
    );
    // Block 0 in chunk 1: chunk 0 is empty.
    let e = refused(&meta_layout(|i| 1 + i));
    assert!(e.contains("chunk 0") && e.contains("no block"), "{e}");
    // A flat block name beside chunked ones.
    let mut t = meta_layout(|i| i);
    let v = t
        .remove("teacher.backbone.blocks.1.1.norm1.weight")
        .unwrap();
    t.insert("teacher.backbone.blocks.1.norm1.weight".into(), v);
    let e = refused(&t);
    assert!(
        e.contains("`blocks.1.norm1.weight`") && e.contains("mixes"),
        "{e}"
    );
    // Meta's SwiGLU MLP (ViT-g) is named, not reported as a missing fc1.
    let mut t = meta_layout(|i| i);
    let v = t
        .remove("teacher.backbone.blocks.0.0.mlp.fc1.weight")
        .unwrap();
    t.insert("teacher.backbone.blocks.0.0.mlp.w12.weight".into(), v);
    let e = refused(&t);
    assert!(
        e.contains("blocks.0.mlp.w12.weight") && e.contains("SwiGLU"),
        "{e}"
    );
}
