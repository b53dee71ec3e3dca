//! `bn-scale`, network slimming (Liu et al., *Learning Efficient Convolutional Networks
//! through Network Slimming*, ICCV 2017): a channel's importance is the magnitude of the
//! scale of the BatchNorm that follows it,
//!
//!   I(c) = |gamma_c|,
//!
//! averaged over the BatchNorms of its coupling group (a residual group's channel is
//! normalised by several; Torch-Pruning's `BNScaleImportance` averages them the same way).

use crate::checkpoint::Checkpoint;
use crate::model::coupling::CouplingGroup;
use anyhow::{bail, Result};

/// The BatchNorm scales (`*.weight` beside a `*.running_var`) among the group's producers.
pub fn bn_scales(g: &CouplingGroup) -> Vec<String> {
    g.producers
        .iter()
        .filter_map(|s| {
            let stem = s.tensor.strip_suffix(".weight")?;
            let var = format!("{stem}.running_var");
            g.carried
                .iter()
                .any(|c| c.tensor == var)
                .then(|| s.tensor.clone())
        })
        .collect()
}

/// |gamma| per channel, the mean over the group's BatchNorms; refused for a group with
/// none (a ViT normalises with LayerNorm across the channels: no per-unit scale follows a
/// unit).
pub fn scores(g: &CouplingGroup, ckpt: &Checkpoint) -> Result<Vec<f64>> {
    let bns = bn_scales(g);
    if bns.is_empty() {
        bail!("criterion bn-scale ranks channels by the BatchNorm scale after them; `{}` has no BatchNorm (a ViT's LayerNorm normalises across all channels, with no scale per unit): use l1-norm, taylor, fpgm or lamp", g.name);
    }
    let mut s = vec![0f64; g.channels];
    for name in &bns {
        let gamma = ckpt
            .get(name)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if gamma.len() != g.channels {
            bail!(
                "`{name}` has {} values for the {} channels of `{}`",
                gamma.len(),
                g.channels,
                g.name
            );
        }
        s.iter_mut()
            .zip(&gamma)
            .for_each(|(a, b)| *a += b.abs() as f64 / bns.len() as f64);
    }
    Ok(s)
}
