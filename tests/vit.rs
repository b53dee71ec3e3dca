//! Vision transformers: timm parity of every tap on each fixture layout (made once with timm in
//! float64 by examples/make_vit_fixtures.py), containers (DINO teacher/student, MAE), the
//! position embedding's interpolation, coupling groups, and clear errors for bad input.

use candle_core::{DType, Device, Tensor};
use memprune::checkpoint::{write_safetensors_atomic, Checkpoint};
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod common;
use common::tensors::rel_err_1;
use common::{vit_fx, vit_options};

/// Every tap of `enc` on the fixture's input matches timm's to 1e-4 of its scale; returns
/// the largest relative error.
fn check(enc: &Encoder, io: &str) -> f64 {
    let io = candle_core::safetensors::load(vit_fx(io), &Device::Cpu).unwrap();
    let x = io["input"].to_dtype(DType::F32).unwrap();
    let taps = enc.forward_taps(&x).unwrap();
    let n_ref = io.keys().filter(|k| k.starts_with("tap.")).count();
    assert_eq!(n_ref, enc.layers.len(), "taps in the fixture vs memprune");
    let mut worst = 0f64;
    for (layer, tap) in enc.layers.iter().zip(&taps) {
        let want = &io[&format!("tap.{}", layer.name)];
        assert_eq!(tap.dims(), want.dims(), "{}", layer.name);
        let e = rel_err_1(tap, want);
        assert!(e <= 1e-4, "{}: error {e} of the scale", layer.name);
        worst = worst.max(e);
    }
    let f = enc.features(&x).unwrap();
    assert!(rel_err_1(&f, &io["features"]) <= 1e-4);
    eprintln!("worst relative error {worst:e}");
    worst
}

#[test]
fn vit_tiny_layout_matches_timm() {
    let enc = Encoder::load(&vit_fx("vit_tiny.safetensors"), &LoadOptions::default()).unwrap();
    assert_eq!(
        enc.describe(),
        "vit (depth 2, width 192, mlp 768, 3 heads from the table of published ViTs (ViT-Ti: timm vit_tiny, DeiT-Ti), patch 16, grid 2x2)"
    );
    // The classifier is left alone.
    assert_eq!(enc.unused, vec!["head.bias", "head.weight"]);
    check(&enc, "vit_tiny_io.safetensors");
    let names: Vec<&str> = enc.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        &names[..5],
        &[
            "block1.attn",
            "block1.heads",
            "block1.fc1",
            "block1.mlp",
            "block2.attn"
        ]
    );
    assert_eq!(names.last(), Some(&"pool"));
}

#[test]
fn pos_embed_is_interpolated_for_other_image_sizes_as_timm() {
    let enc = Encoder::load(&vit_fx("vit_tiny.safetensors"), &LoadOptions::default()).unwrap();
    // 48x48 images give a 3x3 grid; the checkpoint's is 2x2.
    check(&enc, "vit_tiny_io48.safetensors");
}

#[test]
fn dino_checkpoint_gives_the_teacher_by_default_and_the_student_by_key() {
    let enc = Encoder::load(&vit_fx("dino_teacher.pth"), &vit_options(4, None)).unwrap();
    assert!(
        enc.describe().contains("4 heads from --heads"),
        "{}",
        enc.describe()
    );
    // The DINO head (`head.mlp.*`, `head.last_layer.*`) is not the encoder's.
    assert!(
        enc.unused.iter().all(|n| n.starts_with("head.")),
        "{:?}",
        enc.unused
    );
    assert_eq!(enc.unused.len(), 4);
    check(&enc, "dino_teacher_io.safetensors");
    let student = Encoder::load(
        &vit_fx("dino_teacher.pth"),
        &vit_options(4, Some("student")),
    )
    .unwrap();
    check(&student, "dino_student_io.safetensors");
}

#[test]
fn dino_container_in_safetensors_gives_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = BTreeMap::new();
    for (who, seed_file) in [("teacher", None), ("student", Some("student"))] {
        let ck = Checkpoint::load_keyed(&vit_fx("dino_teacher.pth"), Some("__none__"), seed_file)
            .unwrap();
        for (k, v) in ck.stored {
            t.insert(format!("{who}.{k}"), v);
        }
    }
    let p = dir.path().join("dino.safetensors");
    write_safetensors_atomic(&p, &t, &BTreeMap::new(), &[]).unwrap();
    check(
        &Encoder::load(&p, &vit_options(4, None)).unwrap(),
        "dino_teacher_io.safetensors",
    );
    let s = Encoder::load(&p, &vit_options(4, Some("student"))).unwrap();
    check(&s, "dino_student_io.safetensors");
}

