//! The pruning criteria bn-scale, taylor, fpgm and lamp: each ranks a hand-made layer as its
//! equation says (docs/COMPRESSION.md), per layer and globally; bad criteria and losses are
//! refused with one line.

mod common;

use candle_core::{Device, Tensor};
use common::{edited, ok, refused, write_policy};
use memprune::model::coupling::{coupling_groups, CouplingGroup};
use memprune::model::{Encoder, LoadOptions};
use memprune::plan::criteria::{bn_scale, fpgm, lamp, taylor};
use std::collections::BTreeMap;
use std::path::Path;

const FIXTURE: &str = "resnet9_c1.safetensors";

fn load(p: &Path) -> (Encoder, Vec<CouplingGroup>) {
    let e = Encoder::load(p, &LoadOptions::default()).unwrap();
    let g = coupling_groups(&e);
    (e, g)
}

fn group<'a>(groups: &'a [CouplingGroup], name: &str) -> &'a CouplingGroup {
    groups.iter().find(|g| g.name == name).unwrap()
}

/// Indices of `s`, lowest first (ties by index): the order `end: low` prunes in.
fn low_first(s: &[f64]) -> Vec<usize> {
    let mut i: Vec<usize> = (0..s.len()).collect();
    i.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
    i
}

/// block1's 8 filters (8 x 1 x 3 x 3) set to `f(c)` times a ones filter.
fn block1_filters(dir: &Path, f: impl Fn(usize) -> f32) -> std::path::PathBuf {
    edited(FIXTURE, dir, "f.safetensors", |t, _| {
        let v: Vec<f32> = (0..8).flat_map(|c| vec![f(c); 9]).collect();
        t.insert(
            "block1.conv.weight".into(),
            Tensor::from_vec(v, (8, 1, 3, 3), &Device::Cpu).unwrap(),
        );
    })
}

#[test]
fn bn_scale_ranks_by_the_magnitude_of_gamma() {
    let dir = tempfile::tempdir().unwrap();
    // gamma = +-(known order): the sign must not matter.
    let gamma = [0.5f32, -0.1, 0.9, -0.3, 0.05, 0.7, -0.8, 0.2];
    let p = edited(FIXTURE, dir.path(), "g.safetensors", |t, _| {
        t.insert(
            "block1.bn.weight".into(),
            Tensor::new(&gamma, &Device::Cpu).unwrap(),
        );
    });
    let (e, groups) = load(&p);
    let s = bn_scale::scores(group(&groups, "block1"), &e.checkpoint).unwrap();
    assert_eq!(low_first(&s), vec![4, 1, 7, 3, 0, 5, 6, 2]);
    for (a, g) in s.iter().zip(gamma) {
        assert!((a - g.abs() as f64).abs() < 1e-7);
    }
    // A residual group averages the |gamma| of all the BatchNorms that normalise its channels.
    let res2 = group(&groups, "res2");
    let bns = bn_scale::bn_scales(res2);
    assert!(bns.len() >= 2, "{bns:?}");
    let s = bn_scale::scores(res2, &e.checkpoint).unwrap();
    let mean0: f64 = bns
        .iter()
        .map(|b| e.checkpoint.get(b).unwrap().to_vec1::<f32>().unwrap()[0].abs() as f64)
        .sum::<f64>()
        / bns.len() as f64;
    assert!((s[0] - mean0).abs() < 1e-6);
}

#[test]
fn fpgm_prunes_the_filters_nearest_the_geometric_median_first() {
    let dir = tempfile::tempdir().unwrap();
    // Filters c * ones: on a line, the distance sum of c is 3 * sum_j |c - j| (||ones_9|| = 3).
    let p = block1_filters(dir.path(), |c| c as f32);
    let (e, groups) = load(&p);
    let s = fpgm::scores(group(&groups, "block1"), &e.checkpoint).unwrap();
    for (c, v) in s.iter().enumerate() {
        let want: f64 = (0..8).map(|j| 3.0 * (c as f64 - j as f64).abs()).sum();
        assert!((v - want).abs() < 1e-4, "unit {c}: {v} against {want}");
    }
    // The middle filters (3, 4) go first, the extremes (0, 7) last.
    assert_eq!(&low_first(&s)[..2], &[3, 4]);
    assert_eq!(&low_first(&s)[6..], &[0, 7]);
    // An outlier is the least replaceable filter even with the smallest norm elsewhere.
    let p = block1_filters(dir.path(), |c| {
        if c == 2 {
            -20.0
        } else {
            1.0 + c as f32 * 0.01
        }
    });
    let (e, groups) = load(&p);
    let s = fpgm::scores(group(&groups, "block1"), &e.checkpoint).unwrap();
    assert_eq!(*low_first(&s).last().unwrap(), 2);
}

