//! `memprune train` and `memprune probe` end to end on a tiny IDX data set: exact resume,
//! determinism, the split metadata that `measure layer` checks, and the probe's output.

use std::path::{Path, PathBuf};

mod common;
use common::{ok, tiny_idx};

fn memprune(args: &[&str]) -> std::process::Output {
    common::memprune_threads(args, "2")
}

const W: &str = "2,4,4,4,4,8,8,8";

/// `memprune train` on `data` with batch 16, writing `out`, plus `args`.
fn train_with(data: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--batch",
        "16",
        "-q",
    ];
    all.extend(["--out", out.to_str().unwrap()]);
    all.extend(args);
    memprune(&all)
}

/// SimCLR on a ResNet9 of widths `W`.
fn train(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--framework", "simclr", "--widths", W];
    args.extend(extra);
    train_with(data, out, &args)
}

/// Tiny IDX data in `dir` and one SimCLR epoch on it, written to `dir/name`.
fn one_epoch_on_tiny_data(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let data = tiny_idx(dir, 40);
    let ckpt = dir.join(name);
    ok(&train(&data, &ckpt, &["--epochs", "1"]));
    (data, ckpt)
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn resume_continues_exactly_and_runs_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 40);
    let (a, b, c) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
        dir.path().join("c.safetensors"),
    );
    ok(&train(&data, &a, &["--epochs", "2"]));
    ok(&train(&data, &c, &["--epochs", "2"]));
    assert_eq!(tensors(&a), tensors(&c), "two identical runs differ");
    ok(&train(&data, &b, &["--epochs", "2", "--lr", "0.1"]));
    assert_ne!(tensors(&a), tensors(&b));
    // One epoch of a two-epoch schedule, interrupted, then resumed: same as straight through.
    ok(&train(&data, &b, &["--epochs", "1"]));
    let out = train(
        &data,
        &b,
        &["--epochs", "2", "--resume", b.to_str().unwrap()],
    );
    ok(&out);
    assert_eq!(
        tensors(&a),
        tensors(&b),
        "resumed run differs from the straight one"
    );
    // Resuming with another split is refused.
    let out = train(
        &data,
        &b,
        &[
            "--epochs",
            "3",
            "--split",
            "shared+candidates",
            "--resume",
            b.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("memprune.split"));
    // The checkpoint is a measurable encoder with its training recorded.
    let text = ok(&memprune(&["inspect", a.to_str().unwrap()]));
    assert!(text.contains("resnet9"), "{text}");
}

#[test]
fn measure_layer_refuses_mismatched_f_g_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 40);
    let p = |n: &str| dir.path().join(n);
    ok(&train(
        &data,
        &p("f.st"),
        &["--epochs", "1", "--split", "shared+candidates"],
    ));
    ok(&train(
        &data,
        &p("f2.st"),
        &[
            "--epochs",
            "1",
            "--split",
            "shared+candidates",
            "--seed",
            "1",
        ],
    ));
    ok(&train(
        &data,
        &p("g.st"),
        &["--epochs", "1", "--split", "shared+independent"],
    ));
    ok(&train(
        &data,
        &p("g1.st"),
        &[
            "--epochs",
            "1",
            "--split",
            "shared+independent",
            "--split-seed",
            "1",
        ],
    ));
    let d = data.to_str().unwrap();
    let layer = |f: &str, g: &str| {
        memprune(&[
            "measure",
            "layer",
            p(f).to_str().unwrap(),
            "--reference",
            p(g).to_str().unwrap(),
            "--data",
            d,
            "--views",
            "1",
            "-q",
        ])
    };
    let out = layer("f.st", "f2.st");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shared+independent"), "{err}");
    let out = layer("f.st", "g1.st");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("split_seed") && err.contains("different splits"),
        "{err}"
    );
    // Roles swapped (the symmetric estimate needs it): g scored on its own independent
    // points against f.
    let text = ok(&layer("g.st", "f.st"));
    assert!(text.contains("on 4 points"), "{text}");
    // The matching pair runs, on f's recorded candidates (40 / 10 = 4 points).
    let text = ok(&layer("f.st", "g.st"));
    assert!(text.contains("on 4 points"), "{text}");
}

#[test]
fn probe_cli_reports_accuracy_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (data, m) = one_epoch_on_tiny_data(dir.path(), "m.st");
    let j = dir.path().join("p.json");
    let text = ok(&memprune(&[
        "probe",
        m.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "100",
        "--json",
        j.to_str().unwrap(),
    ]));
    assert!(text.contains("top-1"), "{text}");
    let v = common::json(&j);
    let acc = v["result"]["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["result"]["test_points"], 20);
    let raw = ok(&memprune(&[
        "probe",
        "--raw",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "100",
    ]));
    assert!(raw.contains("raw pixels"), "{raw}");
}

