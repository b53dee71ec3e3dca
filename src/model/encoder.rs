//! The encoder under study, built from a checkpoint's names and shapes alone.
//!
//! Every stage (measure, plan, rewrite, eval) reads the same [`Encoder`]: its layers in
//! forward order, each with the name users see and its number of units, and one forward pass
//! that returns the output of every layer (the "taps" the metrics read).

use crate::checkpoint::Checkpoint;
use crate::model::conv_bn::{ConvBn, Mode};
use crate::model::resnet::{ResNet, Stem};
use crate::model::resnet9::ResNet9;
use anyhow::{bail, Result};
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
}

/// A measured layer: a tap of the forward pass.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Channels (conv layers) or features (pool).
    pub units: usize,
}

impl Layer {
    pub fn new(name: &str, kind: LayerKind, units: usize) -> Layer {
        Layer {
            name: name.to_string(),
            kind,
            units,
        }
    }
}

/// Options for reading an encoder.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The one prefix to strip from tensor names (default: the usual wrapper prefixes).
    pub prefix: Option<String>,
    /// Override the ResNet stem detection.
    pub stem: Option<Stem>,
}

#[derive(Debug, Clone)]
pub enum Arch {
    ResNet9(ResNet9),
    ResNet(ResNet),
}

#[derive(Debug, Clone)]
pub struct Encoder {
    pub arch: Arch,
    pub layers: Vec<Layer>,
    pub checkpoint: Checkpoint,
    /// Tensors of the checkpoint the encoder does not use (projection heads, classifiers),
    /// reported and left alone.
    pub unused: Vec<String>,
}

impl Encoder {
    pub fn load(path: &std::path::Path, opts: &LoadOptions) -> Result<Encoder> {
        let ckpt = Checkpoint::load(path, opts.prefix.as_deref())?;
        Encoder::from_checkpoint(ckpt, opts)
    }

    pub fn from_checkpoint(ckpt: Checkpoint, opts: &LoadOptions) -> Result<Encoder> {
        let arch = if ResNet9::matches(&ckpt) {
            Arch::ResNet9(ResNet9::load(&ckpt)?)
        } else if ResNet::matches(&ckpt) {
            Arch::ResNet(ResNet::load(&ckpt, opts.stem)?)
        } else {
            // Conv weights (4-d) say most about a layout; list those first.
            let mut names: Vec<&String> = ckpt
                .tensors
                .iter()
                .filter(|(_, t)| t.rank() == 4)
                .map(|(k, _)| k)
                .collect();
            names.extend(
                ckpt.tensors
                    .iter()
                    .filter(|(_, t)| t.rank() != 4)
                    .map(|(k, _)| k),
            );
            let found: Vec<&str> = names.iter().take(6).map(|s| s.as_str()).collect();
            bail!(
                "{}: unknown encoder layout: found tensors {found:?}{}; expected memprune's ResNet9 (`block1.conv.weight` .. `block8`) or a torchvision ResNet (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`); use --prefix if the names carry another prefix",
                ckpt.path.display(),
                if ckpt.tensors.len() > 6 { " ..." } else { "" }
            );
        };
        let layers = match &arch {
            Arch::ResNet9(m) => m.layers(),
            Arch::ResNet(m) => m.layers(),
        };
        let used: std::collections::BTreeSet<String> = conv_bns(&arch)
            .iter()
            .flat_map(|c| c.tensor_names())
            .collect();
        let unused = ckpt
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        Ok(Encoder {
            arch,
            layers,
            checkpoint: ckpt,
            unused,
        })
    }

