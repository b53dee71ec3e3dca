//! Every path that runs convolutions gives the same numbers with memprune's fast op as with
//! candle's stock conv (`MEMPRUNE_CONV=stock`).

use std::path::Path;

mod common;
use common::{json, ok, root};

/// memprune's stdout, with candle's stock conv when `stock`.
fn run(args: &[&str], stock: bool) -> String {
    let set: &[(&str, &str)] = if stock {
        &[("MEMPRUNE_CONV", "stock")]
    } else {
        &[]
    };
    ok(&common::memprune_env(args, set, &[]))
}

/// All numbers of two JSON values agree to `tol` (relative to max(1, |b|)).
fn close(a: &serde_json::Value, b: &serde_json::Value, tol: f64, at: &str) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tol * y.abs().max(1.0), "{at}: {x} vs {y}");
        }
        (V::Array(x), V::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                close(p, q, tol, &format!("{at}[{i}]"));
            }
        }
        (V::Object(x), V::Object(y)) => {
            for (k, v) in x {
                close(v, &y[k], tol, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn measure_unit_and_layer_are_unchanged_against_the_stock_conv() {
    let dir = tempfile::tempdir().unwrap();
    let f = root().join("tests/fixtures/parity/resnet9_c1.safetensors");
    let g = root().join("tests/fixtures/parity/resnet9_c1_bf16.safetensors");
    for (stock, name) in [(false, "fast"), (true, "stock")] {
        let u = dir.path().join(format!("unit-{name}.json"));
        run(
            &[
                "measure",
                "unit",
                f.to_str().unwrap(),
                "--points",
                "12",
                "--views",
                "2",
                "--json",
                u.to_str().unwrap(),
                "-q",
            ],
            stock,
        );
        let l = dir.path().join(format!("layer-{name}.json"));
        run(
            &[
                "measure",
                "layer",
                f.to_str().unwrap(),
                "--reference",
                g.to_str().unwrap(),
                "--points",
                "6",
                "--views",
                "2",
                "--json",
                l.to_str().unwrap(),
                "-q",
            ],
            stock,
        );
    }
    for m in ["unit", "layer"] {
        let (a, b) = (
            json(&dir.path().join(format!("{m}-fast.json"))),
            json(&dir.path().join(format!("{m}-stock.json"))),
        );
        close(&a["layers"], &b["layers"], 1e-4, m);
    }
}

fn final_loss(stdout: &str) -> f64 {
    let s = stdout.split("final loss ").nth(1).unwrap();
    s.split(':').next().unwrap().trim().parse().unwrap()
}

/// Final loss of a 2-epoch `memprune train` on `data`, batch 16, with `extra` arguments.
fn train_loss(data: &str, out: &Path, extra: &[&str], stock: bool) -> f64 {
    let mut args = vec![
        "train", "--data", data, "--batch", "16", "--epochs", "2", "-q",
    ];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    final_loss(&run(&args, stock))
}

#[test]
fn train_and_probe_are_unchanged_against_the_stock_conv() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 64);
    let d = data.to_str().unwrap();
    let mut losses = Vec::new();
    let mut accs = Vec::new();
    for (stock, name) in [(false, "fast"), (true, "stock")] {
        let ckpt = dir.path().join(format!("{name}.safetensors"));
        let extra = ["--framework", "simclr", "--widths", "4,8,8,8,8,8,8,8"];
        losses.push(train_loss(d, &ckpt, &extra, stock));
        // Both probes read the same (fast-trained) encoder.
        let probe = dir.path().join(format!("probe-{name}.json"));
        let fast = dir.path().join("fast.safetensors");
        run(
            &[
                "probe",
                fast.to_str().unwrap(),
                "--data",
                d,
                "--json",
                probe.to_str().unwrap(),
            ],
            stock,
        );
        accs.push(json(&probe));
    }
    // Fine-tuning two layers of the fast-trained encoder, supervised.
    let fast = dir.path().join("fast.safetensors");
    let mut ft = Vec::new();
    for (stock, name) in [(false, "fast"), (true, "stock")] {
        let out = dir.path().join(format!("ft-{name}.safetensors"));
        let init = fast.to_str().unwrap();
        let extra = [
            "--framework",
            "supervised",
            "--init",
            init,
            "--trainable",
            "block7,block8",
        ];
        ft.push(train_loss(d, &out, &extra, stock));
    }
    assert!(
        (ft[0] - ft[1]).abs() <= 1e-3 * ft[1].abs().max(1.0),
        "fine-tune loss {ft:?}"
    );
    assert!(
        (losses[0] - losses[1]).abs() <= 1e-3 * losses[1].abs().max(1.0),
        "train loss {losses:?}"
    );
    close(&accs[0], &accs[1], 1e-3, "probe");
}