#[test]
fn torchvision_resnets_train_and_load_back_as_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 40);
    for (arch, want) in [
        (
            "resnet18",
            "resnet18 (basic blocks [2, 2, 2, 2], cifar stem)",
        ),
        (
            "resnet50",
            "resnet50 (bottleneck blocks [3, 4, 6, 3], cifar stem)",
        ),
    ] {
        let out = dir.path().join(format!("{arch}.safetensors"));
        let args = [
            "--framework",
            "simclr",
            "--arch",
            arch,
            "--widths",
            "2,4,4,4",
        ];
        ok(&train_with(
            &data,
            &out,
            &[&args[..], &["--epochs", "1"]].concat(),
        ));
        let enc = memprune::model::Encoder::load(&out, &Default::default()).unwrap();
        assert_eq!(enc.describe(), want);
        assert_eq!(enc.checkpoint.metadata["memprune.arch"], arch);
        assert!(enc.unused.iter().any(|k| k.starts_with("projector.")));
    }
    let bad = memprune(&[
        "train",
        "--framework",
        "simclr",
        "--arch",
        "resnet18",
        "--widths",
        "2,4,4",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("x.safetensors").to_str().unwrap(),
        "-q",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("4 positive stage widths"));
}

/// `train --init`: the layers a checkpoint marks trainable are the ones fine-tuned, the
/// metadata says so, and the input checkpoint is never written over.
#[test]
fn fine_tuning_reads_the_trainable_layers_and_keeps_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let (data, pre) = one_epoch_on_tiny_data(dir.path(), "pre.safetensors");
    // Mark block8 trainable, as a policy's freeze/train actions do.
    let ck = memprune::checkpoint::Checkpoint::load(&pre, None).unwrap();
    let mut meta = ck.metadata.clone();
    meta.insert("memprune.trainable".into(), r#"["block8"]"#.into());
    let marked = dir.path().join("marked.safetensors");
    memprune::checkpoint::write_safetensors_atomic(&marked, &ck.tensors, &meta, &[]).unwrap();
    let before = std::fs::read(&marked).unwrap();

    let out = dir.path().join("ft.safetensors");
    let ft = |init: &Path, out: &Path| {
        let init = init.to_str().unwrap();
        let args = ["--framework", "supervised", "--init", init, "--epochs", "1"];
        train_with(&data, out, &args)
    };
    ok(&ft(&marked, &out));
    let t = memprune::checkpoint::Checkpoint::load(&out, None).unwrap();
    assert_eq!(t.metadata["memprune.trainable"], r#"["block8"]"#);
    assert!(t.tensors.contains_key("fc.weight"));
    let same = |k: &str| {
        t.tensors[k]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            == ck.tensors[k]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
    };
    assert!(same("block7.conv.weight") && same("block1.bn.running_var"));
    assert!(!same("block8.conv.weight"));

    let r = ft(&marked, &marked);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("refusing to write over"), "{err}");
    assert_eq!(std::fs::read(&marked).unwrap(), before, "the input changed");
}

#[test]
fn train_device_option() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 40);
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    // `--device cpu` is the default: the same checkpoint, bit for bit.
    ok(&train(&data, &a, &["--epochs", "1"]));
    ok(&train(&data, &b, &["--epochs", "1", "--device", "cpu"]));
    assert_eq!(tensors(&a), tensors(&b), "--device cpu changed the weights");
    // A device this build cannot use, or a malformed one: one line, exit 1, no output.
    let c = dir.path().join("c.safetensors");
    let specs: &[&str] = if cfg!(feature = "cuda") {
        &["gpu", "cuda:x"]
    } else {
        &["cuda", "cuda:1", "gpu"]
    };
    for spec in specs {
        let out = train(&data, &c, &["--epochs", "1", "--device", spec]);
        assert_eq!(out.status.code(), Some(1), "--device {spec}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "--device {spec}: {err}");
        assert!(err.contains("--device"), "{err}");
        assert!(!c.exists(), "--device {spec} wrote {}", c.display());
    }
}

#[test]
fn the_imagenet_stem_trains() {
    // Images over 64 pixels get the ImageNet stem (7x7 stride 2, 3x3 stride-2 max-pool),
    // whose pool's backward candle refuses (kernel != stride).
    let dir = tempfile::tempdir().unwrap();
    let data = common::idx_folder(dir.path(), "big", 8, 72, 72);
    let out = dir.path().join("r18.safetensors");
    let text = common::ok(&common::memprune(&[
        "train",
        "--framework",
        "simclr",
        "--arch",
        "resnet18",
        "--widths",
        "2,2,2,2",
        "--data",
        common::s(&data),
        "--epochs",
        "1",
        "--batch",
        "4",
        "-q",
        "--out",
        common::s(&out),
    ]));
    assert!(text.contains("trained 1 epochs"), "{text}");
    let inspect = common::ok(&common::memprune(&[
        "inspect",
        common::s(&out),
        "--size",
        "72",
    ]));
    assert!(inspect.contains("imagenet stem"), "{inspect}");
}
