//! Pruning decisions that say what they do: global L1 ranking on group-normalised scores, a
//! fraction that rounds to no unit said, MACs always beside their image size, and `inspect`
//! at the size the checkpoint implies.

use std::path::{Path, PathBuf};

mod common;
use common::root;

fn write_policy(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// The plan's rows `(group, units, removed)`.
fn plan_rows(out: &str) -> Vec<(String, usize, usize)> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[4].ends_with('%')).then(|| {
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
        })
        .collect()
}

/// Raw L1 sums grow with fan-in: ranked globally they took block1 (fan-in 9) nearly whole.
/// Normalised within each group, no layer loses more than half at a 30 % global cut.
#[test]
fn global_l1_norm_ranks_group_normalised_scores() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "g.yaml",
        "actions:\n  - prune: {criterion: l1-norm, fraction: 0.3, scope: global}\nevaluation: {probe: false, speed: false}\n",
    );
    let o = common::memprune_threads(&["plan", "--policy", p.to_str().unwrap()], "1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = plan_rows(&out);
    assert_eq!(rows.len(), 6, "{out}");
    let removed: usize = rows.iter().map(|r| r.2).sum();
    assert_eq!(removed, 240, "{out}");
    for (name, units, gone) in rows {
        assert!(
            gone * 2 <= units,
            "{name}: {gone} of {units} removed at a 30 % global cut:\n{out}"
        );
    }
}

#[test]
fn a_fraction_that_rounds_to_no_unit_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "z.yaml",
        "actions:\n  - prune: {criterion: l1-norm, fraction: 0.02}\nevaluation: {probe: false, speed: false}\n",
    );
    let o = common::memprune_threads(&["plan", "--policy", p.to_str().unwrap()], "1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    // 0.02 x 32 rounds to 1 (block1 loses one); 0.02 x 64 rounds to 1; nothing rounds to 0.
    assert!(!out.contains("rounds to 0"), "{out}");
    let p = write_policy(
        dir.path(),
        "t.yaml",
        "actions:\n  - prune: {criterion: l1-norm, fraction: 1e-300}\nevaluation: {probe: false, speed: false}\n",
    );
    let o = common::memprune_threads(&["plan", "--policy", p.to_str().unwrap()], "1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for g in ["block1", "res2", "block3", "block5", "res6", "block7"] {
        assert!(
            out.contains(&format!("{g}: fraction 1e-300 of")) && out.contains("rounds to 0"),
            "{g}:\n{out}"
        );
    }
}

#[test]
fn macs_are_given_with_their_image_size() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("o.safetensors");
    let p = write_policy(
        dir.path(),
        "r.yaml",
        &format!(
            "actions:\n  - prune: {{criterion: l1-norm, fraction: 0.1}}\nevaluation: {{probe: false, speed: false}}\noutput: {{checkpoint: {}}}\n",
            ckpt.display()
        ),
    );
    let o = common::memprune_threads(&["--policy", p.to_str().unwrap()], "1");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("MACs / image at 28x28"), "{out}");

    // inspect: the ViT's grid x patch, the ImageNet stem's 224, or --size; always said.
    let cases = [
        (
            "tests/fixtures/vit/vit_tiny.safetensors",
            vec![],
            "at 32x32 (the position embedding's 2x2 grid x patch 16)",
        ),
        (
            "tests/fixtures/parity/resnet18_imagenet.safetensors",
            vec![],
            "at 224x224 (ImageNet stem",
        ),
        (
            "tests/fixtures/parity/resnet18_imagenet.safetensors",
            vec!["--size", "64"],
            "at 64x64 (--size)",
        ),
    ];
    for (m, extra, want) in cases {
        let path = root().join(m);
        let mut args = vec!["inspect", path.to_str().unwrap()];
        args.extend(extra);
        let o = common::memprune_threads(&args, "1");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{m}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let line = out.lines().find(|l| l.starts_with("MACs")).unwrap();
        assert!(line.contains(want), "{m}: {line}");
    }
}

fn plan_policy(min_keep: usize) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(
        &p,
        format!(
            "model: {}\ndata: {{points: 8}}\nmetrics: {{views: 2}}\nactions:\n  - prune: {{criterion: l1-norm, fraction: 0.25, min_keep: {min_keep}}}\nevaluation: {{speed: false, probe: false}}\n",
            common::s(&common::parity("resnet9_c1.safetensors"))
        ),
    )
    .unwrap();
    common::memprune(&["plan", "--policy", common::s(&p)])
}

#[test]
fn min_keep_larger_than_a_layer_leaves_that_layer_whole() {
    // resnet9_c1's groups: block1 8, res2 16, block3 12, block5 24, res6 32, block7 24 units.
    let text = common::ok(&plan_policy(20));
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // (units, removed, kept): below the floor nothing goes; above it, down to the floor.
    assert_eq!(row("block1")[1..4], ["8", "0", "8"], "{text}");
    assert_eq!(row("block3")[1..4], ["12", "0", "12"], "{text}");
    assert_eq!(row("block5")[1..4], ["24", "4", "20"], "{text}");
    assert_eq!(row("res6")[1..4], ["32", "8", "24"], "{text}");
    // A floor above every layer prunes nothing: refused, at its line.
    common::refused(
        &plan_policy(100),
        &["policy.yaml", "line 5", "min_keep = 100"],
    );
}
