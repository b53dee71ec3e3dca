//! Small, fast versions of examples/calibration.rs: scores with nothing memorized (the
//! measured and the control points drawn from one distribution), many seeds, and how often a
//! layer is starred or its interval excludes 0. The full simulation on random-init encoders
//! and its figures: docs/CALIBRATION.md.

use memprune::data::rng::Rng;
use memprune::metrics::bootstrap::Bootstrap;
use memprune::metrics::layer_mem::{self, Control, PointScores};
use memprune::metrics::unit_control;
use memprune::metrics::unit_mem::{Reduce, UnitMemAccumulator};

/// A standard-normal-like draw (the sum of 12 uniforms).
fn normal(r: &mut Rng) -> f64 {
    (0..12).map(|_| r.uniform(0.0, 1.0)).sum::<f64>() - 6.0
}

/// `n` points from `first` whose SSLMem' per layer is a fixed f/g difference plus a point
/// effect shared by all layers plus a layer-specific one: no point is memorized.
fn null_points(rng: &mut Rng, first: usize, n: usize, layers: usize) -> Vec<PointScores> {
    (0..n)
        .map(|i| {
            let shared = normal(rng);
            let v: Vec<f64> = (0..layers)
                .map(|_| 0.05 + 0.01 * shared + 0.02 * normal(rng))
                .collect();
            PointScores {
                point: first + i,
                ssl_f: vec![1.0; layers],
                ssl_g: vec![1.0; layers],
                sslmem: v.clone(),
                sslmem_first_half: v.clone(),
                sslmem_second_half: v,
            }
        })
        .collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|l| format!("block{l}")).collect()
}

#[test]
fn corrected_layermem_stars_a_layer_in_at_most_about_5_percent_of_null_runs() {
    // 13 layers read together: a star wherever a per-layer 95 % interval excludes 0 marks
    // some layer in about 40 % of these runs; the family-wise star in about 5 %.
    let (runs, layers) = (100, 13);
    let mut any = 0;
    for s in 0..runs {
        let mut rng = Rng::from_key(&[77, s]);
        let cand = null_points(&mut rng, 0, 30, layers);
        let ctrl = null_points(&mut rng, 1000, 30, layers);
        let boot = Bootstrap {
            resamples: 1000,
            seed: s,
        };
        let out =
            layer_mem::layer_mem(&names(layers), &cand, Some((&ctrl, Control::Unseen)), &boot);
        // The star as the user sees it.
        let table = memprune::report::layer_mem_table(&out);
        any += table
            .lines()
            .any(|l| l.starts_with("block") && l.contains(" *")) as usize;
    }
    assert!(any <= 10, "{any} of {runs} null runs starred a layer");
}

#[test]
fn planted_difference_intervals_cover_zero_in_about_95_percent_of_null_groups() {
    // Three "planted" points against 37 others, no difference: a bootstrap of three points
    // under-covers (its interval excludes 0 in about a fifth of the layers).
    let (runs, layers) = (100u64, 4u64);
    let (mut excl, mut starred) = (0, 0);
    for s in 0..runs {
        let mut rng = Rng::from_key(&[78, s]);
        let pts = null_points(&mut rng, 0, 40, layers as usize);
        let boot = Bootstrap {
            resamples: 1000,
            seed: s,
        };
        let d = layer_mem::group_difference(&names(layers as usize), &pts, &[3, 17, 29], &boot)
            .unwrap();
        excl += d.iter().filter(|g| g.difference_ci.excludes_zero()).count() as u64;
        starred += d.iter().any(|g| g.star) as u64;
    }
    let rate = excl as f64 / (runs * layers) as f64;
    assert!(
        rate <= 0.08,
        "{excl} of {} intervals exclude 0",
        runs * layers
    );
    assert!(
        starred <= 10,
        "{starred} of {runs} null runs starred a layer"
    );
}

#[test]
fn unit_mem_excess_intervals_cover_zero_in_about_95_percent_of_null_runs() {
    // 48 units that answer to the same images (a shared point factor): training and unseen
    // points are exchangeable, so the mean excess is 0 in expectation; an interval over the
    // units ignores that all units saw the same few points and excludes 0 most of the time.
    let (runs, n, units) = (60, 20, 48);
    let (mut excl, mut starred) = (0, 0);
    for s in 0..runs {
        let mut rng = Rng::from_key(&[79, s]);
        let w: Vec<f64> = (0..units).map(|_| rng.uniform(0.2, 1.0)).collect();
        let mut side = |first: usize| {
            let mut acc = UnitMemAccumulator::new(&[units], Reduce::Mean);
            for i in 0..n {
                let a = normal(&mut rng).exp();
                let mu: Vec<f64> = w
                    .iter()
                    .map(|&wu| (a * wu + 0.3 * normal(&mut rng)).max(0.0))
                    .collect();
                acc.push(first + i, &[mu]);
            }
            acc.finish(&["l".to_string()]).unwrap()
        };
        let mut train = side(0);
        let unseen = side(10_000);
        let boot = Bootstrap {
            resamples: 1000,
            seed: s,
        };
        unit_control::attach(&mut train, &unseen, n, true, &boot).unwrap();
        let c = train[0].control.as_ref().unwrap();
        excl += c.excess_mean_ci.unwrap().excludes_zero() as usize;
        starred += (c.excess_star == Some(true)) as usize;
    }
    assert!(excl <= 7, "{excl} of {runs} intervals exclude 0");
    assert!(starred <= 7, "{starred} of {runs} null runs starred");
}

#[test]
fn a_real_difference_is_still_starred() {
    // The correction must not blind the star: candidates 0.02 above the control at every
    // layer, about 5 standard errors of the difference of two means of 60 points.
    let layers = 13;
    let mut rng = Rng::from_key(&[80]);
    let mut cand = null_points(&mut rng, 0, 60, layers);
    for p in &mut cand {
        p.sslmem.iter_mut().for_each(|v| *v += 0.02);
    }
    let ctrl = null_points(&mut rng, 1000, 60, layers);
    let out = layer_mem::layer_mem(
        &names(layers),
        &cand,
        Some((&ctrl, Control::Unseen)),
        &Bootstrap::default(),
    );
    assert!(out.iter().all(|l| l.star == Some(true)), "{out:#?}");
}