#[test]
fn lamp_scores_are_the_squared_magnitude_over_the_tail_sum() {
    assert_eq!(
        lamp::lamp(&[1.0, 4.0, 2.0, 3.0]),
        vec![1.0 / 10.0, 4.0 / 4.0, 2.0 / 9.0, 3.0 / 7.0]
    );
    let dir = tempfile::tempdir().unwrap();
    // Filter c = sqrt((c + 1) / 9) * ones: its squared norm is c + 1.
    let p = block1_filters(dir.path(), |c| ((c as f32 + 1.0) / 9.0).sqrt());
    let (e, groups) = load(&p);
    let s = lamp::scores(group(&groups, "block1"), &e.checkpoint).unwrap();
    for (c, v) in s.iter().enumerate() {
        let tail: f64 = (c..8).map(|j| j as f64 + 1.0).sum();
        assert!((v - (c as f64 + 1.0) / tail).abs() < 1e-5, "unit {c}: {v}");
    }
    assert_eq!(low_first(&s), (0..8).collect::<Vec<_>>());
    // Comparable across layers: every layer's largest unit scores 1.
    let (e, groups) = load(&common::parity(FIXTURE));
    for g in &groups {
        let s = lamp::scores(g, &e.checkpoint).unwrap();
        let top = s.iter().copied().fold(0.0, f64::max);
        assert!((top - 1.0).abs() < 1e-12, "{}: {top}", g.name);
    }
}

