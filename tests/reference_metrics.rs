//! memprune's UnitMem and LayerMem against the independent NumPy/PyTorch implementation of
//! docs/METRICS.md (examples/reference_metrics.py), on the same committed view tensors.

use candle_core::{Device, Tensor};
use memprune::data::npy;
use memprune::metrics::layer_mem::{layer_mem, Pairing};
use memprune::metrics::unit_mem::{Reduce, UnitMemAccumulator};
use memprune::model::{Encoder, LoadOptions};

mod common;
use common::parity;

fn load(name: &str) -> Encoder {
    Encoder::load(&parity(name), &LoadOptions::default()).unwrap()
}

/// (points, views as a (P*V, C, S, S) tensor, V)
fn views(dir: &str) -> (Vec<usize>, Tensor, usize) {
    let (pshape, points) = npy::read_npy_i64(&parity(&format!("{dir}/points.npy"))).unwrap();
    let (shape, data) = npy::read_npy_f32(&parity(&format!("{dir}/views.npy"))).unwrap();
    assert_eq!(pshape[0], shape[0]);
    let x = Tensor::from_vec(
        data,
        (shape[0] * shape[1], shape[2], shape[3], shape[4]),
        &Device::Cpu,
    )
    .unwrap();
    (
        points.into_iter().map(|p| p as usize).collect(),
        x,
        shape[1],
    )
}

fn expected(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(parity(rel)).unwrap()).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-4, "{what}: memprune {a}, reference {b}");
}

fn unit_mem_matches(reduce: Reduce, file: &str) {
    let enc = load("resnet9_narrow.safetensors");
    let (points, x, k) = views("views_unit");
    let mu = memprune::measure::mean_acts_of_views(&enc, &x, k).unwrap();
    let units: Vec<usize> = enc.layers.iter().map(|l| l.units).collect();
    let mut acc = UnitMemAccumulator::new(&units, reduce);
    for (p, m) in points.iter().zip(&mu) {
        acc.push(*p, m);
    }
    let layers = acc.finish(&memprune::measure::layer_names(&enc)).unwrap();
    let want = expected(&format!("views_unit/{file}"));
    let want = want["layers"].as_array().unwrap();
    assert_eq!(layers.len(), want.len());
    for (l, w) in layers.iter().zip(want) {
        assert_eq!(l.name, w["name"].as_str().unwrap());
        for (u, s) in l.units.iter().enumerate() {
            let what = format!("{} unit {u}", l.name);
            close(s.score, w["unit_mem"][u].as_f64().unwrap(), &what);
            close(s.mu_max, w["mu_max"][u].as_f64().unwrap(), &what);
            close(s.mu_rest, w["mu_rest"][u].as_f64().unwrap(), &what);
            assert_eq!(
                s.argmax as u64,
                w["argmax"][u].as_u64().unwrap(),
                "{what}: argmax"
            );
        }
    }
}

#[test]
fn unit_mem_mean_matches_reference() {
    unit_mem_matches(Reduce::Mean, "expected_unit_mean.json");
}

#[test]
fn unit_mem_median_matches_reference() {
    unit_mem_matches(Reduce::Median, "expected_unit_median.json");
}

fn layer_mem_matches(dir: &str, pairing: Pairing) {
    let f = load("resnet9_narrow.safetensors");
    let g = load("resnet9_narrow_f16.safetensors");
    let (points, mut x, v) = views(dir);
    let k = if pairing == Pairing::Views { v / 2 } else { v };
    if pairing == Pairing::Clean {
        let (shape, data) = npy::read_npy_f32(&parity(&format!("{dir}/clean.npy"))).unwrap();
        let clean = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        x = Tensor::cat(&[&x, &clean], 0).unwrap();
    }
    let scores = memprune::measure::point_scores_of_views(&f, &g, &x, &points, k, pairing).unwrap();
    let layers = layer_mem(
        &memprune::measure::layer_names(&f),
        &scores,
        None,
        &memprune::metrics::bootstrap::Bootstrap::default(),
    );
    let want = expected(&format!("{dir}/expected_layer.json"));
    for (l, w) in layers.iter().zip(want["layers"].as_array().unwrap()) {
        assert_eq!(l.name, w["name"].as_str().unwrap());
        close(l.layer_mem, w["layer_mem"].as_f64().unwrap(), &l.name);
        match (l.dlayer_mem, w["dlayer_mem"].as_f64()) {
            (Some(a), Some(b)) => close(a, b, &l.name),
            (None, None) => {}
            other => panic!("{}: dLayerMem {other:?}", l.name),
        }
    }
    for (s, w) in scores.iter().zip(want["per_point"].as_array().unwrap()) {
        assert_eq!(s.point as u64, w["point"].as_u64().unwrap());
        for (l, (a, b)) in s
            .sslmem
            .iter()
            .zip(w["sslmem"].as_array().unwrap())
            .enumerate()
        {
            close(
                *a,
                b.as_f64().unwrap(),
                &format!("point {} layer {l}", s.point),
            );
        }
    }
}

#[test]
fn layer_mem_view_pairs_match_reference() {
    layer_mem_matches("views_layer", Pairing::Views);
}

#[test]
fn layer_mem_clean_pairs_match_reference() {
    layer_mem_matches("views_layer_clean", Pairing::Clean);
}
