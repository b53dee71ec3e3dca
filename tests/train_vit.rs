//! Training ViTs (`train --arch vit`): MAE and SimCLR on a tiny ViT and tiny data, MAE's loss
//! against its known value, determinism across runs, resumes and thread counts, fine-tuning
//! chosen blocks, and the checkpoint as a loadable timm-layout ViT.

use candle_core::Tensor;
use memprune::model::vit_init::VitShape;
use memprune::model::{Encoder, LoadOptions};
use memprune::train::optim::{OptimizerConfig, OptimizerKind};
use memprune::train::{Framework, TrainConfig, Trainer};
use std::collections::BTreeMap;

mod common;

/// 2 blocks of width 16, 2 heads, patch 2 (a 4x4 grid); decoder 1 block of width 8.
fn tiny_shape() -> VitShape {
    VitShape {
        depth: 2,
        width: 16,
        heads: 2,
        mlp: 32,
        patch: 2,
        decoder_depth: 1,
        decoder_width: 8,
        decoder_heads: 2,
    }
}

fn cfg(framework: Framework, epochs: usize) -> TrainConfig {
    let mut optimizer = OptimizerConfig::new(OptimizerKind::Adamw, 0.05);
    optimizer.beta2 = 0.95;
    let arch = memprune::train::init::TrainArch::named("vit").unwrap();
    let mut c = common::tiny_train_config(arch, framework, optimizer, (epochs, 3e-3, 5));
    c.widths = tiny_shape().widths();
    c.vit = tiny_shape();
    c
}

