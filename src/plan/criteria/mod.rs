//! Importance criteria that read the checkpoint (and, for `taylor`, a loss's gradients): one
//! file each, one score per unit of a coupling group, higher = more important. The planner
//! ranks by them per layer, or globally after [`global_normaliser`]. Definitions, equations
//! and references: docs/COMPRESSION.md.
//!
//! A unit's parameters are its slices of the group's producers ([`unit_rows`]): the conv
//! filter (or fc1 row, or a head's q/k/v rows), its bias and its BatchNorm affine.

pub mod bn_scale;
pub mod fpgm;
pub mod lamp;
pub mod taylor;

use crate::model::coupling::Slice;
use crate::plan::policy::Criterion;
use anyhow::Result;
use candle_core::Tensor;

/// How scores of different groups are made comparable for `scope: global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normaliser {
    /// Ranked as they are: the criterion's paper ranks them across layers so.
    None,
    /// Each group's scores divided by their mean (Torch-Pruning's default, `normalizer='mean'`).
    Mean,
}

/// The normalisation `scope: global` applies to a criterion's per-group scores.
/// `l1-norm` and `fpgm`: divided by the group's mean (Torch-Pruning's default; their
/// papers prune per layer). `bn-scale` (Liu et al. rank |gamma| of the whole network
/// against one threshold), `taylor` (Molchanov et al. 2019 rank every neuron's importance
/// globally) and `lamp` (its score is built to be compared across layers) as they are;
/// UnitMem and ClassMem lie in [0, 1] on every layer.
pub fn global_normaliser(c: Criterion) -> Normaliser {
    match c {
        Criterion::L1Norm | Criterion::Fpgm => Normaliser::Mean,
        _ => Normaliser::None,
    }
}

/// `s` divided by its mean (unchanged when the mean is 0 or not finite).
pub fn mean_normalised(s: &[f64]) -> Vec<f64> {
    let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
    if mean == 0.0 || !mean.is_finite() {
        return s.to_vec();
    }
    s.iter().map(|v| v / mean).collect()
}

/// Per unit (of `n_units`), the values of `t` the unit owns under `slice`, in index order
/// (every index along the slice's axis, all the other axes flattened), as f64.
pub fn unit_rows(slice: &Slice, t: &Tensor, n_units: usize) -> Result<Vec<Vec<f64>>> {
    let t = if slice.axis == 0 {
        t.clone()
    } else {
        t.transpose(0, slice.axis)?.contiguous()?
    };
    let dim = t.dim(0)?;
    let rows: Vec<Vec<f32>> = if t.rank() == 1 {
        t.to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| vec![v])
            .collect()
    } else {
        t.flatten_from(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?
    };
    Ok((0..n_units)
        .map(|c| {
            slice
                .indices(&[c], dim)
                .iter()
                .flat_map(|&i| rows[i].iter().map(|&v| v as f64))
                .collect()
        })
        .collect())
}
