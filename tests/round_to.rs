//! `round_to: N` in a prune action: every group the action prunes keeps a multiple of N
//! units' width (Torch-Pruning's rule: the kept count rounded down), never below `min_keep`;
//! bad values are refused with one line naming the policy file and the key.

mod common;

use common::{ok, refused, write_policy};
use memprune::model::{Encoder, LoadOptions};
use memprune::plan::planner::{rounded_keep, unit_multiple};

const BODY: &str = "model: MODEL\ndata: {points: 16}\nactions:\n  - prune: {criterion: l1-norm, fraction: FRAC, ROUND}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT}\n";

fn widths(p: &std::path::Path) -> Vec<usize> {
    Encoder::load(p, &LoadOptions::default()).unwrap().widths()
}

#[test]
fn the_kept_count_rounds_down_to_a_multiple_never_below_min_keep() {
    // Torch-Pruning's BasePruner._round_to: kept = (n - pruned) - (n - pruned) % N.
    assert_eq!(rounded_keep(32, 29, 16, 1), 16);
    assert_eq!(rounded_keep(256, 230, 16, 1), 224);
    assert_eq!(rounded_keep(64, 58, 8, 1), 56);
    assert_eq!(rounded_keep(64, 48, 16, 1), 48);
    // Below min_keep (or 0): the smallest multiple not below min_keep, at most the width.
    assert_eq!(rounded_keep(32, 10, 16, 1), 16);
    assert_eq!(rounded_keep(32, 20, 16, 20), 32);
    assert_eq!(rounded_keep(64, 20, 16, 20), 32);
    // A head of 64 values under round_to 16 already fits: any head count does.
    assert_eq!(unit_multiple(16, 64), 1);
    assert_eq!(unit_multiple(16, 1), 16);
    assert_eq!(unit_multiple(16, 24), 2);
}

#[test]
fn every_pruned_group_keeps_a_multiple_of_round_to() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::parity("resnet9_c1.safetensors");
    // Widths 8, 16, 12, 16, 24, 32, 24, 32 (groups block1, res2, block3, block5, res6,
    // block7); 25 % gives 6, 12, 9, 18, 24, 18 kept.
    let (p, out) = write_policy(
        dir.path(),
        &BODY.replace("FRAC", "0.25").replace("ROUND", "round_to: 4"),
        &model,
    );
    let text = ok(&common::memprune(&["--policy", common::s(&p)]));
    assert_eq!(widths(&out), vec![4, 12, 8, 12, 16, 24, 16, 24], "{text}");
    assert!(
        text.contains("round_to = 4 keeps 4 of 8 units (6 before rounding)"),
        "{text}"
    );
    // Without round_to, the same action keeps the widths the fraction says.
    let (p, out) = write_policy(
        dir.path(),
        &BODY.replace("FRAC", "0.25").replace(", ROUND", ""),
        &model,
    );
    ok(&common::memprune(&["--policy", common::s(&p), "-q"]));
    assert_eq!(widths(&out), vec![6, 12, 9, 12, 18, 24, 18, 24]);
    // min_keep wins over rounding down: block1 keeps 8 (the next multiple of 8 above 7).
    let (p, out) = write_policy(
        dir.path(),
        &BODY
            .replace("FRAC", "0.25")
            .replace("ROUND", "round_to: 8, min_keep: 7"),
        &model,
    );
    ok(&common::memprune(&["--policy", common::s(&p), "-q"]));
    let w = widths(&out);
    assert_eq!(w[0], 8, "{w:?}");
    assert!(w.iter().all(|x| x % 8 == 0 && *x >= 7), "{w:?}");
    // Global scope: the picks are rounded per group the same way.
    let (p, out) = write_policy(
        dir.path(),
        &BODY
            .replace("FRAC", "0.3")
            .replace("ROUND", "round_to: 4, scope: global"),
        &model,
    );
    ok(&common::memprune(&["--policy", common::s(&p), "-q"]));
    assert!(
        widths(&out).iter().all(|x| x % 4 == 0),
        "{:?}",
        widths(&out)
    );
}

#[test]
fn bad_round_to_values_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::parity("resnet9_c1.safetensors");
    for (v, why) in [
        ("0", "0 is not a width multiple"),
        ("-8", "`-8` is not a positive integer"),
        ("2.5", "`2.5` is not a positive integer"),
        ("eight", "`eight` is not a positive integer"),
        // block1 is 8 channels wide.
        ("16", "16 is larger than `block1` (8 wide)"),
    ] {
        let (p, out) = write_policy(
            dir.path(),
            &BODY
                .replace("FRAC", "0.25")
                .replace("ROUND", &format!("round_to: {v}")),
            &model,
        );
        refused(
            &common::memprune(&["--policy", common::s(&p)]),
            &["policy.yaml", "line 4", "round_to", why],
        );
        assert!(!out.exists());
    }
}
