//! Policies: a good one writes a smaller checkpoint that loads; each kind of bad one gives
//! one clear error naming the file (and line) and writes nothing.

use std::path::{Path, PathBuf};

mod common;
use common::memprune as run;

fn fx(name: &str) -> String {
    common::parity(name).display().to_string()
}

/// Writes `body` (with `MODEL` and `OUT` substituted) as a policy in `dir`.
fn policy(dir: &Path, body: &str) -> (PathBuf, PathBuf) {
    let out = dir.join("out.safetensors");
    let text = body
        .replace("MODEL", &fx("resnet9_c1.safetensors"))
        .replace("OUT", &out.display().to_string());
    let p = dir.join("policy.yaml");
    std::fs::write(&p, text).unwrap();
    (p, out)
}

const GOOD: &str = "model: MODEL\ndata: {points: 40}\nmetrics: {views: 2}\nactions:\n  - prune: {criterion: unitmem, end: low, fraction: 0.25, mode: remove}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT}\n";

#[test]
fn a_good_policy_writes_a_smaller_checkpoint_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (p, out) = policy(dir.path(), GOOD);
    let r = run(&["--policy", p.to_str().unwrap(), "-q"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let before = memprune::model::Encoder::load(
        Path::new(&fx("resnet9_c1.safetensors")),
        &Default::default(),
    )
    .unwrap();
    let after = memprune::model::Encoder::load(&out, &Default::default()).unwrap();
    assert!(after.params() < before.params());
    assert!(
        std::fs::metadata(&out).unwrap().len()
            < std::fs::metadata(fx("resnet9_c1.safetensors"))
                .unwrap()
                .len()
    );
    assert!(after.checkpoint.metadata["memprune.policy"].contains("unitmem"));
    // `plan` shows the same plan and writes nothing.
    let out2 = dir.path().join("never.safetensors");
    let (p2, _) = policy(
        dir.path(),
        &GOOD.replace("OUT", &out2.display().to_string()),
    );
    let r = run(&["plan", "--policy", p2.to_str().unwrap(), "-q"]);
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout).contains("block1"));
    assert!(!out2.exists());
}

fn fails(body: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (p, out) = policy(dir.path(), body);
    let r = run(&["--policy", p.to_str().unwrap(), "-q"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "succeeded: {body}");
    assert!(err.contains("policy.yaml"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!out.exists(), "wrote output for: {body}");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    fails(
        &GOOD.replace("fraction: 0.25", "fractoin: 0.25"),
        &["unknown field `fractoin`", "line 5"],
    );
    fails(
        &format!("{GOOD}colour: blue\n"),
        &["unknown field `colour`"],
    );
}

#[test]
fn fractions_outside_zero_one_are_refused() {
    fails(
        &GOOD.replace("fraction: 0.25", "fraction: 1.5"),
        &["fraction", "outside (0, 1)", "line 5"],
    );
    fails(
        &GOOD.replace("fraction: 0.25", "fraction: -0.1"),
        &["fraction", "outside (0, 1)"],
    );
}

#[test]
fn a_glob_that_matches_nothing_is_refused() {
    fails(
        &GOOD.replace("mode: remove}", "mode: remove, layers: [\"layer9*\"]}"),
        &["`layer9*` matches no layer", "block1"],
    );
}

#[test]
fn a_policy_that_would_empty_a_layer_is_refused() {
    fails(
        &GOOD.replace("fraction: 0.25", "count: 8"),
        &["would empty layer `block1`"],
    );
}

#[test]
fn a_reference_of_another_architecture_is_refused() {
    let body = GOOD.replace(
        "actions:\n  - prune: {criterion: unitmem, end: low, fraction: 0.25, mode: remove}",
        &format!(
            "reference: {}\nactions:\n  - train: {{by: dlayermem, top: 2}}",
            fx("resnet18_cifar.safetensors")
        ),
    );
    fails(&body, &["reference"]);
}
