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
//! The mean UnitMem-excess of a layer is tested by relabelling the points: with nothing
//! memorized the N training and N unseen points are exchangeable, so the mean excess of a
//! random split of the 2N points into two halves of N is a draw from its null distribution
//! ([`EXCESS_PERMUTATIONS`] splits, the same split for every unit, so that units that answer
//! to the same images stay correlated as they are). Its interval is the mean excess +- the
//! 95th percentile of |relabelled mean excess|; its p-value the share of relabellings at
//! least as far from 0; the star Holm's rule over the layers. Each unit's maximum over a
//! half comes from its [`crate::metrics::unit_mem::TOP`] highest responses. The other intervals of layer means are over
//! units (bootstrap over the layer's units, seeded): they describe the spread of the units,
//! not the uncertainty from the choice of points.

use crate::metrics::bootstrap::{interval, mean_interval, Bootstrap, Interval};
use crate::metrics::significance::{self, FAMILY_ALPHA};
use crate::metrics::unit_mem::UnitMemLayer;
use anyhow::{bail, Result};
use rayon::prelude::*;

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

/// Relabellings of the UnitMem-excess test (Holm's smallest threshold over 50 layers, 0.001,
/// is then reachable).
pub const EXCESS_PERMUTATIONS: usize = 2000;

/// Domain tag of the relabellings' draws.
const EXCESS_TAG: u64 = 0x4558_4345_5353_5045; // "EXCESSPE"

/// Mean UnitMem-excess of a layer under each relabelling of its `n_train + n_unseen` points
/// into halves of `n_train` and `n_unseen`, from every unit's top responses on each side.
/// `None` when a side lacks its top lists.
fn relabelled_excess(
    train: &UnitMemLayer,
    unseen: &UnitMemLayer,
    n_train: usize,
    n_unseen: usize,
    seed: u64,
    layer: usize,
) -> Option<Vec<f64>> {
    let (tt, tu) = (train.top.as_ref()?, unseen.top.as_ref()?);
    // Point identities (side, point), sorted: the order the relabelling assigns them in.
    let mut ids: Vec<(u8, usize)> = tt
        .iter()
        .flatten()
        .map(|&(p, _)| (0u8, p))
        .chain(tu.iter().flatten().map(|&(p, _)| (1u8, p)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let id = |side: u8, p: usize| ids.binary_search(&(side, p)).expect("listed");
    // Per unit: both sides' top responses pooled, highest first.
    let pooled: Vec<Vec<(f64, usize)>> = tt
        .iter()
        .zip(tu)
        .map(|(a, b)| {
            let mut v: Vec<(f64, usize)> = a
                .iter()
                .map(|&(p, m)| (m, id(0, p)))
                .chain(b.iter().map(|&(p, m)| (m, id(1, p))))
                .collect();
            v.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            v
        })
        .collect();
    let units = pooled.len().max(1) as f64;
    Some(
        (0..EXCESS_PERMUTATIONS)
            .into_par_iter()
            .map(|b| {
                let mut rng =
                    crate::data::rng::Rng::from_key(&[EXCESS_TAG, seed, layer as u64, b as u64]);
                // Sequential draw without replacement: each listed identity joins the
                // "training" half with probability (its seats left) / (points left).
                let (mut seats, mut left) = (n_train as u64, (n_train + n_unseen) as u64);
                let in_train: Vec<bool> = ids
                    .iter()
                    .map(|_| {
                        let t = rng.below(left.max(1)) < seats;
                        seats -= t as u64;
                        left = left.saturating_sub(1);
                        t
                    })
                    .collect();
                let sum: f64 = pooled
                    .iter()
                    .map(|v| {
                        let floor = v.last().map(|x| x.0).unwrap_or(0.0);
                        let max_of = |side: bool| {
                            v.iter()
                                .find(|x| in_train[x.1] == side)
                                .map(|x| x.0)
                                .unwrap_or(floor)
                        };
                        excess(max_of(true), max_of(false))
                    })
                    .sum();
                sum / units
            })
            .collect(),
    )
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
        let (excess_mean, excess_units_ci) = if ex.is_empty() {
            (None, None)
        } else {
            let (m, ci) = mean_interval(&ex, boot, tag + 5);
            (Some(m), Some(ci))
        };
        let null = excess_mean.and_then(|_| relabelled_excess(t, u, points, points, boot.seed, li));
        let (excess_mean_ci, excess_p) = match (excess_mean, &null) {
            (Some(m), Some(null)) => {
                let half = significance::abs_quantile(null, 0.95);
                (
                    Some(Interval {
                        lo: m - half,
                        hi: m + half,
                    }),
                    Some(significance::permutation_p(m, null)),
                )
            }
            _ => (None, None),
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
            excess_units_ci,
            excess_p,
            excess_star: None,
        });
    }
    let p: Vec<f64> = train
        .iter()
        .filter_map(|l| l.control.as_ref().and_then(|c| c.excess_p))
        .collect();
    if p.len() == train.len() {
        for (l, s) in train.iter_mut().zip(significance::holm(&p, FAMILY_ALPHA)) {
            if let Some(c) = &mut l.control {
                c.excess_star = Some(s);
            }
        }
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
