//! Recovery (`- recover: {...}`): feature distillation of the pruned encoder toward the
//! unpruned one changes only the pruned encoder (the teacher's file is untouched, frozen
//! layers stay bit-identical), lowers its distillation loss, is the same whatever the
//! thread count, and bad settings are refused with one line.

use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{json, memprune, memprune_threads, ok, parity, refused, s, tiny_idx};

fn policy(dir: &Path, name: &str, body: &str) -> (PathBuf, PathBuf, PathBuf) {
    let data = tiny_idx(dir, 40);
    let out = dir.join(format!("{name}.safetensors"));
    let js = dir.join(format!("{name}.json"));
    let text = body
        .replace("MODEL", s(&parity("resnet9_c1.safetensors")))
        .replace("DATA", s(&data))
        .replace("OUT", s(&out))
        .replace("JSON", s(&js));
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    (p, out, js)
}

const HEAD: &str = "model: MODEL\ndata: {path: DATA}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT, json: JSON}\n";
const PRUNE: &str =
    "actions:\n  - freeze: {layers: [block1]}\n  - prune: {criterion: l1-norm, fraction: 0.3}\n";

fn tensors(p: &Path) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(p, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    let v = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    a.dims() == b.dims() && v(a) == v(b)
}

#[test]
fn recovery_trains_only_the_pruned_encoder_and_lowers_its_loss() {
    let dir = tempfile::tempdir().unwrap();
    let model = parity("resnet9_c1.safetensors");
    let teacher_bytes = std::fs::read(&model).unwrap();
    let (p0, o0, _) = policy(dir.path(), "pruned", &format!("{HEAD}{PRUNE}"));
    let (p1, o1, j1) = policy(
        dir.path(),
        "recovered",
        &format!("{HEAD}{PRUNE}  - recover: {{epochs: 8, batch: 8, lr: 0.003}}\n"),
    );
    ok(&memprune(&["--policy", s(&p0), "-q"]));
    let text = ok(&memprune(&["--policy", s(&p1), "-q"]));
    assert!(
        text.contains("distilled toward the unpruned encoder"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        teacher_bytes,
        "the teacher changed"
    );
    let (a, b) = (tensors(&o0), tensors(&o1));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "recovery changed the tensors' names"
    );
    let mut changed = Vec::new();
    for (k, t) in &a {
        assert_eq!(t.dims(), b[k].dims(), "{k}");
        if !same(t, &b[k]) {
            changed.push(k.clone());
        }
    }
    // The frozen layer (block1: its conv and BatchNorm) is bit-identical; trained ones moved.
    let block1: Vec<&String> = changed
        .iter()
        .filter(|k| model_layer(&model, k).as_deref() == Some("block1"))
        .collect();
    assert!(block1.is_empty(), "frozen tensors changed: {block1:?}");
    assert!(changed.len() > 4, "{changed:?}");
    let rec = &json(&j1)["recovery"]["recover"];
    let (before, after) = (
        rec["loss_before"].as_f64().unwrap(),
        rec["loss_after"].as_f64().unwrap(),
    );
    assert!(after < before, "distillation loss {before} -> {after}");
}

/// The parameter layer (as `memprune inspect` names it) that owns tensor `k`, if any: its
/// conv weight, BatchNorm parameters or running statistics.
fn model_layer(model: &Path, k: &str) -> Option<String> {
    let enc = memprune::model::Encoder::load(model, &Default::default()).unwrap();
    let groups = enc.trainable_groups();
    groups
        .iter()
        .find(|(_, convs)| {
            convs.iter().any(|c| {
                let stem = c.trim_end_matches(".weight");
                let bn = enc
                    .conv_bns()
                    .into_iter()
                    .find(|cb| &cb.conv_name == c)
                    .map(|cb| cb.bn_name.clone())
                    .unwrap_or_default();
                k == c
                    || k.starts_with(&format!("{stem}."))
                    || (!bn.is_empty() && k.starts_with(&format!("{bn}.")))
            })
        })
        .map(|(n, _)| n.clone())
}

#[test]
fn recovery_is_the_same_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{HEAD}actions:\n  - prune: {{criterion: l1-norm, fraction: 0.3}}\n  - recover: {{epochs: 2, batch: 8, loss: mse, taps: [block4, pool]}}\nschedule: {{steps: 2, recover: {{epochs: 1, batch: 8}}}}\n"
    );
    let (p, out, _) = policy(dir.path(), "t", &body);
    let mut files = Vec::new();
    for threads in ["1", "2"] {
        let r = memprune_threads(&["--policy", s(&p), "-q"], threads);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        files.push(std::fs::read(&out).unwrap());
        std::fs::remove_file(&out).unwrap();
    }
    assert!(
        files[0] == files[1],
        "1 and 2 threads wrote different checkpoints"
    );
}

#[test]
fn bad_recover_settings_are_refused_with_one_line() {
    let prune = "actions:\n  - prune: {criterion: l1-norm, fraction: 0.3}\n";
    for (rec, needles) in [
        (
            "{epochs: 0}",
            vec!["actions[1].recover.epochs must be at least 1"],
        ),
        (
            "{lr: -0.1}",
            vec!["actions[1].recover.lr must be a finite number > 0"],
        ),
        ("{loss: kl}", vec!["unknown variant `kl`", "cosine"]),
        ("{epoch: 3}", vec!["unknown field `epoch`"]),
        ("{batch: 1}", vec!["batch must be at least 2"]),
        ("{taps: [nowhere]}", vec!["`nowhere` is not a layer"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (p, out, _) = policy(
            dir.path(),
            "bad",
            &format!("{HEAD}{prune}  - recover: {rec}\n"),
        );
        let mut n = needles.clone();
        n.push(s(&p));
        refused(&memprune(&["--policy", s(&p), "-q"]), &n);
        assert!(!out.exists());
    }
    // A recovery before the pruning, with no pruning, or of masked units.
    for (body, needle) in [
        (
            "actions:\n  - recover: {}\n  - prune: {criterion: l1-norm, fraction: 0.3}\n",
            "comes before actions[1].prune",
        ),
        ("actions:\n  - freeze: {layers: [block1]}\n  - recover: {}\n", "prunes nothing"),
        (
            "actions:\n  - prune: {criterion: l1-norm, fraction: 0.3, mode: mask}\n  - recover: {}\n",
            "needs `mode: remove`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (p, _, _) = policy(dir.path(), "order", &format!("{HEAD}{body}"));
        refused(&memprune(&["--policy", s(&p), "-q"]), &[needle]);
    }
}
