//! Which tensor slices make up a unit, and which units must go together.
//!
//! A unit is one output channel (conv), one neuron (MLP) or one head (attention). Pruning
//! unit `c` means removing its slice of the tensors that produce it (conv weight and
//! BatchNorm vectors; fc1's row; a head's rows of each third of `qkv`) and of the tensors
//! that consume it (the next conv's input channels, fc2's column, `proj`'s columns, a head
//! reading the pooled features). A residual sum ties unit `c` of every tensor added into it:
//! such units form one [`CouplingGroup`] and are removed together or not at all. Each
//! family builds its groups ([`crate::model::family::Net::coupling_groups`]); the planner,
//! the rewriter and the MAC counter read this one description.

use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// A slice of a tensor along one axis. Along `axis` the tensor is `sections` equal sections
/// (3 for the q/k/v thirds of a fused `qkv`, else 1); in each section unit `c` owns the
/// `unit_len` indices starting at `c * unit_len` (a head's `head_dim` rows, else 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slice {
    pub tensor: String,
    pub axis: usize,
    #[serde(skip_serializing_if = "is_one")]
    pub sections: usize,
    #[serde(skip_serializing_if = "is_one")]
    pub unit_len: usize,
}

impl Slice {
    /// One index per unit along `axis`.
    pub fn plain(tensor: impl Into<String>, axis: usize) -> Slice {
        Slice {
            tensor: tensor.into(),
            axis,
            sections: 1,
            unit_len: 1,
        }
    }

    /// `unit_len` indices per unit in each of `sections` sections along `axis`.
    pub fn strided(
        tensor: impl Into<String>,
        axis: usize,
        sections: usize,
        unit_len: usize,
    ) -> Slice {
        Slice {
            tensor: tensor.into(),
            axis,
            sections,
            unit_len,
        }
    }

    /// The indices along `axis` (of length `dim`) that the units `units` own, in order:
    /// section by section, unit by unit.
    pub fn indices(&self, units: &[usize], dim: usize) -> Vec<usize> {
        let section = dim / self.sections.max(1);
        let mut v = Vec::with_capacity(units.len() * self.unit_len * self.sections);
        for s in 0..self.sections.max(1) {
            for &c in units {
                for j in 0..self.unit_len {
                    v.push(s * section + c * self.unit_len + j);
                }
            }
        }
        v
    }

    /// Per unit (of `n_units`), the sum of |x| over the unit's indices of `t` (f32 per
    /// index, summed in f64 over a unit's indices).
    pub fn unit_l1(&self, t: &Tensor, n_units: usize) -> Result<Vec<f64>> {
        let t = if self.axis == 0 {
            t.clone()
        } else {
            t.transpose(0, self.axis)?.contiguous()?
        };
        let per_index = if t.rank() == 1 {
            t.abs()?.to_vec1::<f32>()?
        } else {
            t.flatten_from(1)?.abs()?.sum(1)?.to_vec1::<f32>()?
        };
        Ok((0..n_units)
            .map(|c| {
                self.indices(&[c], per_index.len())
                    .iter()
                    .map(|&i| per_index[i] as f64)
                    .sum()
            })
            .collect())
    }
}

/// Units that exist together: removing unit `c` removes its slice from every producer and
/// every consumer.
#[derive(Debug, Clone, Serialize)]
pub struct CouplingGroup {
    /// The name users select it by: the measured layer whose units these are (`block1`,
    /// `res2`, `layer1.0.conv1`, `stage1` for a torchvision stage's residual stream,
    /// `block3.fc1` for a ViT block's MLP neurons).
    pub name: String,
    pub channels: usize,
    /// Measured layers (taps) whose units are these; their scores rank the group's units
    /// (see the planner).
    pub taps: Vec<String>,
    /// Slices that make the units' output: zeroing them masks the units (conv weight and
    /// BatchNorm affine; fc1's rows and bias).
    pub producers: Vec<Slice>,
    /// Slices removed with the units but left as they are by masking (BatchNorm running
    /// statistics).
    pub carried: Vec<Slice>,
    /// Tensors reading the units.
    pub consumers: Vec<Slice>,
    /// Why removing these units changes what the kept units compute (a ViT's residual
    /// stream: every LayerNorm normalises over all its channels); `None` when removal is
    /// exact. The planner removes such units only when the policy says `allow_inexact`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inexact: Option<String>,
}

impl CouplingGroup {
    /// Every tensor slice of the group: producers, carried, consumers.
    pub fn slices(&self) -> Vec<Slice> {
        let mut v = self.producers.clone();
        v.extend(self.carried.iter().cloned());
        v.extend(self.consumers.iter().cloned());
        v
    }

    /// Producer weights (rank >= 2): what `l1-norm` ranks by.
    pub fn producer_weights<'a>(
        &'a self,
        ckpt: &'a crate::checkpoint::Checkpoint,
    ) -> impl Iterator<Item = &'a Slice> + 'a {
        self.producers.iter().filter(move |s| {
            ckpt.tensors
                .get(&s.tensor)
                .map(|t| t.rank() >= 2)
                .unwrap_or(false)
        })
    }
}

/// A conv + BatchNorm producing the group's channels: its conv weight and BatchNorm affine
/// (zeroed by masking), and the running statistics (carried).
pub fn conv_bn_producer(g: &mut CouplingGroup, conv: &crate::model::conv_bn::ConvBn) {
    g.producers.push(Slice::plain(conv.conv_name.clone(), 0));
    if let Some((name, _)) = &conv.conv_bias {
        g.producers.push(Slice::plain(name.clone(), 0));
    }
    for s in ["weight", "bias"] {
        g.producers
            .push(Slice::plain(format!("{}.{s}", conv.bn_name), 0));
    }
    for s in ["running_mean", "running_var"] {
        g.carried
            .push(Slice::plain(format!("{}.{s}", conv.bn_name), 0));
    }
}

/// A conv reading the group's channels (its input channels, axis 1).
pub fn conv_consumer(conv: &crate::model::conv_bn::ConvBn) -> Slice {
    Slice::plain(conv.conv_name.clone(), 1)
}

/// Head tensors that may read the representation (input features on axis 1).
const HEAD_INPUTS: [&str; 5] = [
    "fc.weight",
    // The authors' ResNet9: MaxPool2d(2), Flatten, Linear.
    "classifier.2.weight",
    "projector.0.weight",
    "predictor.0.weight",
    // lightly's projection heads (SimCLR, MoCo, BYOL, ...).
    "projection_head.layers.0.weight",
];

/// The head tensors of `ckpt` that read a representation of width `feature_dim`.
pub fn heads(ckpt: &crate::checkpoint::Checkpoint, feature_dim: usize) -> Vec<Slice> {
    HEAD_INPUTS
        .iter()
        .filter(|n| {
            ckpt.tensors
                .get(**n)
                .map(|t| t.rank() == 2 && t.dims()[1] == feature_dim)
                .unwrap_or(false)
        })
        .map(|n| Slice::plain(n.to_string(), 1))
        .collect()
}

/// The coupling groups of an encoder, in forward order (kept here for callers of this path).
pub use crate::model::encoder::coupling_groups;
