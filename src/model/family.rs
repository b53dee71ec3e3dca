//! What memprune knows about one architecture family, behind one trait, found through one
//! registry ([`crate::model::registry`]).
//!
//! A family's own file owns everything about it: detection from names and shapes
//! ([`Family::matches`]), loading ([`Family::load`]), and on the loaded network ([`Net`]) its
//! layers and taps, parameter count and MACs, coupling groups (which slices of which tensors
//! make one unit, strided sections included), and its trainable parameter groups. Its
//! `*_init` file builds it fresh for `memprune train` ([`crate::model::fresh`]). Measure,
//! plan, rewrite, eval and train read these and never match on the architecture.

use crate::checkpoint::Checkpoint;
use crate::model::act_floor::ActFloor;
use crate::model::conv_bn::{ConvBn, Mode};
use crate::model::coupling::{CouplingGroup, Slice};
use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// conv + BatchNorm + ReLU (+ max-pool): non-negative output.
    ConvBlock,
    /// A residual sum (with the block's final ReLU for torchvision blocks).
    ResidualSum,
    /// The global average pool: the representation a linear probe reads.
    Pool,
    /// A transformer block's attention sub-layer output, after its residual add.
    Attention,
    /// The attention heads of a block as units (act_u: see the ViT family).
    AttentionHeads,
    /// The MLP hidden neurons of a block (fc1 after GELU): signed.
    MlpHidden,
    /// A transformer block's MLP sub-layer output, after its residual add.
    Mlp,
}

/// A measured layer: a tap of the forward pass.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Channels (conv layers), features (pool), neurons or heads (ViT).
    pub units: usize,
    /// What act_u is known to be at least: where UnitMem measures it from.
    pub floor: ActFloor,
}

impl Layer {
    /// A layer with its kind's floor ([`LayerKind::floor`]).
    pub fn new(name: &str, kind: LayerKind, units: usize) -> Layer {
        Layer {
            name: name.to_string(),
            kind,
            units,
            floor: kind.floor(),
        }
    }

    /// The same layer with another floor (a ViT's `pool` is a LayerNorm output, unbounded).
    pub fn with_floor(self, floor: ActFloor) -> Layer {
        Layer { floor, ..self }
    }
}

impl LayerKind {
    /// The lower bound of act_u the kind's activation gives (see [`ActFloor`]).
    pub fn floor(self) -> ActFloor {
        match self {
            LayerKind::ConvBlock
            | LayerKind::ResidualSum
            | LayerKind::Pool
            | LayerKind::AttentionHeads => ActFloor::Zero,
            LayerKind::MlpHidden => ActFloor::Gelu,
            LayerKind::Attention | LayerKind::Mlp => ActFloor::Unbounded,
        }
    }
}

/// A loaded network of some family.
pub trait Net: std::fmt::Debug + Send + Sync {
    /// Short architecture id stored in metadata and JSON (`resnet9`, `resnet`, `vit`).
    fn arch_id(&self) -> &'static str;
    /// A short human description, e.g. `resnet18 (basic blocks [2, 2, 2, 2], cifar stem)`.
    fn describe(&self) -> String;
    fn in_channels(&self) -> usize;
    /// The image side the network was made for and why (an ImageNet-stem ResNet: 224; a
    /// ViT: its position embedding's grid times its patch), when its tensors say; image
    /// folders of mixed sizes are resized to it by default.
    fn input_size(&self) -> Option<(usize, String)> {
        None
    }
    /// The measured layers in forward order.
    fn layers(&self) -> Vec<Layer>;
    /// One tensor per layer of [`Net::layers`]; the last is the representation (N, dim).
    fn forward_taps(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Vec<Tensor>>;
    /// act_u of every unit of every layer for every image: (N, units) per layer.
    fn unit_acts(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.forward_taps(x, &mut Mode::Eval)?
            .into_iter()
            .map(|t| {
                if t.rank() == 4 {
                    crate::model::conv::channel_means(&t)
                } else {
                    Ok(t)
                }
            })
            .collect()
    }
    /// Every checkpoint tensor the network reads (the rest is reported as unused).
    fn used_tensors(&self) -> Vec<String>;
    /// Learnable parameters of the encoder.
    fn params(&self) -> usize;
    /// Multiply-accumulates of one forward pass of one image of side `size`.
    fn macs(&self, size: usize) -> u64;
    /// Floats the largest tensor of one forward pass of one image of side `size` holds, an
    /// upper bound checked against memory before that pass (saturating). The default, for
    /// conv nets: the widest layer at the input's full resolution.
    fn forward_peak(&self, size: usize) -> u128 {
        let widest = self
            .widths()
            .into_iter()
            .max()
            .unwrap_or(0)
            .max(self.in_channels());
        widest as u128 * size as u128 * size as u128
    }
    /// The image side the checkpoint implies, with where it comes from (what `inspect`
    /// counts MACs at unless told): a ViT's position-embedding grid times its patch, 224
    /// for a ResNet with the ImageNet stem, ...
    fn native_size(&self) -> (usize, String);
    /// Coupling groups in forward order; `heads` are head tensors reading the representation.
    fn coupling_groups(&self, heads: Vec<Slice>) -> Vec<CouplingGroup>;
    /// Layers that own parameters, in forward order, with the tensors (conv weights for the
    /// ResNets) they own: what freeze/train select and rank.
    fn trainable_groups(&self) -> Vec<(String, Vec<String>)>;
    /// The widths `memprune train` records and compares on resume.
    fn widths(&self) -> Vec<usize>;
    /// Conv + BatchNorm units in forward order (empty for families without them).
    fn conv_bns(&self) -> Vec<&ConvBn> {
        Vec::new()
    }
    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        Vec::new()
    }
    /// Metadata a rewritten checkpoint needs to load as this network with units removed
    /// (`removed`: per coupling group, the units removed; empty when masking): what shapes
    /// cannot say, such as a ViT's heads per block.
    fn rewrite_metadata(
        &self,
        _removed: &[(String, usize)],
    ) -> std::collections::BTreeMap<String, String> {
        Default::default()
    }
    /// When the network's attention heads (its [`LayerKind::AttentionHeads`] units) rest on
    /// a guessed head count: the one line that refuses `what`, a head-level operation.
    fn heads_guessed(&self, _what: &str) -> Option<String> {
        None
    }
    /// The network as patch tokens MAE can train (a ViT); None for conv nets.
    fn patch_encoder(&self) -> Option<&dyn crate::model::patch_encoder::PatchEncoder> {
        None
    }
    fn clone_box(&self) -> Box<dyn Net>;
    fn as_any(&self) -> &dyn std::any::Any;
}

impl Clone for Box<dyn Net> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// An architecture family: detection and loading.
pub trait Family: Sync {
    /// True when the checkpoint's names are this family's.
    fn matches(&self, ckpt: &Checkpoint) -> bool;
    /// The checkpoint with the family's names put in the form [`Family::load`] reads (for
    /// instance Meta's chunked ViT blocks made flat), the names in the file kept in
    /// `stored_names` so that a rewrite writes them back. Called on a matching checkpoint
    /// before `load`; the default leaves it as it is.
    fn normalize(&self, ckpt: Checkpoint) -> Result<Checkpoint> {
        Ok(ckpt)
    }
    fn load(&self, ckpt: &Checkpoint, opts: &crate::model::LoadOptions) -> Result<Box<dyn Net>>;
    /// What the family expects, for the "unknown encoder layout" message.
    fn expects(&self) -> &'static str;
}