fn values(m: &BTreeMap<String, Tensor>, k: &str) -> Vec<f32> {
    m[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn mae_and_simclr_steps_decrease_the_loss() {
    let set = common::two_class_set(11);
    let pts: Vec<usize> = (0..16).collect();
    for fw in [Framework::Mae, Framework::Simclr] {
        let mut t = Trainer::new(cfg(fw, 2), &set, "tiny", None).unwrap();
        let (first, last) = common::first_and_last_loss(&mut t, &pts, 16);
        assert!(last < first - 0.05, "{fw:?}: loss {first} -> {last}");
    }
}

/// With `decoder_pred` zero the prediction is 0 everywhere, so the loss is the mean over
/// masked patches of mean(norm(target)²) = (d - 1)/d · var/(var + 1e-6) for d pixels per
/// patch (unbiased variance): 3/4 here (2x2 patches) up to the 1e-6.
#[test]
fn mae_loss_with_a_zero_decoder_is_the_normalised_target_energy() {
    let set = common::two_class_set(11);
    let mut t = Trainer::new(cfg(Framework::Mae, 1), &set, "tiny", None).unwrap();
    for k in ["decoder_pred.weight", "decoder_pred.bias"] {
        let v = &t.model.vars[k];
        v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
    }
    let pts: Vec<usize> = (0..16).collect();
    let loss = t.step(&pts, 0).unwrap();
    assert!((loss - 0.75).abs() < 2e-3, "loss {loss}");
}

#[test]
fn mae_runs_are_deterministic_resume_exactly_and_load_as_a_vit() {
    let set = common::two_class_set(11);
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.safetensors");
    // A one-epoch warm-up: its learning rates do not depend on the planned epochs, so a run
    // stopped after it and resumed equals the straight one.
    let warm = |epochs| TrainConfig {
        warmup_epochs: 1.0,
        ..cfg(Framework::Mae, epochs)
    };
    let mut a = Trainer::new(warm(3), &set, "tiny", None).unwrap();
    a.run(&full, false, true).unwrap();
    let ta = a.model.tensors().unwrap();
    // One epoch, then resumed to three.
    let part = dir.path().join("part.safetensors");
    let mut b = Trainer::new(warm(1), &set, "tiny", None).unwrap();
    b.run(&part, false, true).unwrap();
    let mut c = Trainer::new(warm(3), &set, "tiny", Some(&part)).unwrap();
    assert_eq!(c.epochs_done, 1);
    c.run(&part, false, true).unwrap();
    let tc = c.model.tensors().unwrap();
    for k in ta.keys() {
        assert_eq!(values(&ta, k), values(&tc, k), "{k} differs after a resume");
    }
    // MAE keeps its sin-cos position embeddings fixed.
    let fresh = memprune::model::vit_init::sincos_pos_embed(16, 4).unwrap();
    let fresh = fresh.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values(&ta, "pos_embed"), fresh);
    // The checkpoint is a timm-layout ViT: heads from memprune's metadata, the decoder unused.
    let enc = Encoder::load(&full, &LoadOptions::default()).unwrap();
    let d = enc.describe();
    assert!(
        d.contains("depth 2, width 16") && d.contains("2 heads from memprune's metadata"),
        "{d}"
    );
    assert!(enc.unused.iter().any(|u| u.starts_with("decoder_blocks.")));
    assert!(enc.unused.iter().any(|u| u == "mask_token"));
    assert_eq!(enc.checkpoint.metadata["memprune.framework"], "mae");
    let x = memprune::train::clean_tensor(
        &memprune::data::AugmentConfig::identity(),
        &cfg(Framework::Mae, 1).normalization,
        &set,
        &[0, 1, 2],
    )
    .unwrap();
    let ours = a.model.eval_encoder(&full).unwrap().features(&x).unwrap();
    let loaded = enc.features(&x).unwrap();
    assert_eq!(
        ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        loaded.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// Fine-tuning a ViT: only the chosen sub-layer's tensors change.
#[test]
fn vit_fine_tuning_trains_only_the_chosen_blocks() {
    let set = common::two_class_set(11);
    let dir = tempfile::tempdir().unwrap();
    let pre = dir.path().join("pre.safetensors");
    let mut t = Trainer::new(cfg(Framework::Mae, 1), &set, "tiny", None).unwrap();
    t.run(&pre, false, true).unwrap();
    let before = t.model.tensors().unwrap();
    let mut c = cfg(Framework::Supervised, 1);
    c.init_from = Some(pre.clone());
    c.trainable = Some(vec!["block2.mlp".into()]);
    c.optimizer = OptimizerConfig::new(OptimizerKind::Sgd, 0.0);
    c.lr = 0.1;
    let mut ft = Trainer::new(c, &set, "tiny", None).unwrap();
    let pts: Vec<usize> = (0..16).collect();
    let (first, last) = common::first_and_last_loss(&mut ft, &pts, 11);
    assert!(last < first, "fine-tuning loss {first} -> {last}");
    let after = ft.model.tensors().unwrap();
    for k in before
        .keys()
        .filter(|k| !k.starts_with("decoder") && *k != "mask_token")
    {
        let changed = values(&before, k) != values(&after, k);
        let trainable = k.starts_with("blocks.1.mlp.") || k.starts_with("blocks.1.norm2.");
        assert_eq!(
            changed, trainable,
            "{k}: changed {changed}, trainable {trainable}"
        );
    }
}

#[test]
fn mae_needs_a_vit() {
    let set = common::two_class_set(11);
    let mut c = cfg(Framework::Mae, 1);
    c.arch = memprune::train::init::TrainArch::named("resnet9").unwrap();
    c.widths = vec![4, 8, 8, 8, 8, 16, 16, 16];
    let e = Trainer::new(c, &set, "tiny", None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--framework mae trains ViTs"), "{e}");
}

/// The CLI gives the same checkpoint bytes with 1 and 2 threads.
#[test]
fn vit_training_is_the_same_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 40);
    let run = |threads: &str| {
        let out = dir.path().join(format!("t{threads}.safetensors"));
        let args = [
            "train",
            "--framework",
            "mae",
            "--arch",
            "vit",
            "--depth",
            "2",
            "--width",
            "16",
            "--heads",
            "2",
            "--patch",
            "2",
            "--decoder-width",
            "8",
            "--decoder-depth",
            "1",
            "--decoder-heads",
            "2",
            "--epochs",
            "2",
            "--batch",
            "8",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--threads",
            threads,
        ];
        common::ok(&common::memprune_threads(&args, threads));
        std::fs::read(out).unwrap()
    };
    assert!(
        run("1") == run("2"),
        "1 and 2 threads gave different checkpoints"
    );
}
