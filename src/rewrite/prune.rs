//! Removing units (shapes shrink) or masking them (zeroed in place, shapes kept).

use crate::model::coupling::CouplingGroup;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneMode {
    /// Remove the channels: every producer row and consumer column goes, shapes shrink.
    Remove,
    /// Zero the channels' conv weights and BatchNorm affine (weight and bias), so their
    /// output is exactly 0 everywhere; shapes stay. Equivalent to `remove` in every output.
    Mask,
}

/// The channels of one coupling group to remove or mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCut {
    pub group: String,
    pub channels: Vec<usize>,
}

/// Applies `cuts` to `stored` (tensors by stripped name, in their stored dtypes) and returns
/// the new tensors. Refuses to empty a group.
pub fn prune_tensors(
    stored: &BTreeMap<String, Tensor>,
    groups: &[CouplingGroup],
    cuts: &[GroupCut],
    mode: PruneMode,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = stored.clone();
    for cut in cuts {
        let Some(g) = groups.iter().find(|g| g.name == cut.group) else {
            bail!("no coupling group named `{}`", cut.group);
        };
        if let Some(&c) = cut.channels.iter().find(|&&c| c >= g.channels) {
            bail!(
                "channel {c} of `{}` is out of range ({} channels)",
                g.name,
                g.channels
            );
        }
        let cut_set: std::collections::BTreeSet<usize> = cut.channels.iter().copied().collect();
        if cut_set.len() >= g.channels {
            bail!("the plan would remove every channel of `{}`", g.name);
        }
        match mode {
            PruneMode::Remove => {
                let kept: Vec<usize> = (0..g.channels).filter(|c| !cut_set.contains(c)).collect();
                for s in g.slices() {
                    let t = out
                        .get(&s.tensor)
                        .ok_or_else(|| anyhow::anyhow!("missing tensor `{}`", s.tensor))?;
                    let idx: Vec<u32> = s
                        .indices(&kept, t.dim(s.axis)?)
                        .into_iter()
                        .map(|i| i as u32)
                        .collect();
                    let idx = Tensor::new(idx.as_slice(), &Device::Cpu)?;
                    let t = t.index_select(&idx, s.axis)?.contiguous()?;
                    out.insert(s.tensor.clone(), t);
                }
            }
            PruneMode::Mask => {
                let cut: Vec<usize> = cut_set.iter().copied().collect();
                // Zeroing the producers silences a unit, except where something between
                // them and the consumers adds to it (LayerNorm's bias in a ViT's residual
                // stream): there the consumers are zeroed too, so that nothing reads it.
                let zeroed: Vec<&crate::model::coupling::Slice> = if g.inexact.is_some() {
                    g.producers.iter().chain(&g.consumers).collect()
                } else {
                    g.producers.iter().collect()
                };
                for s in zeroed {
                    let t = out
                        .get(&s.tensor)
                        .ok_or_else(|| anyhow::anyhow!("missing tensor `{}`", s.tensor))?;
                    let rows: std::collections::BTreeSet<usize> =
                        s.indices(&cut, t.dim(s.axis)?).into_iter().collect();
                    out.insert(s.tensor.clone(), zero_along(t, s.axis, &rows)?);
                }
            }
        }
    }
    Ok(out)
}

/// `t` with the indices `rows` along `axis` set to +0, in `t`'s own dtype.
fn zero_along(t: &Tensor, axis: usize, rows: &std::collections::BTreeSet<usize>) -> Result<Tensor> {
    if axis != 0 {
        let moved = t.transpose(0, axis)?.contiguous()?;
        return Ok(zero_along(&moved, 0, rows)?
            .transpose(0, axis)?
            .contiguous()?);
    }
    let dtype = t.dtype();
    let n = t.dim(0)?;
    let per_row = t.elem_count() / n.max(1);
    // Untouched rows must keep their bits: f64 is zeroed in f64 (through f32 it would be
    // rounded); f16/bf16 -> f32 -> f16/bf16 is exact.
    if dtype == DType::F64 {
        let mut v = t.flatten_all()?.to_vec1::<f64>()?;
        zero_rows(&mut v, rows, per_row);
        return Ok(Tensor::from_vec(v, t.dims(), &Device::Cpu)?);
    }
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        bail!("a unit's producer tensor has dtype {dtype:?}; only floating-point weights can be masked");
    }
    let mut v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    zero_rows(&mut v, rows, per_row);
    Ok(Tensor::from_vec(v, t.dims(), &Device::Cpu)?.to_dtype(dtype)?)
}

fn zero_rows<T: Copy + Default>(
    v: &mut [T],
    rows: &std::collections::BTreeSet<usize>,
    per_row: usize,
) {
    for &r in rows {
        v[r * per_row..(r + 1) * per_row].fill(T::default());
    }
}
