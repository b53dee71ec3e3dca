//! `measure layer --score range`: the authors' LayerMem normalisation, each point's
//! SSL_g - SSL_f divided by (max - min) of that difference over the scored points, per
//! layer; said on the first line and recorded in --json.

mod common;

#[test]
fn range_score_is_the_difference_over_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("l.json");
    let o = common::memprune_threads(
        &[
            "measure",
            "layer",
            "--points",
            "6",
            "--views",
            "2",
            "--score",
            "range",
            "--per-point",
            "--json",
            j.to_str().unwrap(),
        ],
        "2",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.lines().next().unwrap().contains("range normalisation"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    assert_eq!(v["extra"]["score"], "range");
    let pts = v["per_point"].as_array().unwrap();
    let f = |p: &serde_json::Value, k: &str, l: usize| p[k][l].as_f64().unwrap();
    let nl = pts[0]["sslmem"].as_array().unwrap().len();
    for l in 0..nl {
        let d: Vec<f64> = pts
            .iter()
            .map(|p| f(p, "ssl_g", l) - f(p, "ssl_f", l))
            .collect();
        let r =
            d.iter().cloned().fold(f64::MIN, f64::max) - d.iter().cloned().fold(f64::MAX, f64::min);
        let mut mean = 0.0;
        for (p, di) in pts.iter().zip(&d) {
            assert!((f(p, "sslmem", l) - di / r).abs() < 1e-9, "layer {l}");
            mean += di / r / pts.len() as f64;
        }
        let lm = v["layers"][l]["layer_mem"].as_f64().unwrap();
        assert!((lm - mean).abs() < 1e-9, "layer {l}: {lm} vs {mean}");
    }
}
