//! The control of UnitMem and ClassMem: the same units on as many points the encoder never
//! trained on, and UnitMem-excess, the per-unit memorization score.
//!
//! ```text
//! UnitMem-excess(u) = (mu_max,train(u) - mu_max,unseen(u)) / (mu_max,train(u) + mu_max,unseen(u))
//! ```
//!
//! `mu_max,train` is Eq. 6 over the N training points, `mu_max,unseen` the same maximum over
//! N points the encoder never saw (the test split). A unit that is merely selective (it fires
//! on a rare kind of image) reaches about the same maximum on unseen points: excess ~ 0. A
//! unit that fires on one training image it memorized reaches a maximum no unseen point
//! reaches: excess -> 1. Without memorization the two maxima are exchangeable, so the excess
//! is symmetric around 0 and a layer's mean excess estimates 0; N must be the same on both
//! sides (the maximum grows with N). A dead unit (`mu_max,train <= 0`) scores 0. In signed
//! layers both maxima are measured from the layer's act_u floor, as UnitMem's.
//!
//! Intervals of layer means are over units (bootstrap over the layer's units, seeded).

use crate::metrics::bootstrap::{interval, mean_interval, Bootstrap, Interval};
use crate::metrics::unit_mem::UnitMemLayer;
use anyhow::{bail, Result};

pub use crate::metrics::unit_control_summary::UnitControl;

/// Eq. above for one unit.
pub fn excess(mu_max_train: f64, mu_max_unseen: f64) -> f64 {
    excess_from(mu_max_train, mu_max_unseen, 0.0)
}

/// Eq. above with both maxima measured from the layer's act_u floor (as UnitMem: in [-1, 1]
/// when both are above it; floor 0 is [`excess`] bit for bit).
pub fn excess_from(mu_max_train: f64, mu_max_unseen: f64, floor: f64) -> f64 {
    let (a, b) = (mu_max_train - floor, mu_max_unseen - floor);
    let denom = a + b;
    if a <= 0.0 || denom == 0.0 {
        0.0
    } else {
        (a - b) / denom
    }
}

/// Attaches the control to every layer of `train` from the same units measured on unseen
/// points (`unseen`, same layers, `points` on each side). `with_excess`: UnitMem (the
/// argmax is a point) rather than ClassMem (a class).
pub fn attach(
    train: &mut [UnitMemLayer],
    unseen: &[UnitMemLayer],
    points: usize,
    with_excess: bool,
    boot: &Bootstrap,
) -> Result<()> {
    if train.len() != unseen.len() {
        bail!(
            "control: {} layers measured against {}",
            unseen.len(),
            train.len()
        );
    }
    for (li, (t, u)) in train.iter_mut().zip(unseen).enumerate() {
        if t.name != u.name || t.units.len() != u.units.len() {
            bail!("control: layer {} does not match {}", u.name, t.name);
        }
        let tag = 100 + 10 * li as u64;
        let st: Vec<f64> = t.units.iter().map(|x| x.score).collect();
        let su: Vec<f64> = u.units.iter().map(|x| x.score).collect();
        let diff: Vec<f64> = st.iter().zip(&su).map(|(a, b)| a - b).collect();
        let above = |v: &[f64]| -> Vec<f64> {
            v.iter().map(|&x| if x > 0.5 { 1.0 } else { 0.0 }).collect()
        };
        let (_, mean_ci) = mean_interval(&st, boot, tag);
        let (_, unseen_mean_ci) = mean_interval(&su, boot, tag + 1);
        let (mean_difference, mean_difference_ci) = mean_interval(&diff, boot, tag + 2);
        let (_, share_above_half_ci) = mean_interval(&above(&st), boot, tag + 3);
        let (_, unseen_share_above_half_ci) = mean_interval(&above(&su), boot, tag + 4);
        let ex: Vec<f64> = if with_excess {
            t.units
                .iter()
                .zip(&u.units)
                .map(|(a, b)| excess_from(a.mu_max, b.mu_max, t.act_floor))
                .collect()
        } else {
            Vec::new()
        };
        let (excess_mean, excess_mean_ci) = if ex.is_empty() {
            (None, None)
        } else {
            let (m, ci) = mean_interval(&ex, boot, tag + 5);
            (Some(m), Some(ci))
        };
        t.control = Some(UnitControl {
            points,
            unseen: u.summary,
            mean_ci,
            unseen_mean_ci,
            mean_difference,
            mean_difference_ci,
            share_above_half_ci,
            unseen_share_above_half_ci,
            excess: ex,
            excess_mean,
            excess_mean_ci,
        });
    }
    Ok(())
}

/// The units of `layer` ranked by UnitMem-excess, highest first (ties by unit index).
pub fn top_units(layer: &UnitMemLayer, n: usize) -> Vec<(usize, f64)> {
    let Some(c) = &layer.control else {
        return Vec::new();
    };
    let mut v: Vec<(usize, f64)> = c.excess.iter().copied().enumerate().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Interval of the mean of a column of values (re-exported for reports).
pub fn values_interval(v: &[f64]) -> Interval {
    interval(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::unit_mem::{Reduce, UnitMemAccumulator};

    fn layer(mu: &[Vec<f64>], first_point: usize) -> Vec<UnitMemLayer> {
        let mut acc = UnitMemAccumulator::new(&[mu[0].len()], Reduce::Mean);
        for (i, m) in mu.iter().enumerate() {
            acc.push(first_point + i, std::slice::from_ref(m));
        }
        acc.finish(&["l".to_string()]).unwrap()
    }

    #[test]
    fn a_unit_firing_on_one_training_point_has_high_excess_a_selective_unit_about_zero() {
        // Unit 0 fires on training point 3 only; unit 1 fires as strongly on one training
        // and one unseen point (selective, not memorizing); unit 2 is flat everywhere.
        let n = 50;
        let train: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                vec![
                    if i == 3 { 1.0 } else { 0.05 },
                    if i == 7 { 1.0 } else { 0.05 },
                    0.2,
                ]
            })
            .collect();
        let unseen: Vec<Vec<f64>> = (0..n)
            .map(|i| vec![0.05, if i == 11 { 1.0 } else { 0.05 }, 0.2])
            .collect();
        let mut t = layer(&train, 0);
        let u = layer(&unseen, 1000);
        // UnitMem itself cannot tell unit 0 from unit 1.
        assert_eq!(t[0].units[0].score, t[0].units[1].score);
        attach(&mut t, &u, n, true, &Bootstrap::default()).unwrap();
        let ex = &t[0].control.as_ref().unwrap().excess;
        assert!(ex[0] > 0.9, "{ex:?}");
        assert_eq!(ex[1], 0.0);
        assert_eq!(ex[2], 0.0);
        assert_eq!(top_units(&t[0], 1), vec![(0, ex[0])]);
    }

    #[test]
    fn identical_responses_give_zero_difference_and_excess() {
        let mu: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![i as f64 * 0.1, 1.0 / (1.0 + i as f64)])
            .collect();
        let mut t = layer(&mu, 0);
        let u = layer(&mu, 500);
        attach(&mut t, &u, 20, true, &Bootstrap::default()).unwrap();
        let c = t[0].control.as_ref().unwrap();
        assert_eq!(c.mean_difference, 0.0);
        assert_eq!(c.mean_difference_ci, Interval::point(0.0));
        assert_eq!(c.excess, vec![0.0, 0.0]);
    }
}
