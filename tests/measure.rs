//! `memprune measure` end to end on the embedded Fashion-MNIST subset: reproducibility
//! across thread counts and batch sizes, LayerMem of an encoder against itself, view dumps,
//! clear errors that write nothing, and `--score range` (the authors' LayerMem
//! normalisation: each point's SSL_g - SSL_f over (max - min) of that difference over the
//! scored points, per layer; said on the first line and recorded in --json).

use std::path::PathBuf;

mod common;
use common::{json, measure_json, memprune_threads as memprune, ok, root, s};

fn model() -> PathBuf {
    common::parity("resnet9_c1.safetensors")
}

#[test]
fn unit_mem_is_identical_across_threads_and_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let args = ["unit", s(&m), "--points", "24", "--views", "3"];
    let run = |threads: &str, batch: &str, name: &str| {
        measure_json(dir.path(), &args, threads, batch, name)["layers"].clone()
    };
    let a = run("1", "256", "a.json");
    let b = run("2", "7", "b.json");
    let c = run("2", "1", "c.json");
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn layer_mem_of_an_encoder_against_itself_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.json");
    let m = model();
    let text = ok(&memprune(
        &[
            "measure",
            "layer",
            m.to_str().unwrap(),
            "--reference",
            m.to_str().unwrap(),
            "--points",
            "6",
            "--views",
            "2",
            "--json",
            out.to_str().unwrap(),
            "-q",
        ],
        "2",
    ));
    assert!(text.contains("LayerMem"), "{text}");
    for l in json(&out)["layers"].as_array().unwrap() {
        assert_eq!(l["layer_mem"].as_f64().unwrap(), 0.0, "{l}");
        // Its control and the corrected LayerMem are exactly 0 too, intervals included.
        for key in ["control_layer_mem", "corrected"] {
            assert_eq!(l[key].as_f64().unwrap(), 0.0, "{key}: {l}");
        }
        for key in ["layer_mem_ci", "corrected_ci"] {
            assert_eq!(l[key]["lo"].as_f64().unwrap(), 0.0, "{key}: {l}");
            assert_eq!(l[key]["hi"].as_f64().unwrap(), 0.0, "{key}: {l}");
        }
    }
}

#[test]
fn layer_mem_intervals_and_control_are_identical_across_threads_and_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // g: the same network stored in bf16, a small fixed difference from f.
    let (f, g) = (
        model(),
        root().join("tests/fixtures/parity/resnet9_c1_bf16.safetensors"),
    );
    let args = [
        "layer",
        s(&f),
        "--reference",
        s(&g),
        "--points",
        "12",
        "--views",
        "4",
    ];
    let run = |threads: &str, batch: &str, name: &str| {
        let j = measure_json(dir.path(), &args, threads, batch, name);
        (j["layers"].clone(), j["control"].clone())
    };
    let a = run("1", "256", "a.json");
    assert!(a.0[0]["corrected_ci"]["lo"].is_number(), "{}", a.0);
    assert_eq!(a.1["points"].as_array().unwrap().len(), 12);
    assert_eq!(a, run("2", "7", "b.json"));
    assert_eq!(a, run("2", "1", "c.json"));
}

#[test]
fn dump_views_writes_what_the_run_used() {
    let dir = tempfile::tempdir().unwrap();
    let views = dir.path().join("views");
    let m = model();
    ok(&memprune(
        &[
            "measure",
            "unit",
            m.to_str().unwrap(),
            "--range",
            "5..9",
            "--views",
            "2",
            "--dump-views",
            views.to_str().unwrap(),
            "-q",
        ],
        "2",
    ));
    let (shape, _) = memprune::data::npy::read_npy_f32(&views.join("views.npy")).unwrap();
    assert_eq!(shape, vec![4, 2, 1, 28, 28]);
    let (_, points) = memprune::data::npy::read_npy_i64(&views.join("points.npy")).unwrap();
    assert_eq!(points, vec![5, 6, 7, 8]);
    let meta = json(&views.join("meta.json"));
    assert_eq!(meta["metric"], "unit");
}

#[test]
fn bad_inputs_fail_with_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.json");
    let o = out.to_str().unwrap();
    let m = model();
    let cut = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let rgb = root().join("tests/fixtures/parity/resnet9_narrow.safetensors");
    let (m, rgb, cut) = (s(&m), s(&rgb), s(&cut));
    let cases: [(&[&str], &str); 6] = [
        (&["unit", cut], "truncated"),
        (&["unit", rgb, "--points", "4"], "channel"),
        (&["unit", m, "--range", "9990..10001"], "10001"),
        (&["unit", m, "--points", "4", "--views", "0"], "--views"),
        (&["unit", m, "--points", "4", "--std", "0"], "std"),
        (
            &["layer", m, "--reference", rgb, "--points", "4"],
            "reference",
        ),
    ];
    for (args, needle) in cases {
        let args = [&["measure"][..], args, &["--json", o]].concat();
        let r = memprune(&args, "2");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote output");
    }
}

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
        out.lines().any(|l| l.contains("range normalisation")),
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

/// `measure unit|class|layer --help` lists the choices of docs/METRICS.md, their one source.
#[test]
fn help_lists_the_choices_written_in_docs_metrics() {
    let doc = std::fs::read_to_string(root().join("docs/METRICS.md")).unwrap();
    let list = doc
        .split("<!-- help:choices -->\n```text\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .trim_end();
    assert!(list.contains("Choices where the paper is silent") && list.lines().count() > 20);
    for metric in ["unit", "class", "layer"] {
        let help = ok(&memprune(&["measure", metric, "--help"], "1"));
        assert!(help.contains(list), "measure {metric} --help:\n{help}");
    }
}
