//! `merge` trusts no partial: each kind of edit an adversary made to a partial (issue 28:
//! 13 that panicked, 10 that merged to wrong numbers, and their neighbours) is one error
//! naming the file, both with the digest left stale and with it recomputed (so that the
//! content checks themselves are exercised); shard counts are bounded; a long list of
//! missing shards is cut short.

use memprune::metrics::class_mem::ClassMemAccumulator;
use memprune::metrics::layer_mem::{ssl_mem, Control, Pairing};
use memprune::metrics::unit_mem::{Reduce, UnitMemAccumulator};
use memprune::shard::partial::{Metric, Partial, PointBits, Run, State};
use memprune::shard::Shard;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const UNITS: [usize; 2] = [3, 3];

fn run(metric: Metric, reduce: Reduce, points: Vec<usize>, control: Vec<usize>) -> Run {
    Run {
        metric,
        settings: json!({"seed": 0}),
        arch: "test".into(),
        model: "model.safetensors".into(),
        reference: None,
        layers: vec!["block1".into(), "block2".into()],
        points,
        views: 2,
        seed: 0,
        reduce,
        pairing: Pairing::Views,
        control: Control::Unseen,
        control_data: Some("test".into()),
        control_points: Some(control),
        per_point: false,
        planted: None,
        score: Default::default(),
        digests: Default::default(),
    }
}

/// mu of point `p`, layer `l`, unit `u`: positive, distinct.
fn mu(p: usize) -> Vec<Vec<f64>> {
    (0..UNITS.len())
        .map(|l| {
            (0..UNITS[l])
                .map(|u| 0.1 + ((p * 7 + l * 3 + u * 5) % 11) as f64 / 10.0)
                .collect()
        })
        .collect()
}

fn unit_acc(pts: &[usize], reduce: Reduce) -> UnitMemAccumulator {
    let mut a = UnitMemAccumulator::new(&UNITS, reduce);
    pts.iter().for_each(|&p| a.push(p, &mu(p)));
    a
}

fn class_acc(pts: &[usize]) -> ClassMemAccumulator {
    let mut a = ClassMemAccumulator::new(&UNITS, 3);
    for &p in pts {
        a.push(p % 3, &mu(p)).unwrap();
    }
    a
}

fn layer_points(pts: &[usize]) -> Vec<PointBits> {
    pts.iter()
        .map(|&p| {
            let f = vec![0.5 + p as f64 / 100.0, 0.7];
            let g = vec![0.9, 0.6 + p as f64 / 100.0];
            PointBits {
                point: p,
                sslmem: f.iter().zip(&g).map(|(&a, &b)| ssl_mem(a, b)).collect(),
                sslmem_first_half: vec![0.1, -0.1],
                sslmem_second_half: vec![0.2, -0.2],
                ssl_f: f,
                ssl_g: g,
            }
        })
        .collect()
}

/// Shard `index` of 2 of a run of 6 points (and 6 control points) of `kind`.
fn partial(kind: &str, index: usize) -> Partial {
    let (points, control): (Vec<usize>, Vec<usize>) = ((10..16).collect(), (20..26).collect());
    let shard = Shard::new(index, 2).unwrap();
    let (p, c) = (shard.take(&points), shard.take(&control));
    let (metric, reduce) = match kind {
        "class" => (Metric::Class, Reduce::Mean),
        "layer" => (Metric::Layer, Reduce::Mean),
        "median" => (Metric::Unit, Reduce::Median),
        _ => (Metric::Unit, Reduce::Mean),
    };
    let state = match metric {
        Metric::Unit => State::Unit {
            train: unit_acc(&p, reduce),
            unseen: Some(unit_acc(&c, reduce)),
        },
        Metric::Class => State::Class {
            train: class_acc(&p),
            unseen: Some(class_acc(&c)),
        },
        Metric::Layer => State::Layer {
            points: layer_points(&p),
            control: Some(layer_points(&c)),
        },
    };
    Partial::new(shard, run(metric, reduce, points, control), state)
}

fn write(dir: &Path, name: &str, p: &Partial) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, p.to_json().unwrap()).unwrap();
    f
}

