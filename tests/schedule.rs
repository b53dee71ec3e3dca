//! Pruning in steps (`schedule: {steps: K}`): K steps remove what one step removes, each
//! planned on the model the earlier steps left; bad schedules are refused with one line.

use std::path::{Path, PathBuf};

mod common;
use common::{json, memprune, ok, parity, refused, s, tiny_idx};

/// Writes `body` as a policy in `dir`, with `MODEL`, `DATA`, `OUT` and `JSON` filled in;
/// returns the policy, checkpoint and JSON paths.
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

const HEAD: &str = "model: MODEL\ndata: {path: DATA, points: 20}\nmetrics: {views: 2}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT, json: JSON}\n";

/// Units pruned per group, as the JSON's plan says.
fn pruned(js: &Path) -> Vec<(String, usize, usize)> {
    json(js)["plan"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_string(),
                g["channels"].as_u64().unwrap() as usize,
                g["pruned"].as_array().unwrap().len(),
            )
        })
        .collect()
}

fn widths(ckpt: &Path) -> Vec<usize> {
    memprune::model::Encoder::load(ckpt, &Default::default())
        .unwrap()
        .widths()
}

#[test]
fn three_steps_remove_what_one_step_removes() {
    for (scope, criterion) in [
        ("per-layer", "l1-norm"),
        ("global", "l1-norm"),
        ("per-layer", "unitmem"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let action = format!(
            "actions:\n  - prune: {{criterion: {criterion}, fraction: 0.4, scope: {scope}}}\n"
        );
        let (p1, o1, j1) = policy(dir.path(), "one", &format!("{HEAD}{action}"));
        let (p3, o3, j3) = policy(
            dir.path(),
            "three",
            &format!("{HEAD}{action}schedule: {{steps: 3}}\n"),
        );
        ok(&memprune(&["--policy", s(&p1), "-q"]));
        let text = ok(&memprune(&["--policy", s(&p3), "-q"]));
        let (a, b) = (pruned(&j1), pruned(&j3));
        assert_eq!(a.len(), b.len());
        let total = |v: &[(String, usize, usize)]| v.iter().map(|x| x.2).sum::<usize>();
        assert!(total(&a) > 0);
        assert_eq!(total(&a), total(&b), "{scope} {criterion}");
        if scope == "per-layer" {
            // Each layer loses what it loses in one step (a global ranking re-measured
            // between steps may spread the same total differently over the layers).
            for ((g, n, k1), (_, _, k3)) in a.iter().zip(&b) {
                assert_eq!(k1, k3, "{scope} {criterion}: `{g}` ({n} units)");
            }
            assert_eq!(widths(&o1), widths(&o3), "{scope} {criterion}");
        }
        // Three steps, each said, adding up to the total.
        let steps = json(&j3)["recovery"]["steps"].as_array().unwrap().clone();
        assert_eq!(steps.len(), 3);
        let per: Vec<u64> = steps
            .iter()
            .map(|s| s["units_pruned"].as_u64().unwrap())
            .collect();
        assert_eq!(
            per.iter().sum::<u64>() as usize,
            a.iter().map(|x| x.2).sum::<usize>()
        );
        assert!(per.iter().all(|&k| k > 0), "{per:?}");
        assert!(text.contains("step 3:"), "{text}");
        // The recorded units are the unpruned model's indices, distinct and in range.
        let model = memprune::model::Encoder::load(&o3, &Default::default()).unwrap();
        let rec: std::collections::BTreeMap<String, Vec<usize>> =
            serde_json::from_str(&model.checkpoint.metadata["memprune.pruned"]).unwrap();
        for (g, n, k) in &b {
            let units = rec.get(g).cloned().unwrap_or_default();
            assert_eq!(units.len(), *k);
            assert!(units.windows(2).all(|w| w[0] < w[1]) && units.iter().all(|u| u < n));
        }
    }
}

#[test]
fn plan_says_a_schedule_shows_its_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let (p, out, _) = policy(
        dir.path(),
        "plan",
        &format!("{HEAD}actions:\n  - prune: {{criterion: l1-norm, fraction: 0.4}}\nschedule: {{steps: 2}}\n"),
    );
    let text = ok(&memprune(&["plan", "--policy", s(&p), "-q"]));
    assert!(text.contains("step 1 of 2"), "{text}");
    assert!(!out.exists());
}

#[test]
fn two_prune_actions_say_they_combine_as_a_union() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, _) = policy(
        dir.path(),
        "two",
        &format!("{HEAD}actions:\n  - prune: {{criterion: l1-norm, fraction: 0.25}}\n  - prune: {{criterion: l1-norm, fraction: 0.25}}\n"),
    );
    let text = ok(&memprune(&["plan", "--policy", s(&p), "-q"]));
    assert!(text.contains("combine as a union"), "{text}");
}

#[test]
fn bad_schedules_are_refused_with_one_line() {
    let prune = "actions:\n  - prune: {criterion: l1-norm, fraction: 0.3}\n";
    for (tail, needles) in [
        (
            "schedule: {steps: 0}\n",
            vec!["schedule.steps must be at least 1"],
        ),
        ("schedule: {steps: -2}\n", vec!["steps"]),
        ("schedule: {steps: 2, every: 1}\n", vec!["every"]),
        (
            "schedule: {steps: 2, recover: {epochs: 0}}\n",
            vec!["schedule.recover.epochs must be at least 1"],
        ),
        (
            "schedule: {steps: 2, recover: {loss: kl}}\n",
            vec!["kl", "cosine"],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (p, out, _) = policy(dir.path(), "bad", &format!("{HEAD}{prune}{tail}"));
        let r = memprune(&["--policy", s(&p), "-q"]);
        let mut n = needles.clone();
        n.push(s(&p));
        refused(&r, &n);
        assert!(!out.exists());
    }
    // A schedule with nothing to prune.
    let dir = tempfile::tempdir().unwrap();
    let (p, _, _) = policy(
        dir.path(),
        "none",
        &format!("{HEAD}actions:\n  - freeze: {{layers: [\"*\"]}}\nschedule: {{steps: 2}}\n"),
    );
    refused(&memprune(&["--policy", s(&p), "-q"]), &["no prune action"]);
}