    /// A short name of the architecture, e.g. `resnet9` or `resnet18 (basic, cifar stem)`.
    pub fn describe(&self) -> String {
        match &self.arch {
            Arch::ResNet9(_) => "resnet9".to_string(),
            Arch::ResNet(m) => {
                let counts: Vec<usize> = m.stages.iter().map(|s| s.len()).collect();
                let per_block = if m.block_kind == crate::model::resnet::BlockKind::Basic {
                    2
                } else {
                    3
                };
                let depth = counts.iter().sum::<usize>() * per_block + 2;
                let kind = match m.block_kind {
                    crate::model::resnet::BlockKind::Basic => "basic",
                    crate::model::resnet::BlockKind::Bottleneck => "bottleneck",
                };
                let stem = match m.stem {
                    Stem::Imagenet => "imagenet",
                    Stem::Cifar => "cifar",
                };
                format!("resnet{depth} ({kind} blocks {counts:?}, {stem} stem)")
            }
        }
    }

    /// Short architecture id stored in metadata and JSON: `resnet9` or `resnet`.
    pub fn arch_id(&self) -> &'static str {
        match &self.arch {
            Arch::ResNet9(_) => "resnet9",
            Arch::ResNet(_) => "resnet",
        }
    }

    pub fn in_channels(&self) -> usize {
        match &self.arch {
            Arch::ResNet9(m) => m.in_channels,
            Arch::ResNet(m) => m.in_channels,
        }
    }

    /// Width of the representation (the `pool` layer).
    pub fn feature_dim(&self) -> usize {
        self.layers.last().map(|l| l.units).unwrap_or(0)
    }

    /// Inference forward: one tensor per layer of [`Encoder::layers`], NCHW for conv layers
    /// and (N, units) for `pool`.
    pub fn forward_taps(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.forward_taps_mode(x, &mut Mode::Eval)
    }

    /// Forward in either BatchNorm mode (training records batch statistics in `mode`).
    pub fn forward_taps_mode(
        &self,
        x: &Tensor,
        mode: &mut Mode,
    ) -> candle_core::Result<Vec<Tensor>> {
        match &self.arch {
            Arch::ResNet9(m) => m.forward_taps(x, mode),
            Arch::ResNet(m) => m.forward_taps(x, mode),
        }
    }

    /// Every conv + BatchNorm of the encoder, in forward order.
    pub fn conv_bns(&self) -> Vec<&ConvBn> {
        conv_bns(&self.arch)
    }

    /// Freezes every conv + BatchNorm whose conv weight is not in `trainable` (names as
    /// `ConvBn::conv_name`), and unfreezes the others.
    pub fn freeze_all_but(&mut self, trainable: &std::collections::BTreeSet<String>) {
        let all: Vec<&mut ConvBn> = match &mut self.arch {
            Arch::ResNet9(m) => m.blocks.iter_mut().collect(),
            Arch::ResNet(m) => std::iter::once(&mut m.conv1)
                .chain(
                    m.stages
                        .iter_mut()
                        .flatten()
                        .flat_map(|b| b.convs.iter_mut().chain(b.downsample.iter_mut())),
                )
                .collect(),
        };
        for c in all {
            c.frozen = !trainable.contains(&c.conv_name);
        }
    }

    /// Per layer, the activation of every unit for every image: (N, units), the spatial
    /// mean of each channel (METRICS.md's `act_u`).
    pub fn forward_unit_acts(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.forward_taps(x)?
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

    /// The pooled representation (N, feature_dim), what a linear probe reads.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut taps = self.forward_taps(x)?;
        Ok(taps.pop().expect("every encoder has a pool layer"))
    }

    /// Multiply-accumulates of one forward pass of one image of side `size`.
    pub fn macs(&self, size: usize) -> u64 {
        crate::model::coupling::per_conv_macs(self, size)
            .iter()
            .map(|(_, m)| m)
            .sum()
    }

    /// Learnable parameters of the encoder (conv weights, BatchNorm affine).
    pub fn params(&self) -> usize {
        self.conv_bns().iter().map(|c| c.params()).sum()
    }
}

fn conv_bns(arch: &Arch) -> Vec<&ConvBn> {
    match arch {
        Arch::ResNet9(m) => m.blocks.iter().collect(),
        Arch::ResNet(m) => std::iter::once(&m.conv1)
            .chain(
                m.blocks()
                    .flat_map(|b| b.convs.iter().chain(b.downsample.iter())),
            )
            .collect(),
    }
}