#[test]
fn taylor_is_the_absolute_sum_of_weight_times_gradient_over_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let p = block1_filters(dir.path(), |c| c as f32 - 3.5);
    let (e, groups) = load(&p);
    let g = group(&groups, "block1");
    // dL/dw = 1 on every filter weight: I(c) = |9 (c - 3.5)|; the BatchNorm's parameters get
    // gradient 0 here.
    let mut grads = BTreeMap::new();
    grads.insert(
        "block1.conv.weight".to_string(),
        Tensor::ones((8, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let s = taylor::scores(g, &e.checkpoint, &grads).unwrap();
    for (c, v) in s.iter().enumerate() {
        assert!((v - 9.0 * (c as f64 - 3.5).abs()).abs() < 1e-5);
    }
    // Signs inside a unit cancel before the absolute value: w = (1, -1, ...), g = 1 gives 0.
    let p = edited(FIXTURE, dir.path(), "sign.safetensors", |t, _| {
        let mut v = vec![0.5f32; 72];
        for (k, x) in v.iter_mut().enumerate().take(9) {
            *x = if k % 2 == 0 { 1.0 } else { -1.0 };
        }
        v[8] = 0.0; // unit 0: four +1, four -1, one 0
        t.insert(
            "block1.conv.weight".into(),
            Tensor::from_vec(v, (8, 1, 3, 3), &Device::Cpu).unwrap(),
        );
    });
    let (e, groups) = load(&p);
    let s = taylor::scores(group(&groups, "block1"), &e.checkpoint, &grads).unwrap();
    assert_eq!(s[0], 0.0);
    assert!(s[1..].iter().all(|&v| (v - 4.5).abs() < 1e-6));
}

#[test]
fn taylor_on_the_ssl_loss_ranks_a_dead_unit_last_and_prunes_it_first() {
    // Unit 5 of block1 has all its producing parameters at 0: removing it changes nothing,
    // so its first-order importance is exactly 0, the lowest.
    let dir = tempfile::tempdir().unwrap();
    let p = edited(FIXTURE, dir.path(), "dead.safetensors", |t, m| {
        for name in ["block1.conv.weight", "block1.bn.weight", "block1.bn.bias"] {
            let x = t[name].clone();
            let mut mask = vec![1f32; x.dim(0).unwrap()];
            mask[5] = 0.0;
            let shape: Vec<usize> = (0..x.rank())
                .map(|d| if d == 0 { x.dim(0).unwrap() } else { 1 })
                .collect();
            let mask = Tensor::from_vec(mask, shape, &Device::Cpu).unwrap();
            t.insert(name.into(), x.broadcast_mul(&mask).unwrap());
        }
        m.insert("memprune.framework".into(), "simclr".into());
    });
    let (pol, out) = write_policy(
        dir.path(),
        "model: MODEL\ndata: {points: 40}\nactions:\n  - prune: {criterion: taylor, count: 1, layers: [block1]}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT, json: OUTJ}\n"
            .replace("OUTJ", &dir.path().join("r.json").display().to_string())
            .as_str(),
        &p,
    );
    let text = ok(&common::memprune(&["--policy", common::s(&pol)]));
    assert!(text.contains("taylor on the simclr loss"), "{text}");
    let j = common::json(&dir.path().join("r.json"));
    let groups = j["plan"]["groups"].as_array().unwrap();
    let b1 = groups.iter().find(|g| g["group"] == "block1").unwrap();
    assert_eq!(b1["pruned"], serde_json::json!([5]));
    assert!(out.exists());
}

#[test]
fn each_criterion_runs_per_layer_and_globally() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::parity(FIXTURE);
    for c in ["bn-scale", "fpgm", "lamp", "taylor"] {
        for scope in ["per-layer", "global"] {
            let body = format!("model: MODEL\ndata: {{points: 16}}\nactions:\n  - prune: {{criterion: {c}, fraction: 0.25, scope: {scope}, loss: simclr}}\nevaluation: {{speed: false, probe: false}}\noutput: {{checkpoint: OUT}}\n");
            let body = if c == "taylor" {
                body
            } else {
                body.replace(", loss: simclr", "")
            };
            let (pol, out) = write_policy(dir.path(), &body, &model);
            let text = ok(&common::memprune(&["--policy", common::s(&pol), "-q"]));
            assert!(out.exists(), "{c} {scope}: {text}");
            let after = Encoder::load(&out, &LoadOptions::default()).unwrap();
            let before = Encoder::load(&model, &LoadOptions::default()).unwrap();
            assert!(after.params() < before.params(), "{c} {scope}");
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn unknown_criteria_and_losses_and_bn_scale_on_a_vit_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::parity(FIXTURE);
    let body = "model: MODEL\ndata: {points: 16}\nactions:\n  - prune: {criterion: CRIT, fraction: 0.25}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT}\n";
    let run = |b: &str, m: &Path, needles: &[&str]| {
        let (pol, out) = write_policy(dir.path(), b, m);
        refused(&common::memprune(&["--policy", common::s(&pol)]), needles);
        assert!(!out.exists());
    };
    run(
        &body.replace("CRIT", "hrank"),
        &model,
        &["policy.yaml", "unknown variant `hrank`"],
    );
    run(
        &body.replace("CRIT", "taylor, loss: distill"),
        &model,
        &["policy.yaml", "unknown variant `distill`"],
    );
    // The fixture records no framework: the loss would be a guess.
    run(
        &body.replace("CRIT", "taylor"),
        &model,
        &["policy.yaml", "line 4", "needs `loss`"],
    );
    run(
        &body.replace("CRIT", "l1-norm, loss: simclr"),
        &model,
        &["policy.yaml", "loss", "only the `taylor` criterion"],
    );
    // MAE's loss needs a decoder this ResNet has not.
    run(
        &body.replace("CRIT", "taylor, loss: mae"),
        &model,
        &["policy.yaml", "criterion taylor", "mae"],
    );
    let vit = common::root().join("tests/fixtures/vit/vit_tiny.safetensors");
    run(
        &body
            .replace("CRIT", "bn-scale")
            .replace("model: MODEL", "model: MODEL\nheads: 3"),
        &vit,
        &["policy.yaml", "bn-scale", "no BatchNorm"],
    );
}
