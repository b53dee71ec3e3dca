//! Downstream fine-tuning, kNN and the layer choice of Table 5.

mod common;

use candle_core::{DType, Device, Tensor};
use memprune::data::{ImageSet, Split};
use memprune::eval::finetune::FinetuneSettings;
use memprune::eval::finetune_experiment::{candidate_layers, choose_layers, Choice};
use memprune::eval::knn::{knn, KnnSettings};
use memprune::metrics::bootstrap::Interval;
use memprune::metrics::layer_mem::LayerMemLayer;
use memprune::model::{Encoder, LoadOptions};
use memprune::plan::planner::{parameter_layers, rank_layers};
use memprune::plan::policy::Rank;
use std::path::Path;

/// memprune on 2 threads, its temporary files in `dir`.
fn memprune(dir: &Path, args: &[&str]) -> std::process::Output {
    let tmp = dir.to_str().unwrap();
    common::memprune_env(args, &[("RAYON_NUM_THREADS", "2"), ("TMPDIR", tmp)], &[])
}

fn t(rows: &[[f32; 2]]) -> Tensor {
    let v: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(v, (rows.len(), 2), &Device::Cpu).unwrap()
}

#[test]
fn knn_votes_by_similarity_and_temperature() {
    // Class 0 along +x, class 1 along +y (norms differ: only directions count).
    let train = t(&[[1.0, 0.0], [5.0, 0.2], [0.0, 1.0], [0.1, 3.0], [0.2, 2.0]]);
    let ty = [0, 0, 1, 1, 1];
    let test = t(&[[2.0, 0.1], [0.1, 1.0], [1.0, 0.9]]);
    let s = KnnSettings {
        k: 1,
        ..Default::default()
    };
    let r = knn(&train, &ty, &test, &[0, 1, 0], &s).unwrap();
    // k = 1: the nearest directions are training points 1, 4 and 1 (classes 0, 1, 0).
    assert_eq!((r.top1, r.k, r.classes), (1.0, 1, 2));
    // Point [1, 0.9] with k = 5: class 1 has three neighbours at cos ~0.67-0.75, class 0 two
    // at ~0.74-0.78. At T = 0.07 the closer class 0 wins; at T = 100 the votes are nearly
    // equal and the three of class 1 win.
    let q = t(&[[1.0, 0.9]]);
    let sharp = KnnSettings {
        k: 5,
        temperature: 0.07,
        batch: 1,
    };
    assert_eq!(knn(&train, &ty, &q, &[0], &sharp).unwrap().top1, 1.0);
    let flat = KnnSettings {
        k: 5,
        temperature: 100.0,
        batch: 1,
    };
    let r = knn(&train, &ty, &q, &[0], &flat).unwrap();
    assert_eq!(r.top1, 0.0);
    // Two classes: the label is always among the top 5.
    assert_eq!(r.top5, 1.0);
    // k larger than the training set is clipped; batch size does not change the answer.
    let big = KnnSettings {
        k: 50,
        temperature: 0.07,
        batch: 2,
    };
    let a = knn(&train, &ty, &test, &[0, 1, 0], &big).unwrap();
    let b = knn(
        &train,
        &ty,
        &test,
        &[0, 1, 0],
        &KnnSettings { batch: 500, ..big },
    )
    .unwrap();
    assert_eq!(a.k, 5);
    assert_eq!((a.top1, a.top5), (b.top1, b.top5));
    assert!(KnnSettings {
        k: 0,
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(KnnSettings {
        temperature: f64::NAN,
        ..Default::default()
    }
    .validate()
    .is_err());
}

fn layer(name: &str, corrected: f64, dcorrected: Option<f64>) -> LayerMemLayer {
    let ci = Interval { lo: 0.0, hi: 0.0 };
    LayerMemLayer {
        name: name.into(),
        layer_mem: corrected + 1.0,
        layer_mem_ci: ci,
        dlayer_mem: dcorrected.map(|d| d + 0.5),
        dlayer_mem_ci: dcorrected.map(|_| ci),
        layer_mem_top_half: 0.0,
        layer_mem_bottom_half: 0.0,
        control_layer_mem: Some(1.0),
        control_ci: Some(ci),
        corrected: Some(corrected),
        corrected_ci: Some(ci),
        dcorrected,
        dcorrected_ci: dcorrected.map(|_| ci),
        corrected_p: None,
        star: None,
    }
}

#[test]
fn each_criterion_chooses_the_layers_its_scores_say() {
    let enc = Encoder::load(&memprune::defaults::model_f(), &LoadOptions::default()).unwrap();
    // Known corrected dLayerMem per block: block4 > block6 > block2 > block8 > the rest;
    // block1 has none (its LayerMem, 0.001, stands in).
    let d = [
        None,
        Some(0.03),
        Some(-0.01),
        Some(0.05),
        Some(0.0),
        Some(0.04),
        Some(-0.02),
        Some(0.02),
    ];
    let mut lm: Vec<LayerMemLayer> = d
        .iter()
        .enumerate()
        .map(|(i, &v)| layer(&format!("block{}", i + 1), 0.001, v))
        .collect();
    lm.push(layer("pool", 0.5, Some(0.9))); // measured but not trainable: never chosen
    let layers = candidate_layers(&enc, &lm);
    let want: Vec<String> = (1..=8).map(|i| format!("block{i}")).collect();
    assert_eq!(layers, want);
    let params: Vec<(String, Vec<String>)> =
        layers.iter().map(|n| (n.clone(), Vec::new())).collect();
    let ranked: Vec<usize> = rank_layers(&params, &lm, Rank::Dlayermem)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(ranked, vec![3, 5, 1, 7, 0, 4, 2, 6]);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let pick = |c| choose_layers(c, &layers, &ranked, 0);
    assert!(pick(Choice::HeadOnly).is_empty());
    assert_eq!(pick(Choice::TopDlayermem(1)), names(&["block4"]));
    assert_eq!(pick(Choice::TopDlayermem(2)), names(&["block4", "block6"]));
    assert_eq!(
        pick(Choice::TopDlayermem(3)),
        names(&["block2", "block4", "block6"])
    );
    assert_eq!(pick(Choice::Last(1)), names(&["block8"]));
    assert_eq!(
        pick(Choice::Last(3)),
        names(&["block6", "block7", "block8"])
    );
    // Random: 3 distinct layers, a pure function of the seed, not the same for every seed.
    let draws: Vec<Vec<String>> = (0..6)
        .map(|s| choose_layers(Choice::Random(3), &layers, &ranked, s))
        .collect();
    for d in &draws {
        let mut u = d.clone();
        u.dedup();
        assert_eq!(u.len(), 3);
    }
    assert_eq!(
        draws[0],
        choose_layers(Choice::Random(3), &layers, &ranked, 0)
    );
    assert!(draws.iter().any(|d| d != &draws[0]));
    // The planner's `train: {by: dlayermem, top: 2}` ranks the same way.
    let by_planner: Vec<String> = rank_layers(&parameter_layers(&enc), &lm, Rank::Dlayermem)
        .into_iter()
        .take(2)
        .map(|(k, _)| parameter_layers(&enc)[k].0.clone())
        .collect();
    assert_eq!(by_planner, names(&["block4", "block6"]));
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn subset(set: &ImageSet, n: usize) -> ImageSet {
    let px = set.channels * set.height * set.width;
    ImageSet {
        pixels: set.pixels[..n * px].to_vec(),
        labels: set.labels.as_ref().map(|l| l[..n].to_vec()),
        ..set.clone()
    }
}

#[test]
fn fine_tuning_changes_the_chosen_layer_only() {
    use memprune::train::{Framework, TrainConfig, Trainer};
    let enc = Encoder::load(&memprune::defaults::model_f(), &LoadOptions::default()).unwrap();
    let train = subset(
        &memprune::data::open(&memprune::defaults::downstream(), Split::Train).unwrap(),
        64,
    );
    let s = FinetuneSettings::default();
    let cfg = TrainConfig {
        framework: Framework::Supervised,
        arch: memprune::train::init::TrainArch::named("resnet9").unwrap(),
        widths: Vec::new(),
        epochs: 1,
        batch: 32,
        lr: 1e-2,
        optimizer: memprune::train::optim::OptimizerConfig::new(
            memprune::train::optim::OptimizerKind::Adamw,
            s.weight_decay,
        ),
        warmup_epochs: 0.0,
        seed: 0,
        split: memprune::train::split::SplitKind::All,
        split_seed: 0,
        temperature: 0.5,
        augment: s.augment.clone(),
        normalization: memprune::data::Normalization::default_for(train.kind, train.channels),
        save_dtype: DType::F32,
        device: candle_core::Device::Cpu,
        init_from: None,
        trainable: Some(vec!["block8".into()]),
        planted: None,
        vit: Default::default(),
    };
    let mut tr = Trainer::finetune(cfg, &train, "tiny", &enc).unwrap();
    let order = tr.epoch_order(0);
    tr.step(&order[..32], 0).unwrap();
    tr.step(&order[32..64], 0).unwrap();
    let after = tr.model.tensors().unwrap();
    let groups = parameter_layers(&enc);
    let block8: Vec<String> = groups.iter().find(|g| g.0 == "block8").unwrap().1.clone();
    let conv = &block8[0];
    let bn = enc
        .conv_bns()
        .iter()
        .find(|c| &c.conv_name == conv)
        .unwrap()
        .bn_name
        .clone();
    let trained = |k: &str| block8.contains(&k.to_string()) || k.starts_with(&format!("{bn}."));
    let (mut same, mut changed) = (0, 0);
    for (k, before) in &enc.checkpoint.tensors {
        if enc.unused.contains(k) {
            continue;
        }
        let Some(a) = after.get(k) else { continue };
        if trained(k) {
            if bits(a) != bits(before) {
                changed += 1;
            }
        } else {
            assert_eq!(bits(a), bits(before), "{k} changed but block8 alone trains");
            same += 1;
        }
    }
    // block8's conv weight, BN weight and bias moved (its running statistics too).
    assert!(changed >= 3, "only {changed} of block8's tensors changed");
    assert!(same > 20, "{same} frozen tensors compared");
}

#[test]
fn fine_tuning_settings_refuse_nonsense() {
    let ok = FinetuneSettings::default();
    ok.validate().unwrap();
    for bad in [
        FinetuneSettings {
            epochs: 0,
            ..ok.clone()
        },
        FinetuneSettings {
            lr: f64::NAN,
            ..ok.clone()
        },
        FinetuneSettings {
            lr: -1.0,
            ..ok.clone()
        },
        FinetuneSettings {
            batch: 1,
            ..ok.clone()
        },
        FinetuneSettings {
            seeds: vec![],
            ..ok.clone()
        },
        FinetuneSettings {
            seeds: vec![1, 1],
            ..ok.clone()
        },
        FinetuneSettings {
            warmup_epochs: f64::INFINITY,
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn a_policy_fine_tunes_the_layers_it_marks_trainable() {
    let dir = tempfile::tempdir().unwrap();
    // A small downstream task: 128 training and 64 test digits of the embedded MNIST.
    let down = dir.path().join("digits");
    std::fs::create_dir_all(&down).unwrap();
    for (prefix, n) in [("train", 128usize), ("t10k", 64)] {
        let split = if prefix == "train" {
            Split::Train
        } else {
            Split::Test
        };
        let s = memprune::data::open(&memprune::defaults::downstream(), split).unwrap();
        let s = subset(&s, n);
        common::write_idx(
            &down.join(format!("{prefix}-images-idx3-ubyte")),
            0x803,
            &[n as u32, 28, 28],
            &s.pixels,
        );
        let labels: Vec<u8> = s.labels.unwrap().iter().map(|&l| l as u8).collect();
        common::write_idx(
            &down.join(format!("{prefix}-labels-idx1-ubyte")),
            0x801,
            &[n as u32],
            &labels,
        );
    }
    let out = dir.path().join("ft.safetensors");
    let policy = dir.path().join("ft.yaml");
    std::fs::write(
        &policy,
        format!(
            "actions:\n  - freeze: {{layers: [\"*\"]}}\n  - train: {{layers: [block8]}}\nevaluation:\n  speed: false\n  knn: true\n  finetune: {{data: {}, epochs: 1, seeds: [0, 1]}}\noutput: {{checkpoint: {}, json: {}}}\n",
            down.display(),
            out.display(),
            dir.path().join("ft.json").display()
        ),
    )
    .unwrap();
    let o = memprune(dir.path(), &["--policy", policy.to_str().unwrap(), "-q"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("kNN top-1"), "{stdout}");
    assert!(stdout.contains("fine-tuned on"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("policy's layers"))
        .unwrap();
    assert!(line.contains("block8"), "{line}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ft.json")).unwrap())
            .unwrap();
    let runs = j["after"]["finetune"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(j["after"]["finetune"]["layers"][0], "block8");
    assert!(j["before"]["finetune"]["layers"]
        .as_array()
        .unwrap()
        .is_empty());
    for r in runs {
        let a = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a));
    }
    // Fine-tuning needs a `train` or `freeze` action to know the layers.
    std::fs::write(
        &policy,
        "actions:\n  - prune: {fraction: 0.1, criterion: l1-norm}\nevaluation:\n  finetune: {epochs: 1}\n",
    )
    .unwrap();
    let o = memprune(dir.path(), &["--policy", policy.to_str().unwrap(), "-q"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("evaluation.finetune") && err.lines().count() == 1,
        "{err}"
    );
    std::fs::write(
        &policy,
        "actions:\n  - train: {layers: [block8]}\nevaluation:\n  finetune: {epochs: 0}\n",
    )
    .unwrap();
    let o = memprune(dir.path(), &["--policy", policy.to_str().unwrap(), "-q"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("epochs must be at least 1"), "{err}");
}

#[test]
fn comparisons_need_a_spread_to_give_a_verdict() {
    use memprune::eval::finetune::FinetuneRun;
    use memprune::eval::finetune_experiment::{compare, Row};
    let row = |choice: Choice, layers: &[&str], acc: &[f64]| {
        let runs: Vec<FinetuneRun> = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| FinetuneRun {
                seed: i as u64,
                accuracy: a,
                final_loss: 0.0,
                seconds: 0.0,
            })
            .collect();
        let v: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
        let m = memprune::eval::finetune::mean(acc);
        Row {
            choice,
            label: choice.label(),
            layers: vec![v; acc.len()],
            runs,
            mean: m,
            std: memprune::eval::finetune::std(acc),
            paper: None,
        }
    };
    let verdict = |top: Row, last: Row| compare(&[top, last], 1).unwrap().verdict;
    let (t, l) = (Choice::TopDlayermem(1), Choice::Last(1));
    assert_eq!(
        verdict(
            row(t, &["a"], &[0.9, 0.91, 0.92]),
            row(l, &["b"], &[0.8, 0.81, 0.82])
        ),
        "held"
    );
    assert_eq!(
        verdict(
            row(t, &["a"], &[0.8, 0.81, 0.82]),
            row(l, &["b"], &[0.9, 0.91, 0.92])
        ),
        "not held"
    );
    assert_eq!(
        verdict(
            row(t, &["a"], &[0.80, 0.90, 0.85]),
            row(l, &["b"], &[0.86, 0.84, 0.85])
        ),
        "indistinguishable from noise"
    );
    assert_eq!(
        verdict(row(t, &["b"], &[0.9, 0.8]), row(l, &["b"], &[0.9, 0.8])),
        "same layers"
    );
    // One seed each: no spread, so no verdict either way, however large the difference.
    assert_eq!(
        verdict(row(t, &["a"], &[0.95]), row(l, &["b"], &[0.60])),
        "one seed: no spread to judge by"
    );
}
