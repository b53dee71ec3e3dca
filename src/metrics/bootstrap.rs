//! Percentile bootstrap intervals, seeded and reproducible.
//!
//! ```text
//! for b in 1..B:  draw n indices with replacement from 0..n  (stream: seed, b, sample)
//!                 stat_b = the statistic on the resampled rows
//! 95 % interval = [2.5th, 97.5th] percentile of stat_1..stat_B
//! ```
//!
//! Every draw is a pure function of `(seed, b, sample tag)`, so intervals do not depend on
//! thread count, batch size or the order points were measured in (rows are sorted by point
//! index by the callers). Several statistics computed on the SAME resample (LayerMem of every
//! layer, and their differences) share its draw, so an interval of a difference is the
//! interval of the difference, not of two independent draws.

use crate::data::rng::Rng;
use serde::{Deserialize, Serialize};

/// Domain tag so bootstrap draws never share a stream with views or subsets.
const BOOT_TAG: u64 = 0x424F_4F54_5354_5250; // "BOOTSTRP"

/// Resamples of the default bootstrap.
pub const DEFAULT_RESAMPLES: usize = 1000;

/// A two-sided 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// Does the interval exclude 0?
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }

    pub fn point(x: f64) -> Interval {
        Interval { lo: x, hi: x }
    }
}

/// The settings of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: DEFAULT_RESAMPLES,
            seed: 0,
        }
    }
}

impl Bootstrap {
    /// The resampled indices of sample `tag` (0, 1, ... for independent samples such as
    /// candidates and control points) of size `n` in resample `b`.
    pub fn draw(&self, b: usize, tag: u64, n: usize) -> Vec<usize> {
        let mut rng = Rng::from_key(&[BOOT_TAG, self.seed, b as u64, tag, n as u64]);
        (0..n).map(|_| rng.below(n as u64) as usize).collect()
    }

    /// Column means of `rows` (n x m) in every resample: B vectors of m means.
    pub fn column_means(&self, rows: &[&[f64]], tag: u64) -> Vec<Vec<f64>> {
        (0..self.resamples)
            .map(|b| mean_columns(rows, &self.draw(b, tag, rows.len())))
            .collect()
    }
}

/// Column means of the rows picked by `idx` (all rows of equal length).
pub fn mean_columns(rows: &[&[f64]], idx: &[usize]) -> Vec<f64> {
    let m = rows.first().map(|r| r.len()).unwrap_or(0);
    let mut s = vec![0f64; m];
    for &i in idx {
        for (a, &x) in s.iter_mut().zip(rows[i]) {
            *a += x;
        }
    }
    let n = idx.len().max(1) as f64;
    s.iter_mut().for_each(|a| *a /= n);
    s
}

/// The 95 % percentile interval of `values` (linear interpolation between order statistics,
/// as numpy's default). A single value gives a zero-width interval.
pub fn interval(values: &[f64]) -> Interval {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Interval {
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Interval {
        lo: quantile_sorted(&v, 0.025),
        hi: quantile_sorted(&v, 0.975),
    }
}

/// The `q` quantile of sorted `v` (linear interpolation, numpy's default).
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < v.len() {
        v[i] + frac * (v[i + 1] - v[i])
    } else {
        v[i]
    }
}

/// The mean of `values` and its bootstrap interval (resampling the values themselves).
pub fn mean_interval(values: &[f64], boot: &Bootstrap, tag: u64) -> (f64, Interval) {
    let rows: Vec<&[f64]> = values.iter().map(std::slice::from_ref).collect();
    let means: Vec<f64> = boot
        .column_means(&rows, tag)
        .into_iter()
        .map(|m| m.first().copied().unwrap_or(f64::NAN))
        .collect();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    (mean, interval(&means))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_of_constant_values_is_a_point() {
        let b = Bootstrap::default();
        let (m, ci) = mean_interval(&[0.25; 40], &b, 0);
        assert_eq!(m, 0.25);
        assert_eq!(ci, Interval::point(0.25));
    }

    #[test]
    fn interval_covers_the_mean_of_a_noisy_sample() {
        let mut rng = Rng::from_key(&[7]);
        let v: Vec<f64> = (0..200).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let (m, ci) = mean_interval(&v, &Bootstrap::default(), 0);
        assert!(ci.lo < m && m < ci.hi, "{ci:?} {m}");
        // Standard error of a uniform(-1,1) mean of 200: 0.041; the interval is about +-2 se.
        assert!((ci.hi - ci.lo) > 0.1 && (ci.hi - ci.lo) < 0.22, "{ci:?}");
    }

    #[test]
    fn draws_depend_only_on_seed_resample_and_tag() {
        let b = Bootstrap {
            resamples: 3,
            seed: 5,
        };
        assert_eq!(b.draw(2, 1, 10), b.draw(2, 1, 10));
        assert_ne!(b.draw(2, 1, 10), b.draw(2, 0, 10));
        assert_ne!(b.draw(1, 1, 10), b.draw(2, 1, 10));
    }
}
