//! memprune's training library on tiny models and data: losses against hand-computed values,
//! SGD momentum by hand, the f/g split, loss decrease, determinism, checkpoint reloads.

use candle_core::{Device, Tensor, Var};
use memprune::data::{ImageSet, Normalization};

mod common;
use memprune::model::{Encoder, LoadOptions};
use memprune::train::optim::{OptimizerConfig, OptimizerKind};
use memprune::train::split::{split, SplitKind};
use memprune::train::{loss, Framework, TrainConfig, Trainer};
use std::collections::BTreeMap;

const TINY: [usize; 8] = [4, 8, 8, 8, 8, 16, 16, 16];

fn tiny_cfg(framework: Framework, kind: OptimizerKind, lr: f64) -> TrainConfig {
    let arch = memprune::train::init::TrainArch::named("resnet9").unwrap();
    let optimizer = OptimizerConfig::new(kind, 1e-4);
    let mut c = common::tiny_train_config(arch, framework, optimizer, (2, lr, 3));
    c.widths = TINY.to_vec();
    c
}

/// A fresh SimCLR + LARS trainer on `set` (the tiny configuration).
fn simclr_lars(set: &ImageSet) -> Trainer<'_> {
    Trainer::new(
        tiny_cfg(Framework::Simclr, OptimizerKind::Lars, 0.3),
        set,
        "tiny",
        None,
    )
    .unwrap()
}

fn t2(v: &[f32], r: usize, c: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (r, c), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f32>().unwrap() as f64
}

/// NT-Xent written out with loops in f64, as in the SimCLR paper.
fn nt_xent_by_hand(z1: &[[f64; 2]], z2: &[[f64; 2]], t: f64) -> f64 {
    let norm = |v: &[f64; 2]| {
        let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
        [v[0] / n, v[1] / n]
    };
    let u: Vec<[f64; 2]> = z1.iter().chain(z2).map(norm).collect();
    let n = z1.len();
    let mut total = 0.0;
    for i in 0..2 * n {
        let pos = if i < n { i + n } else { i - n };
        let s = |j: usize| (u[i][0] * u[j][0] + u[i][1] * u[j][1]) / t;
        let denom: f64 = (0..2 * n).filter(|&k| k != i).map(|k| s(k).exp()).sum();
        total += -(s(pos).exp() / denom).ln();
    }
    total / (2 * n) as f64
}

#[test]
fn nt_xent_matches_hand_computed_values() {
    // Orthogonal pairs of identical views: every anchor has loss log(2 + e^2) - 2.
    let z = t2(&[1.0, 0.0, 0.0, 1.0], 2, 2);
    let l = scalar(&loss::nt_xent(&z, &z, 0.5).unwrap());
    let want = (2.0 + 2f64.exp()).ln() - 2.0;
    assert!((l - want).abs() < 1e-5, "{l} vs {want}");
    // An asymmetric case (unnormalised inputs) against the loop version.
    let a = [[1.0, 0.0], [0.3, 2.0]];
    let b = [[1.0, 1.0], [2.0, -1.0]];
    let flat = |m: &[[f64; 2]; 2]| m.iter().flatten().map(|&x| x as f32).collect::<Vec<_>>();
    let l = scalar(&loss::nt_xent(&t2(&flat(&a), 2, 2), &t2(&flat(&b), 2, 2), 0.5).unwrap());
    let want = nt_xent_by_hand(&a, &b, 0.5);
    assert!((l - want).abs() < 1e-5, "{l} vs {want}");
}

#[test]
fn simsiam_loss_matches_hand_computed_value() {
    let p1 = t2(&[1.0, 0.0], 1, 2);
    let p2 = t2(&[0.0, 3.0], 1, 2);
    let z1 = t2(&[1.0, 1.0], 1, 2);
    let z2 = t2(&[2.0, 0.0], 1, 2);
    // D(p1, z2) = -cos(e1, e1) = -1; D(p2, z1) = -cos(e2, (1, 1)) = -1/sqrt(2).
    let l = scalar(&loss::simsiam(&p1, &p2, &z1, &z2).unwrap());
    let want = 0.5 * (-1.0 - 1.0 / 2f64.sqrt());
    assert!((l - want).abs() < 1e-6, "{l} vs {want}");
}

