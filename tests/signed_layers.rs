//! UnitMem on signed layers, measured from the activation's lower bound (docs/METRICS.md,
//! "Signed layers"): GELU units score known answers in [0, 1], ReLU layers keep Eq. 8
//! exactly, floors merge across shards exactly, a global ranking across floors is refused;
//! end to end on the MAE ViT, which is also measured with its own recorded augmentation.

use memprune::metrics::unit_mem::{Reduce, UnitMemAccumulator};
use memprune::model::act_floor::{ActFloor, GELU_MIN};

mod common;
use common::{json, memprune, ok, refused};

const VF: &str = "assets/models/vit-mae-f.safetensors";

/// `measure unit` on the MAE ViT: MAE's recorded augmentation (crop 0.2-1, no jitter), said
/// on the first line and in the JSON settings; every UnitMem score and layer mean in [0, 1];
/// the residual streams and `pool` named as not scored.
#[test]
fn the_mae_vit_is_measured_with_its_own_augmentation_and_bounded_scores() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unit.json");
    let text = ok(&memprune(&[
        "measure",
        "unit",
        VF,
        "--points",
        "60",
        "--views",
        "1",
        "--json",
        out.to_str().unwrap(),
        "-q",
    ]));
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("augmentation: crop scale 0.2-1, ") && first.contains("no colour jitter"),
        "{first}"
    );
    assert!(
        first.contains("recorded in") && first.contains(VF),
        "{first}"
    );
    let j = json(&out);
    let a = &j["augment"];
    let f32_at = |k: &str, i: Option<usize>| {
        let v = match i {
            Some(i) => &a[k][i],
            None => &a[k],
        };
        v.as_f64().unwrap() as f32
    };
    assert_eq!(
        (f32_at("crop_scale", Some(0)), f32_at("crop_scale", Some(1))),
        (0.2, 1.0),
        "{a}"
    );
    assert_eq!(f32_at("jitter_p", None), 0.0, "{a}");
    assert_eq!(f32_at("grayscale_p", None), 0.0, "{a}");
    assert!(j["augment_source"]
        .as_str()
        .unwrap()
        .contains("memprune.augment"));
    let layers = j["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 12, "6 x (heads, fc1)");
    for l in layers {
        let name = l["name"].as_str().unwrap();
        assert!(name.ends_with(".heads") || name.ends_with(".fc1"), "{name}");
        let in01 = |x: f64| (0.0..=1.0).contains(&x);
        for key in ["mean", "median", "max"] {
            let v = l["summary"][key].as_f64().unwrap();
            assert!(in01(v), "{name} {key} = {v}");
        }
        for u in l["units"].as_array().unwrap() {
            let v = u["score"].as_f64().unwrap();
            assert!(in01(v), "{name}: a unit scores {v}");
        }
        let ex = l["control"]["excess"].as_array().unwrap();
        assert!(
            ex.iter().all(|e| e.as_f64().unwrap().abs() <= 1.0),
            "{name}"
        );
    }
    let unscored: Vec<&str> = j["unscored_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(unscored.len(), 13, "{unscored:?}");
    assert!(unscored.contains(&"block3.attn") && unscored.contains(&"pool"));
    assert!(text.contains("not scored (13 layers"), "{text}");
}

fn layer_scores(floor: ActFloor, mu: &[Vec<f64>]) -> Vec<f64> {
    let mut acc = UnitMemAccumulator::with_floors(&[mu[0].len()], &[floor], Reduce::Mean);
    for (p, m) in mu.iter().enumerate() {
        acc.push(p, std::slice::from_ref(m));
    }
    let l = acc.finish(&["l".into()]).unwrap();
    l[0].units.iter().map(|u| u.score).collect()
}

/// Known answers on a GELU layer: a unit only one point lifts off GELU's minimum scores
/// ~1, a constant unit 0, and no unit or layer mean leaves [0, 1] (Eq. 8 on raw GELU means
/// gives ratios far outside).
#[test]
fn gelu_units_score_known_answers_in_0_1() {
    let n = 50;
    let mut rng = memprune::data::rng::Rng::from_key(&[22, 2]);
    let mu: Vec<Vec<f64>> = (0..n)
        .map(|p| {
            let one_point = if p == 7 { 1.5 } else { GELU_MIN };
            let constant = 0.3;
            // Means near 0 of both signs: Eq. 8's denominator crosses 0 here.
            let near_zero = -0.05 + 0.1 * rng.next_f64();
            let spread = GELU_MIN + 2.0 * rng.next_f64();
            vec![one_point, constant, near_zero, spread]
        })
        .collect();
    let s = layer_scores(ActFloor::Gelu, &mu);
    assert!(s[0] > 0.9999 && s[0] <= 1.0, "one-point unit: {}", s[0]);
    assert_eq!(s[1], 0.0, "constant unit");
    for (u, &v) in s.iter().enumerate() {
        assert!((0.0..=1.0).contains(&v), "unit {u}: {v}");
    }
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    assert!((0.0..=1.0).contains(&mean));
    // The same means read by Eq. 8 from 0 leave [0, 1]: what the floor fixes.
    let raw = layer_scores(ActFloor::Zero, &mu);
    assert!(raw.iter().any(|v| !(0.0..=1.0).contains(v)), "{raw:?}");
}

/// Floor 0 is Eq. 8 bit for bit, and a floored layer's shards merge into one run's numbers
/// bit for bit (the floor is applied after the merge).
#[test]
fn floors_keep_eq8_and_exact_shard_merges() {
    let mut rng = memprune::data::rng::Rng::from_key(&[22, 3]);
    let mu: Vec<Vec<Vec<f64>>> = (0..40)
        .map(|_| {
            vec![
                (0..6).map(|_| rng.next_f64()).collect(),
                (0..6).map(|_| GELU_MIN + rng.next_f64()).collect(),
            ]
        })
        .collect();
    let names = vec!["relu".to_string(), "gelu".to_string()];
    let floors = [ActFloor::Zero, ActFloor::Gelu];
    for reduce in [Reduce::Mean, Reduce::Median] {
        let mut plain = UnitMemAccumulator::new(&[6, 6], reduce);
        let mut one = UnitMemAccumulator::with_floors(&[6, 6], &floors, reduce);
        let mut merged = UnitMemAccumulator::with_floors(&[6, 6], &floors, reduce);
        for shard in 0..3 {
            let mut part = UnitMemAccumulator::with_floors(&[6, 6], &floors, reduce);
            for (p, m) in mu.iter().enumerate().filter(|(p, _)| p % 3 == shard) {
                part.push(p, m);
            }
            merged.merge(&part).unwrap();
        }
        for (p, m) in mu.iter().enumerate() {
            plain.push(p, m);
            one.push(p, m);
        }
        let bits = |l: &memprune::metrics::unit_mem::UnitMemLayer| -> Vec<u64> {
            l.units.iter().map(|u| u.score.to_bits()).collect()
        };
        let (a, b, c) = (
            plain.finish(&names).unwrap(),
            one.finish(&names).unwrap(),
            merged.finish(&names).unwrap(),
        );
        assert_eq!(bits(&a[0]), bits(&b[0]), "floor 0 is Eq. 8");
        assert_ne!(
            bits(&a[1]),
            bits(&b[1]),
            "the GELU floor changes the GELU layer"
        );
        assert_eq!(bits(&b[0]), bits(&c[0]));
        assert_eq!(bits(&b[1]), bits(&c[1]), "merge exact under the floor");
        // Shards measured with other floors do not merge.
        let other = UnitMemAccumulator::new(&[6, 6], reduce);
        assert!(merged.clone().merge(&other).is_err());
    }
    // An unbounded layer is left out and named.
    let acc = UnitMemAccumulator::with_floors(
        &[1, 1],
        &[ActFloor::Zero, ActFloor::Unbounded],
        Reduce::Mean,
    );
    assert_eq!(acc.unscored(&names), vec!["gelu".to_string()]);
}

/// A global policy ranking GELU neurons (floor -0.17) against heads (floor 0) is refused,
/// naming the keys that avoid it.
#[test]
fn a_global_ranking_across_floors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    let body = format!(
        "model: {VF}\ndata: {{points: 6}}\nmetrics: {{views: 1}}\nactions:\n  - prune: {{criterion: unitmem, end: low, fraction: 0.1, scope: global, mode: mask}}\nevaluation: {{speed: false, probe: false}}\noutput: {{checkpoint: {}}}\n",
        dir.path().join("out.safetensors").display()
    );
    std::fs::write(&p, body).unwrap();
    refused(
        &memprune(&["--policy", p.to_str().unwrap(), "-q"]),
        &["scope: global", "units: mlp", "scope: per-layer"],
    );
    assert!(!dir.path().join("out.safetensors").exists());
}