/// Reads and merges `files`; a panic fails the test with its message.
fn read_and_merge(files: &[PathBuf]) -> Result<(), String> {
    let files = files.to_vec();
    std::panic::catch_unwind(move || {
        let parts = files
            .iter()
            .map(|f| Ok((f.clone(), Partial::read(f)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        memprune::shard::merge(parts).map(|_| ())
    })
    .map_err(|_| "PANIC".to_string())?
    .map_err(|e| e.to_string())
}

type Edit = fn(&mut Value);

fn bits(x: f64) -> Value {
    json!(x.to_bits())
}

/// Every kind of edit: (metric of the partial, name, what the error says, the edit).
fn edits() -> Vec<(&'static str, &'static str, &'static str, Edit)> {
    fn layer0(v: &mut Value) -> &mut Value {
        &mut v["state"]["train"]["layers"][0]
    }
    fn point0(v: &mut Value) -> &mut Value {
        &mut v["state"]["points"][0]
    }
    vec![
        ("unit", "shard index = count", "index must be below", |v| {
            v["shard"]["index"] = json!(2)
        }),
        (
            "unit",
            "shard index past count",
            "index must be below",
            |v| v["shard"]["index"] = json!(7),
        ),
        ("unit", "count 0", "count at least 1", |v| {
            v["shard"]["count"] = json!(0)
        }),
        ("unit", "count 2^62", "at most 6", |v| {
            v["shard"]["count"] = json!(1u64 << 62)
        }),
        ("unit", "argmax shorter than max", "argmaxes", |v| {
            layer0(v)["argmax"].as_array_mut().unwrap().pop();
        }),
        ("unit", "sum shorter than max", "sums", |v| {
            layer0(v)["sum"].as_array_mut().unwrap().pop();
        }),
        ("unit", "NaN in max", "not finite", |v| {
            layer0(v)["max"][1] = bits(f64::NAN)
        }),
        ("unit", "inf in max", "not finite", |v| {
            layer0(v)["max"][1] = bits(f64::INFINITY)
        }),
        (
            "unit",
            "a layer's points edited to 400",
            "400 points",
            |v| layer0(v)["points"] = json!(400),
        ),
        (
            "unit",
            "argmax not in the run",
            "not one of its shard's points",
            |v| layer0(v)["argmax"][0] = json!(3),
        ),
        (
            "unit",
            "a layer dropped from the state",
            "has 1 layers where",
            |v| {
                v["state"]["train"]["layers"]
                    .as_array_mut()
                    .unwrap()
                    .remove(1);
            },
        ),
        ("unit", "a layer dropped from run.layers", "names 1", |v| {
            v["run"]["layers"].as_array_mut().unwrap().remove(1);
        }),
        ("median", "median values null", "no median values", |v| {
            layer0(v)["values"] = Value::Null
        }),
        (
            "median",
            "median values emptied",
            "median values of 0 units",
            |v| layer0(v)["values"] = json!([]),
        ),
        ("median", "a short median values", "one per point", |v| {
            layer0(v)["values"][0].as_array_mut().unwrap().pop();
        }),
        (
            "class",
            "ClassMem classes of another shape",
            "class counts",
            |v| v["state"]["train"]["classes"] = json!(4),
        ),
        (
            "class",
            "ClassMem sums of another shape",
            "sums of 2 classes",
            |v| {
                v["state"]["train"]["sums"][0].as_array_mut().unwrap().pop();
            },
        ),
        ("layer", "a short sslmem", "SSLMem' of", |v| {
            point0(v)["sslmem"].as_array_mut().unwrap().pop();
        }),
        ("layer", "an empty sslmem", "SSLMem' of", |v| {
            point0(v)["sslmem"] = json!([])
        }),
        ("layer", "a short ssl_g", "SSL_g", |v| {
            point0(v)["ssl_g"].as_array_mut().unwrap().pop();
        }),
        ("layer", "NaN in SSL_f", "outside [0, 2]", |v| {
            point0(v)["ssl_f"][0] = bits(f64::NAN)
        }),
        ("layer", "inf in SSLMem'", "is not (SSL_g - SSL_f)", |v| {
            point0(v)["sslmem"][1] = bits(f64::INFINITY)
        }),
        ("layer", "an SSLMem' of 5", "is not (SSL_g - SSL_f)", |v| {
            point0(v)["sslmem"][0] = bits(5.0)
        }),
        (
            "layer",
            "a point not of the shard",
            "not the 3 of its shard",
            |v| point0(v)["point"] = json!(99),
        ),
    ]
}

#[test]
fn every_kind_of_edited_partial_is_one_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for kind in ["unit", "median", "class", "layer"] {
        let good: Vec<PathBuf> = (0..2)
            .map(|i| write(d, &format!("{kind}-{i}.partial"), &partial(kind, i)))
            .collect();
        assert_eq!(read_and_merge(&good), Ok(()), "{kind}: unedited");
    }
    let list = edits();
    assert_eq!(list.len(), 24);
    for (kind, name, says, edit) in list {
        let other = write(d, "other.partial", &partial(kind, 1));
        let mut v = serde_json::to_value(partial(kind, 0)).unwrap();
        edit(&mut v);
        // As edited: the digest no longer matches.
        let stale = d.join("stale.partial");
        std::fs::write(&stale, v.to_string()).unwrap();
        let e = read_and_merge(&[stale.clone(), other.clone()]).unwrap_err();
        assert!(
            e.contains(stale.to_str().unwrap()) && e.contains("digest"),
            "{name} (stale digest): {e}"
        );
        // With the digest recomputed: the contents are checked.
        let mut p: Partial = serde_json::from_value(v).unwrap();
        p.seal();
        let sealed = write(d, "sealed.partial", &p);
        let e = read_and_merge(&[sealed.clone(), other]).unwrap_err();
        assert!(
            e.contains(sealed.to_str().unwrap()) && e.contains(says),
            "{name}: expected `{says}` in: {e}"
        );
        assert!(!e.contains('\n') && !e.contains("Some("), "{name}: {e}");
    }
}

#[test]
fn a_long_list_of_missing_shards_is_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let points: Vec<usize> = (0..1000).collect();
    let shard = Shard::new(5, 1000).unwrap();
    let mut r = run(Metric::Layer, Reduce::Mean, points.clone(), points.clone());
    r.control_points = None;
    let state = State::Layer {
        points: layer_points(&shard.take(&points)),
        control: None,
    };
    let f = write(dir.path(), "one.partial", &Partial::new(shard, r, state));
    let e = read_and_merge(&[f]).unwrap_err();
    assert!(
        e.contains("shards 0, 1, 2, 3, 4, 6, 7, 8, ... and 991 more of 1000 missing"),
        "{e}"
    );
    assert!(e.len() < 300, "{}", e.len());
}