#[test]
fn sgd_momentum_matches_a_hand_computed_two_step_update() {
    // loss = |w|^2 / 2, so grad = w; wd 0.1, momentum 0.9, lr 0.5 (PyTorch's SGD):
    // step 1: g = 1.1 w, buf = g, w1 = w - 0.5 * 1.1 w = 0.45 w
    // step 2: g = 1.1 w1 = 0.495 w, buf = 0.9 * 1.1 w + 0.495 w = 1.485 w,
    //         w2 = 0.45 w - 0.5 * 1.485 w = -0.2925 w
    let var = Var::from_tensor(&t2(&[1.0, 2.0], 1, 2)).unwrap();
    let vars: BTreeMap<String, Var> = [("w".to_string(), var.clone())].into();
    let mut cfg = OptimizerConfig::new(OptimizerKind::Sgd, 0.1);
    cfg.momentum = 0.9;
    let mut opt = memprune::train::optim::Optimizer::new(cfg);
    for _ in 0..2 {
        let l = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        opt.step(&vars, &l.backward().unwrap(), 0.5).unwrap();
    }
    let got = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (g, w) in got.iter().zip([-0.2925f32, -0.585]) {
        assert!((g - w).abs() < 1e-6, "{got:?}");
    }
}

#[test]
fn lr_schedule_warms_up_then_decays_to_zero() {
    use memprune::train::optim::lr_at;
    assert!((lr_at(1.0, 0, 4, 20) - 0.25).abs() < 1e-12);
    assert!((lr_at(1.0, 3, 4, 20) - 1.0).abs() < 1e-12);
    assert!((lr_at(1.0, 4, 4, 20) - 1.0).abs() < 1e-12);
    assert!((lr_at(1.0, 12, 4, 20) - 0.5).abs() < 1e-12);
    assert!(lr_at(1.0, 20, 4, 20).abs() < 1e-12);
}

#[test]
fn split_is_disjoint_covering_and_reproducible() {
    for n in [0, 7, 10, 1001] {
        let s = split(n, 5);
        assert_eq!(s, split(n, 5));
        let mut all: Vec<usize> = s
            .shared
            .iter()
            .chain(&s.candidates)
            .chain(&s.independent)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "n = {n}");
        assert_eq!(s.candidates.len(), n / 10);
        assert_eq!(s.independent.len(), n / 10);
        let f = s.train_points(SplitKind::SharedCandidates);
        let g = s.train_points(SplitKind::SharedIndependent);
        assert!(s.candidates.iter().all(|c| f.contains(c) && !g.contains(c)));
        assert!(s
            .independent
            .iter()
            .all(|c| g.contains(c) && !f.contains(c)));
        assert_eq!(s.train_points(SplitKind::All).len(), n);
    }
    assert_ne!(split(1000, 0).candidates, split(1000, 1).candidates);
}

#[test]
fn simclr_steps_decrease_the_loss() {
    let set = common::two_class_set(7);
    let mut t = Trainer::new(
        tiny_cfg(Framework::Simclr, OptimizerKind::Adamw, 3e-3),
        &set,
        "tiny",
        None,
    )
    .unwrap();
    let pts: Vec<usize> = (0..16).collect();
    let (first, last) = common::first_and_last_loss(&mut t, &pts, 15);
    assert!(last < first - 0.1, "loss {first} -> {last}");
}

/// State kept across steps must hold no graph: a momentum buffer computed from a `Var`
/// would chain every step's graph to the next (memory growing by the model's size per
/// step, 16 GB over a 10-epoch run before this was fixed).
#[test]
fn optimizer_state_and_running_stats_are_detached() {
    let set = common::two_class_set(7);
    let pts: Vec<usize> = (0..16).collect();
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Lars,
        OptimizerKind::Adamw,
    ] {
        let mut cfg = tiny_cfg(Framework::Simclr, kind, 1e-3);
        cfg.optimizer.weight_decay = 1e-4;
        let mut t = Trainer::new(cfg, &set, "tiny", None).unwrap();
        for _ in 0..2 {
            t.step(&pts, 0).unwrap();
        }
        let state = t.optimizer.state_tensors();
        assert!(!state.is_empty());
        for (name, v) in state.iter().chain(&t.model.buffers) {
            assert!(!v.track_op(), "{kind:?}: `{name}` carries a graph");
        }
    }
}

#[test]
fn simsiam_and_supervised_steps_run_and_decrease() {
    let set = common::two_class_set(7);
    let pts: Vec<usize> = (0..16).collect();
    for (fw, lr) in [(Framework::Supervised, 0.05), (Framework::Simsiam, 0.05)] {
        let mut t = Trainer::new(tiny_cfg(fw, OptimizerKind::Sgd, lr), &set, "tiny", None).unwrap();
        let (first, last) = common::first_and_last_loss(&mut t, &pts, 11);
        assert!(last < first, "{fw:?}: loss {first} -> {last}");
    }
}

