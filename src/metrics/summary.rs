//! Per-unit scores and their per-layer summary, shared by UnitMem and ClassMem.

use serde::{Deserialize, Serialize};

/// The score of one unit: `(mu_max - mu_rest) / (mu_max + mu_rest)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UnitScore {
    pub score: f64,
    /// The point (UnitMem: global data index) or class (ClassMem) with the highest mean.
    pub argmax: usize,
    pub mu_max: f64,
    /// Mean (or median) over the other points or classes.
    pub mu_rest: f64,
    /// `mu_max <= 0`: the unit never activates on these points; its score is 0.
    pub dead: bool,
}

impl UnitScore {
    /// Eq. 8, with the edge cases of docs/METRICS.md: a dead unit (`mu_max <= 0`) scores 0; a
    /// zero denominator (possible only for signed activations) scores 0 too.
    pub fn new(mu_max: f64, mu_rest: f64, argmax: usize) -> UnitScore {
        UnitScore::from_floor(mu_max, mu_rest, argmax, 0.0)
    }

    /// Eq. 8 on act_u measured from `floor`, the activation's lower bound (docs/METRICS.md,
    /// "Signed layers"): `(mu_max - mu_rest) / ((mu_max - floor) + (mu_rest - floor))`. Dead:
    /// `mu_max <= floor`. Floor 0 is [`UnitScore::new`] bit for bit (`x - 0.0 == x`).
    pub fn from_floor(mu_max: f64, mu_rest: f64, argmax: usize, floor: f64) -> UnitScore {
        let (hi, rest) = (mu_max - floor, mu_rest - floor);
        let dead = hi <= 0.0;
        let denom = hi + rest;
        let score = if dead || denom == 0.0 {
            0.0
        } else {
            (hi - rest) / denom
        };
        UnitScore {
            score,
            argmax,
            mu_max,
            mu_rest,
            dead,
        }
    }
}

/// Statistics of a layer's unit scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub mean: f64,
    pub median: f64,
    pub max: f64,
    /// Share of units with a score above 0.5.
    pub share_above_half: f64,
    pub dead: usize,
}

impl LayerSummary {
    pub fn of(units: &[UnitScore]) -> LayerSummary {
        let mut s: Vec<f64> = units.iter().map(|u| u.score).collect();
        let n = s.len().max(1) as f64;
        let mean = s.iter().sum::<f64>() / n;
        let above = s.iter().filter(|&&x| x > 0.5).count() as f64 / n;
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        LayerSummary {
            mean,
            median: median(&mut s),
            max: if max.is_finite() { max } else { 0.0 },
            share_above_half: above,
            dead: units.iter().filter(|u| u.dead).count(),
        }
    }
}

/// The median as numpy computes it (mean of the two middle values for even lengths);
/// 0 for an empty slice. Sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