#[test]
fn dinov2_layerscale_registers_without_qkv_bias_match_timm() {
    let enc = Encoder::load(&vit_fx("dinov2_reg.safetensors"), &vit_options(4, None)).unwrap();
    assert_eq!(
        enc.describe(),
        "vit (depth 2, width 64, mlp 256, 4 heads from --heads, patch 14, grid 2x2, LayerScale, 4 registers, qkv without bias, fc_norm (mean of patch tokens))"
    );
    assert!(enc.unused.is_empty(), "{:?}", enc.unused);
    check(&enc, "dinov2_reg_io.safetensors");
}

#[test]
fn meta_register_tokens_name_loads_like_timm_reg_token() {
    let ck = Checkpoint::load(&vit_fx("dinov2_reg.safetensors"), None).unwrap();
    let mut t = ck.stored.clone();
    let r = t.remove("reg_token").unwrap();
    t.insert("register_tokens".into(), r);
    let ck = Checkpoint::from_tensors(&ck.path, t, BTreeMap::new());
    let enc = Encoder::from_checkpoint(ck, &vit_options(4, None)).unwrap();
    check(&enc, "dinov2_reg_io.safetensors");
}

#[test]
fn mae_checkpoint_reports_the_decoder_as_unused() {
    let enc = Encoder::load(&vit_fx("mae.pth"), &vit_options(4, None)).unwrap();
    assert!(enc.unused.contains(&"decoder_pred.weight".to_string()));
    assert!(enc.unused.contains(&"mask_token".to_string()));
    assert!(enc
        .unused
        .iter()
        .all(|n| n.starts_with("decoder") || n == "mask_token"));
    check(&enc, "mae_io.safetensors");
}

#[test]
fn tokens_cls_gives_the_class_token_of_each_sub_layer() {
    let all = Encoder::load(&vit_fx("mae.pth"), &vit_options(4, None)).unwrap();
    let cls = Encoder::load(
        &vit_fx("mae.pth"),
        &LoadOptions {
            heads: Some(4),
            tokens: memprune::model::options::Tokens::Cls,
            ..Default::default()
        },
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let (a, c) = (all.forward_taps(&x).unwrap(), cls.forward_taps(&x).unwrap());
    for ((ta, tc), l) in a.iter().zip(&c).zip(&all.layers) {
        if l.name == "pool" {
            assert_eq!(ta.dims(), tc.dims());
            continue;
        }
        let first = ta.get_on_dim(1, 0).unwrap();
        assert_eq!(rel_err_1(tc, &first), 0.0, "{}", l.name);
    }
}

#[test]
fn unit_acts_are_head_norms_and_token_means() {
    let enc = Encoder::load(&vit_fx("mae.pth"), &vit_options(4, None)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let taps = enc.forward_taps(&x).unwrap();
    let acts = enc.forward_unit_acts(&x).unwrap();
    for ((l, t), a) in enc.layers.iter().zip(&taps).zip(&acts) {
        assert_eq!(a.dims(), &[2, l.units], "{}", l.name);
        let want = if l.name.ends_with(".heads") {
            let (n, tok, d) = t.dims3().unwrap();
            t.reshape((n, tok, 4, d / 4))
                .unwrap()
                .sqr()
                .unwrap()
                .sum(3)
                .unwrap()
                .sqrt()
                .unwrap()
                .mean(1)
                .unwrap()
        } else if l.name == "pool" {
            t.clone()
        } else {
            t.mean(1).unwrap()
        };
        assert!(rel_err_1(a, &want) < 1e-6, "{}", l.name);
    }
}

#[test]
fn coupling_groups_slice_heads_from_each_qkv_third() {
    let enc = Encoder::load(&vit_fx("mae.pth"), &vit_options(4, None)).unwrap();
    let groups = memprune::model::coupling::coupling_groups(&enc);
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "stream",
            "block1.heads",
            "block1.fc1",
            "block2.heads",
            "block2.fc1"
        ]
    );
    let h = &groups[1];
    assert_eq!(h.channels, 4);
    let qkv = &h.producers[0];
    assert_eq!(qkv.tensor, "blocks.0.attn.qkv.weight");
    // Head 1 of 4 (head_dim 16) owns rows 16..32 of each of the three 64-row thirds.
    let idx = qkv.indices(&[1], 192);
    let want: Vec<usize> = (16..32).chain(80..96).chain(144..160).collect();
    assert_eq!(idx, want);
    // Removing head 1 everywhere equals masking it: outputs agree.
    use memprune::rewrite::prune::{prune_tensors, GroupCut, PruneMode};
    let cut = [GroupCut {
        group: "block1.heads".into(),
        channels: vec![1],
    }];
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let mut outs = Vec::new();
    for mode in [PruneMode::Remove, PruneMode::Mask] {
        let t = prune_tensors(&enc.checkpoint.stored, &groups, &cut, mode).unwrap();
        // What the rewriter adds: the heads left in each block.
        let removed = if mode == PruneMode::Remove {
            vec![("block1.heads".to_string(), 1)]
        } else {
            vec![]
        };
        let meta = enc.arch.rewrite_metadata(&removed);
        let want = if mode == PruneMode::Remove {
            "3,4"
        } else {
            "4,4"
        };
        assert_eq!(meta["memprune.heads"], want);
        let ck = Checkpoint::from_tensors(&enc.checkpoint.path, t, meta);
        let e = Encoder::from_checkpoint(ck, &LoadOptions::default()).unwrap();
        outs.push(e.features(&x).unwrap());
    }
    assert!(rel_err_1(&outs[0], &outs[1]) < 1e-5);
}

