//! UnitMem: exact values on a hand-set network, and the streaming reduction against the
//! all-in-memory definition, shard merging, and order independence.

use candle_core::{DType, Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::metrics::unit_mem::{Reduce, UnitMemAccumulator};
use memprune::metrics::UnitScore;
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;

/// A ResNet9 of width 4 whose block1 units are set by hand (3x3 kernels with only the centre
/// tap, BatchNorm = identity + beta):
/// unit 0: x          -> mu = 1 on the one bright image, 0 elsewhere: UnitMem 1
/// unit 1: 0.5        -> the same on every image: UnitMem 0
/// unit 2: relu(-1)   -> never active: dead, UnitMem 0
/// unit 3: x + 1      -> 2 on the bright image, 1 elsewhere: UnitMem (2-1)/(2+1) = 1/3
fn hand_set_resnet9() -> Encoder {
    let dev = Device::Cpu;
    let mut t = BTreeMap::new();
    let w = 4usize;
    let mut put = |name: &str, v: Tensor| {
        t.insert(name.to_string(), v);
    };
    for i in 1..=8 {
        let cin = if i == 1 { 1 } else { w };
        let mut weight = vec![0f32; w * cin * 9];
        let mut beta = vec![0f32; w];
        if i == 1 {
            weight[4] = 1.0; // unit 0, centre tap
            beta[1] = 0.5;
            beta[2] = -1.0;
            weight[3 * 9 + 4] = 1.0;
            beta[3] = 1.0;
        } else {
            for (k, x) in weight.iter_mut().enumerate() {
                *x = ((k * 7 % 11) as f32 - 5.0) * 0.01;
            }
        }
        put(
            &format!("block{i}.conv.weight"),
            Tensor::from_vec(weight, (w, cin, 3, 3), &dev).unwrap(),
        );
        put(
            &format!("block{i}.bn.weight"),
            Tensor::ones(w, DType::F32, &dev).unwrap(),
        );
        put(
            &format!("block{i}.bn.bias"),
            Tensor::from_vec(beta, w, &dev).unwrap(),
        );
        put(
            &format!("block{i}.bn.running_mean"),
            Tensor::zeros(w, DType::F32, &dev).unwrap(),
        );
        put(
            &format!("block{i}.bn.running_var"),
            Tensor::full(1.0f32 - 1e-5, w, &dev).unwrap(),
        );
    }
    let ckpt = Checkpoint::from_tensors(std::path::Path::new("hand-set"), t, Default::default());
    Encoder::from_checkpoint(ckpt, &LoadOptions::default()).unwrap()
}

#[test]
fn hand_set_units_have_known_unit_mem() {
    let enc = hand_set_resnet9();
    // Four points, one view each: point 0 bright (all ones), the others black.
    let mut data = vec![0f32; 4 * 28 * 28];
    data[..28 * 28].iter_mut().for_each(|x| *x = 1.0);
    let x = Tensor::from_vec(data, (4, 1, 28, 28), &Device::Cpu).unwrap();
    let mu = memprune::measure::mean_acts_of_views(&enc, &x, 1).unwrap();
    let units: Vec<usize> = enc.layers.iter().map(|l| l.units).collect();
    let mut acc = UnitMemAccumulator::new(&units, Reduce::Mean);
    for (p, m) in [10usize, 11, 12, 13].iter().zip(&mu) {
        acc.push(*p, m);
    }
    let layers = acc.finish(&memprune::measure::layer_names(&enc)).unwrap();
    let b1 = &layers[0];
    assert_eq!(b1.name, "block1");
    let s: Vec<f64> = b1.units.iter().map(|u| u.score).collect();
    assert!((s[0] - 1.0).abs() < 1e-6, "{s:?}");
    assert!(s[1].abs() < 1e-6, "{s:?}");
    assert_eq!(s[2], 0.0);
    assert!(b1.units[2].dead && !b1.units[0].dead && !b1.units[1].dead);
    assert!((s[3] - 1.0 / 3.0).abs() < 1e-6, "{s:?}");
    assert_eq!(b1.units[0].argmax, 10);
    assert_eq!(b1.units[3].argmax, 10);
    assert_eq!(b1.summary.dead, 1);
    assert!((b1.summary.share_above_half - 0.25).abs() < 1e-12);
    assert!(!b1.signed);
}

/// A small deterministic generator for test data.
fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

fn random_mus(points: usize, units: &[usize], seed: u64) -> Vec<(usize, Vec<Vec<f64>>)> {
    let mut s = seed;
    (0..points)
        .map(|p| {
            (
                p * 3 + 1,
                units
                    .iter()
                    .map(|&n| (0..n).map(|_| lcg(&mut s) * lcg(&mut s)).collect())
                    .collect(),
            )
        })
        .collect()
}

/// docs/METRICS.md Eq. 6-8 straight from all values in memory.
fn direct(mus: &[(usize, Vec<Vec<f64>>)], layer: usize, unit: usize, reduce: Reduce) -> UnitScore {
    let vals: Vec<(usize, f64)> = mus.iter().map(|(p, m)| (*p, m[layer][unit])).collect();
    let (k, max) = vals
        .iter()
        .fold((usize::MAX, f64::NEG_INFINITY), |a, &(p, v)| {
            if v > a.1 || (v == a.1 && p < a.0) {
                (p, v)
            } else {
                a
            }
        });
    let mut others: Vec<f64> = vals
        .iter()
        .filter(|(p, _)| *p != k)
        .map(|(_, v)| *v)
        .collect();
    let rest = match reduce {
        Reduce::Mean => others.iter().sum::<f64>() / others.len() as f64,
        Reduce::Median => memprune::metrics::summary::median(&mut others),
    };
    UnitScore::new(max, rest, k)
}

#[test]
fn streaming_equals_all_in_memory() {
    let units = [5, 3, 8];
    let mus = random_mus(200, &units, 7);
    for reduce in [Reduce::Mean, Reduce::Median] {
        let mut acc = UnitMemAccumulator::new(&units, reduce);
        for (p, m) in &mus {
            acc.push(*p, m);
        }
        let names: Vec<String> = (0..3).map(|i| format!("l{i}")).collect();
        let layers = acc.finish(&names).unwrap();
        for (l, layer) in layers.iter().enumerate() {
            for (u, got) in layer.units.iter().enumerate() {
                let want = direct(&mus, l, u, reduce);
                assert_eq!(got.argmax, want.argmax);
                assert!(
                    (got.score - want.score).abs() < 1e-12,
                    "{reduce:?} {l}/{u}: {} vs {}",
                    got.score,
                    want.score
                );
            }
        }
    }
}

#[test]
fn shards_merge_to_the_single_run_and_order_does_not_matter() {
    let units = [6, 4];
    let mus = random_mus(90, &units, 11);
    let names = vec!["a".to_string(), "b".to_string()];
    for reduce in [Reduce::Mean, Reduce::Median] {
        let mut one = UnitMemAccumulator::new(&units, reduce);
        mus.iter().for_each(|(p, m)| one.push(*p, m));
        let mut merged = UnitMemAccumulator::new(&units, reduce);
        for shard in [&mus[60..], &mus[..25], &mus[25..60]] {
            let mut acc = UnitMemAccumulator::new(&units, reduce);
            shard.iter().rev().for_each(|(p, m)| acc.push(*p, m));
            merged.merge(&acc).unwrap();
        }
        let (a, b) = (one.finish(&names).unwrap(), merged.finish(&names).unwrap());
        for (la, lb) in a.iter().zip(&b) {
            for (x, y) in la.units.iter().zip(&lb.units) {
                assert_eq!(x.argmax, y.argmax);
                assert!((x.score - y.score).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn ties_go_to_the_smallest_point_and_signed_layers_are_flagged() {
    let mut acc = UnitMemAccumulator::new(&[1], Reduce::Mean);
    acc.push(9, &[vec![2.0]]);
    acc.push(4, &[vec![2.0]]);
    acc.push(5, &[vec![-1.0]]);
    let l = acc.finish(&["x".into()]).unwrap();
    assert_eq!(l[0].units[0].argmax, 4);
    assert!(l[0].signed);
    // (2 - 0.5) / (2 + 0.5)
    assert!((l[0].units[0].score - 0.6).abs() < 1e-12);
}

#[test]
fn one_point_is_an_error() {
    let mut acc = UnitMemAccumulator::new(&[2], Reduce::Mean);
    acc.push(0, &[vec![1.0, 2.0]]);
    assert!(acc
        .finish(&["x".into()])
        .unwrap_err()
        .to_string()
        .contains("at least 2 points"));
}
