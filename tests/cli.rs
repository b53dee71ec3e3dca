//! The `memprune` binary end to end on the embedded Fashion-MNIST subset: reproducibility
//! across thread counts and batch sizes, LayerMem of an encoder against itself, view dumps,
//! and clear errors that write nothing.

use std::path::PathBuf;

mod common;
use common::{json, ok, root};

fn model() -> PathBuf {
    common::parity("resnet9_c1.safetensors")
}

fn memprune(args: &[&str], threads: &str) -> std::process::Output {
    common::memprune_threads(args, threads)
}

#[test]
fn unit_mem_is_identical_across_threads_and_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let run = |threads: &str, batch: &str, name: &str| {
        let out = dir.path().join(name);
        ok(&memprune(
            &[
                "measure",
                "unit",
                m.to_str().unwrap(),
                "--points",
                "24",
                "--views",
                "3",
                "--batch",
                batch,
                "--json",
                out.to_str().unwrap(),
                "-q",
            ],
            threads,
        ));
        json(&out)["layers"].clone()
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
    let run = |threads: &str, batch: &str, name: &str| {
        let out = dir.path().join(name);
        ok(&memprune(
            &[
                "measure",
                "layer",
                f.to_str().unwrap(),
                "--reference",
                g.to_str().unwrap(),
                "--points",
                "12",
                "--views",
                "4",
                "--batch",
                batch,
                "--json",
                out.to_str().unwrap(),
                "-q",
            ],
            threads,
        ));
        let j = json(&out);
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
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["measure", "unit", cut.to_str().unwrap(), "--json", o],
            "truncated",
        ),
        (
            vec![
                "measure",
                "unit",
                rgb.to_str().unwrap(),
                "--points",
                "4",
                "--json",
                o,
            ],
            "channel",
        ),
        (
            vec![
                "measure",
                "unit",
                m.to_str().unwrap(),
                "--range",
                "9990..10001",
                "--json",
                o,
            ],
            "10001",
        ),
        (
            vec![
                "measure",
                "unit",
                m.to_str().unwrap(),
                "--points",
                "4",
                "--views",
                "0",
                "--json",
                o,
            ],
            "--views",
        ),
        (
            vec![
                "measure",
                "unit",
                m.to_str().unwrap(),
                "--points",
                "4",
                "--std",
                "0",
                "--json",
                o,
            ],
            "std",
        ),
        (
            vec![
                "measure",
                "layer",
                m.to_str().unwrap(),
                "--reference",
                rgb.to_str().unwrap(),
                "--points",
                "4",
                "--json",
                o,
            ],
            "reference",
        ),
    ];
    for (args, needle) in cases {
        let r = memprune(&args, "2");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote output");
    }
}

/// Outputs get the mode a directly written file would: 0666 less the umask (they used to
/// be 0600 whatever the umask, tempfile's default for the staged file).
#[cfg(unix)]
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unit.json");
    for (umask, mode) in [("022", 0o644), ("027", 0o640)] {
        let _ = std::fs::remove_file(&out);
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_memprune"))
            .args(["measure", "unit", "--points", "10", "--views", "2", "-q"])
            .args(["--no-control", "--json", out.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap();
        ok(&st);
        let got = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}: mode {got:o}");
    }
}