#[test]
fn params_and_macs_of_vit_tiny() {
    let enc = Encoder::load(&vit_fx("vit_tiny.safetensors"), &LoadOptions::default()).unwrap();
    // timm's count without the head: patch 192*768+192, cls 192, pos 5*192, per block
    // 4*192 + 192*576+576 + 192*192+192 + 192*768+768 + 768*192+192, final norm 2*192.
    let block = 4 * 192 + 192 * 576 + 576 + 192 * 192 + 192 + 192 * 768 + 768 + 768 * 192 + 192;
    assert_eq!(
        enc.params(),
        192 * 768 + 192 + 192 + 5 * 192 + 2 * block + 2 * 192
    );
    let (t, d) = (5u64, 192u64);
    let per_block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * 768;
    assert_eq!(enc.macs(32), 4 * 768 * d + 2 * per_block);
}

/// Writes the MAE fixture's encoder with `edit` applied, and returns memprune's error.
fn bad(edit: impl Fn(&mut BTreeMap<String, Tensor>)) -> (PathBuf, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpoint::load(&vit_fx("mae.pth"), None).unwrap();
    let mut t: BTreeMap<String, Tensor> = ck
        .stored
        .into_iter()
        .filter(|(k, _)| !k.starts_with("decoder") && k != "mask_token")
        .collect();
    edit(&mut t);
    let p = dir.path().join("bad.safetensors");
    write_safetensors_atomic(&p, &t, &BTreeMap::new(), &[]).unwrap();
    let out_json = dir.path().join("out.json");
    let o = common::memprune_threads(&["inspect", p.to_str().unwrap(), "--heads", "4"], "1");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out_json.exists());
    (p, err, dir)
}

#[test]
fn bad_vit_input_is_one_clear_line() {
    let (p, e, _d) = bad(|t| {
        t.remove("blocks.0.mlp.fc1.weight");
    });
    assert!(
        e.contains(p.to_str().unwrap()) && e.contains("blocks.0.mlp.fc1.weight"),
        "{e}"
    );
    let (_, e, _d) = bad(|t| {
        let w = t["blocks.1.attn.qkv.weight"].narrow(0, 0, 128).unwrap();
        t.insert("blocks.1.attn.qkv.weight".into(), w);
        let b = t["blocks.1.attn.qkv.bias"].narrow(0, 0, 128).unwrap();
        t.insert("blocks.1.attn.qkv.bias".into(), b);
    });
    assert!(
        e.contains("blocks.1.attn.qkv.weight") && e.contains("3 x width"),
        "{e}"
    );
    let (_, e, _d) = bad(|t| {
        let w = t["pos_embed"].narrow(1, 0, 15).unwrap();
        t.insert("pos_embed".into(), w);
    });
    assert!(e.contains("`pos_embed`") && e.contains("grid"), "{e}");
    // A whole block missing between others.
    let (_, e, _d) = bad(|t| {
        let keys: Vec<String> = t
            .keys()
            .filter(|k| k.starts_with("blocks.0."))
            .cloned()
            .collect();
        for k in keys {
            let v = t.remove(&k).unwrap();
            t.insert(k.replace("blocks.0.", "blocks.2."), v);
        }
    });
    assert!(e.contains("blocks.0"), "{e}");
    // Heads that do not divide the width.
    let dir = tempfile::tempdir().unwrap();
    let o = common::memprune_threads(
        &[
            "inspect",
            vit_fx("mae.pth").to_str().unwrap(),
            "--heads",
            "5",
        ],
        "1",
    );
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("mae.pth") && e.contains("5 attention heads") && e.contains("qkv.weight"),
        "{e}"
    );
    drop(dir);
}

