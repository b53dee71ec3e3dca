//! `fpgm`, filter pruning via the geometric median (He et al., *Filter Pruning via
//! Geometric Median for Deep Convolutional Neural Networks Acceleration*, CVPR 2019): the
//! filters nearest the geometric median of their layer are the most replaceable by the
//! others. With F_c the producing filter of unit c (flattened) among the n filters of its
//! layer,
//!
//!   I(c) = sum_{j != c} ||F_c - F_j||_2,
//!
//! the paper's approximation of the distance to the geometric median; the units with the
//! smallest sum go first. A group with several producing weights (a residual group's
//! convs) averages the sums of each (Torch-Pruning's `group_reduction='mean'`).

use super::unit_rows;
use crate::checkpoint::Checkpoint;
use crate::model::coupling::CouplingGroup;
use anyhow::{bail, Result};

/// `sum_j ||r_c - r_j||_2` for every row `c`.
pub fn distance_sums(rows: &[Vec<f64>]) -> Vec<f64> {
    let n = rows.len();
    let mut d = vec![0f64; n];
    for a in 0..n {
        for b in a + 1..n {
            let dist = rows[a]
                .iter()
                .zip(&rows[b])
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt();
            d[a] += dist;
            d[b] += dist;
        }
    }
    d
}

pub fn scores(g: &CouplingGroup, ckpt: &Checkpoint) -> Result<Vec<f64>> {
    let weights: Vec<_> = g.producer_weights(ckpt).collect();
    if weights.is_empty() {
        bail!("criterion fpgm: `{}` has no producing weight", g.name);
    }
    let mut s = vec![0f64; g.channels];
    for p in &weights {
        let rows = unit_rows(p, ckpt.get(&p.tensor)?, g.channels)?;
        for (a, d) in s.iter_mut().zip(distance_sums(&rows)) {
            *a += d / weights.len() as f64;
        }
    }
    Ok(s)
}
