//! `lamp`, layer-adaptive magnitude-based pruning (Lee et al., *Layer-adaptive Sparsity for
//! the Magnitude-based Pruning*, ICLR 2021). With the units of a layer sorted by their
//! squared magnitude m (ascending, ties by index), u before v when m_u < m_v,
//!
//!   LAMP(u) = m_u / sum_{v >= u} m_v,
//!
//! where for a unit m is the squared L2 norm of its producing weights (the paper scores
//! single weights; for channels Torch-Pruning's `LAMPImportance` uses the same p = 2 group
//! magnitude). Within a layer LAMP orders units as their magnitude does; across layers it is
//! comparable as it is (the largest unit of every layer scores 1), so a global ranking by it
//! prunes each layer adaptively.

use super::unit_rows;
use crate::checkpoint::Checkpoint;
use crate::model::coupling::CouplingGroup;
use anyhow::{bail, Result};

/// The LAMP scores of magnitudes `m` (the order of `m` is kept).
pub fn lamp(m: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..m.len()).collect();
    idx.sort_by(|&a, &b| m[a].total_cmp(&m[b]).then(a.cmp(&b)));
    // Suffix sums from the largest down (no subtraction: no cancellation).
    let mut out = vec![0f64; m.len()];
    let mut tail = 0f64;
    for &i in idx.iter().rev() {
        tail += m[i];
        out[i] = if tail > 0.0 { m[i] / tail } else { 0.0 };
    }
    out
}

/// Squared L2 norm of each unit's producing weights (summed over the group's weights).
pub fn magnitudes(g: &CouplingGroup, ckpt: &Checkpoint) -> Result<Vec<f64>> {
    let weights: Vec<_> = g.producer_weights(ckpt).collect();
    if weights.is_empty() {
        bail!("criterion lamp: `{}` has no producing weight", g.name);
    }
    let mut m = vec![0f64; g.channels];
    for p in weights {
        let rows = unit_rows(p, ckpt.get(&p.tensor)?, g.channels)?;
        for (a, r) in m.iter_mut().zip(rows) {
            *a += r.iter().map(|v| v * v).sum::<f64>();
        }
    }
    Ok(m)
}

pub fn scores(g: &CouplingGroup, ckpt: &Checkpoint) -> Result<Vec<f64>> {
    Ok(lamp(&magnitudes(g, ckpt)?))
}