/// Issue 28: a ViT checkpoint is checked as a ResNet is: finite values (fc1, norm1,
/// pos_embed), complete weight/bias pairs (a final norm with only its bias), a class token of
/// one token, and `--tokens cls` needs a class token.
#[test]
fn vit_checkpoints_that_are_not_what_they_claim_are_refused() {
    let ck = Checkpoint::load(&vit_fx("dinov2_reg.safetensors"), None).unwrap();
    let load = |edit: &dyn Fn(&mut BTreeMap<String, Tensor>), opts: LoadOptions| {
        let mut t = ck.stored.clone();
        edit(&mut t);
        let c = Checkpoint::from_tensors(&ck.path, t, BTreeMap::new());
        match Encoder::from_checkpoint(c, &opts) {
            Ok(_) => String::from("loaded"),
            Err(e) => e.to_string(),
        }
    };
    let nan = |name: &'static str| {
        move |t: &mut BTreeMap<String, Tensor>| {
            let x = &t[name];
            let v = (x.ones_like().unwrap() * f64::NAN).unwrap();
            t.insert(name.into(), v);
        }
    };
    for name in [
        "blocks.0.mlp.fc1.weight",
        "blocks.1.norm1.weight",
        "pos_embed",
    ] {
        let e = load(&nan(name), vit_options(4, None));
        assert!(e.contains(name) && e.contains("NaN"), "{name}: {e}");
    }
    let e = load(
        &|t| {
            t.remove("fc_norm.weight");
        },
        vit_options(4, None),
    );
    assert!(e.contains("`fc_norm.bias` without `fc_norm.weight`"), "{e}");
    // vit_tiny has a final norm (no fc_norm).
    let tiny = Checkpoint::load(&vit_fx("vit_tiny.safetensors"), None).unwrap();
    let mut t = tiny.stored.clone();
    t.remove("norm.weight");
    let c = Checkpoint::from_tensors(&tiny.path, t, BTreeMap::new());
    let e = Encoder::from_checkpoint(c, &vit_options(3, None))
        .map(|_| String::from("loaded"))
        .unwrap_or_else(|e| e.to_string());
    assert!(e.contains("`norm.bias` without `norm.weight`"), "{e}");
    let e = load(
        &|t| {
            let c = t["cls_token"].clone();
            t.insert("cls_token".into(), Tensor::cat(&[&c, &c], 1).unwrap());
        },
        vit_options(4, None),
    );
    assert!(e.contains("`cls_token` has shape [1, 2, 64]"), "{e}");
    let e = load(
        &|t| {
            t.remove("cls_token");
        },
        LoadOptions {
            heads: Some(4),
            tokens: memprune::model::options::Tokens::Cls,
            ..Default::default()
        },
    );
    assert!(
        e.contains("--tokens cls") && e.contains("no `cls_token`"),
        "{e}"
    );
}

#[test]
fn a_vit_batch_of_one_image_gives_the_numbers_of_a_larger_batch() {
    // gemm's small-matrix kernel rounds differently: a ViT's lone image (the last of 5
    // points in batches of 2, or K = 1 at --batch 1) used to measure other numbers.
    let dir = tempfile::tempdir().unwrap();
    let ck = common::root().join("tests/fixtures/vit/dinov2_reg.safetensors");
    let run = |batch: &str| {
        let out = dir.path().join(format!("b{batch}.json"));
        common::ok(&common::memprune(&[
            "measure",
            "unit",
            common::s(&ck),
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
            common::s(&out),
        ]));
        common::json(&out)["layers"].clone()
    };
    let all = run("256");
    assert_eq!(all, run("2"));
    assert_eq!(all, run("1"));
}
