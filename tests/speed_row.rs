//! The before/after "forward images/s" row: both models timed alternately over several
//! rounds, the median ratio printed with its range (what it says, not how fast it is).

mod common;

use common::{ok, write_policy};

#[test]
fn the_speed_row_gives_the_median_ratio_of_alternated_rounds_with_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let body = "model: MODEL\ndata: {points: 16}\nactions:\n  - prune: {criterion: l1-norm, fraction: 0.25}\nevaluation: {speed: true, probe: false}\noutput: {checkpoint: OUT, json: JSON}\n"
        .replace("JSON", &json.display().to_string());
    let (pol, _) = write_policy(dir.path(), &body, &common::parity("resnet9_c1.safetensors"));
    let text = ok(&common::memprune(&["--policy", common::s(&pol)]));
    let s = &common::json(&json)["speed"];
    let rounds = memprune::jobs::policy::SPEED_ROUNDS;
    assert_eq!(s["rounds"], rounds);
    let ratios: Vec<f64> = s["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(ratios.len(), rounds);
    let (med, lo, hi) = (
        s["ratio_median"].as_f64().unwrap(),
        s["ratio_min"].as_f64().unwrap(),
        s["ratio_max"].as_f64().unwrap(),
    );
    assert_eq!(med, memprune::eval::cost::median(&ratios));
    assert!(lo <= med && med <= hi && lo > 0.0);
    let row = text
        .lines()
        .find(|l| l.starts_with("forward images/s"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.ends_with(&format!("{med:.2}x [{lo:.2}, {hi:.2}]")),
        "{row}"
    );
    assert!(
        text.contains(&format!("medians of {rounds} rounds")),
        "{text}"
    );
}

#[test]
fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
    use memprune::eval::cost::median;
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert!(median(&[]).is_nan());
}