#[test]
fn training_is_deterministic_and_checkpoints_reload_to_identical_outputs() {
    let set = common::two_class_set(7);
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let mut t = simclr_lars(&set);
        let out = dir.path().join(name);
        t.run(&out, false, true).unwrap();
        (
            t.model.tensors().unwrap(),
            t.model.eval_encoder(&out).unwrap(),
            out,
        )
    };
    let (a, enc_a, path_a) = run("a.safetensors");
    let (b, _, _) = run("b.safetensors");
    for (k, ta) in &a {
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(va, vb, "{k} differs between two identical runs");
    }
    // The written checkpoint loads as an encoder with the trained model's outputs.
    let loaded = Encoder::load(&path_a, &LoadOptions::default()).unwrap();
    let x = memprune::train::clean_tensor(
        &memprune::data::AugmentConfig::identity(),
        &Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        },
        &set,
        &[0, 1, 2, 3],
    )
    .unwrap();
    let features = |e: &Encoder| {
        let f = e.features(&x).unwrap();
        f.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(features(&enc_a), features(&loaded));
    let meta = &loaded.checkpoint.metadata;
    assert_eq!(meta["memprune.framework"], "simclr");
    assert_eq!(meta["memprune.epochs"], "2");
    assert_eq!(meta["memprune.data_points"], "40");
    assert!(loaded.unused.iter().any(|u| u.starts_with("projector.")));
}

/// Fine-tuning (`init_from` + `trainable`): the chosen layer changes, every frozen tensor
/// (weights, BatchNorm affine and running statistics) is bit-identical, the loss decreases.
#[test]
fn fine_tuning_trains_only_the_chosen_layers() {
    let set = common::two_class_set(7);
    let dir = tempfile::tempdir().unwrap();
    let pre = dir.path().join("pre.safetensors");
    let mut t = simclr_lars(&set);
    t.run(&pre, false, true).unwrap();
    let before = t.model.tensors().unwrap();

    let mut cfg = tiny_cfg(Framework::Supervised, OptimizerKind::Sgd, 0.05);
    cfg.widths = vec![];
    cfg.init_from = Some(pre.clone());
    cfg.trainable = Some(vec!["block7".into(), "block8".into()]);
    let mut ft = Trainer::new(cfg, &set, "tiny", None).unwrap();
    assert_eq!(
        ft.cfg.widths,
        TINY.to_vec(),
        "widths come from the checkpoint"
    );
    let pts: Vec<usize> = (0..16).collect();
    let (first, last) = common::first_and_last_loss(&mut ft, &pts, 11);
    assert!(last < first, "fine-tuning loss {first} -> {last}");
    let after = ft.model.tensors().unwrap();
    assert!(after.contains_key("fc.weight") && !after.contains_key("projector.0.weight"));
    let same = |k: &str| {
        let v =
            |m: &BTreeMap<String, Tensor>| m[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v(&before) == v(&after)
    };
    for b in 1..=6 {
        for s in [
            "conv.weight",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
        ] {
            assert!(
                same(&format!("block{b}.{s}")),
                "block{b}.{s} changed while frozen"
            );
        }
    }
    for k in [
        "block7.conv.weight",
        "block8.conv.weight",
        "block8.bn.running_mean",
    ] {
        assert!(!same(k), "{k} did not train");
    }
    // Unknown layers are refused with the layers there are.
    let mut bad = tiny_cfg(Framework::Supervised, OptimizerKind::Sgd, 0.05);
    bad.init_from = Some(pre);
    bad.trainable = Some(vec!["block9".into()]);
    let err = Trainer::new(bad, &set, "tiny", None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("block9") && err.contains("block8"), "{err}");
}

#[test]
fn the_stem_pool_gradient_goes_to_each_window_maximum() {
    use memprune::model::pool::max_pool2d;
    // A 1x1x5x5 input with distinct values: every output's gradient goes to the argmax of
    // its 3x3 window (stride 2, padding 1), summed where windows overlap.
    let v: Vec<f32> = (0..25).map(|i| ((i * 7) % 25) as f32).collect();
    let x = candle_core::Var::from_vec(v.clone(), (1, 1, 5, 5), &candle_core::Device::Cpu).unwrap();
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
