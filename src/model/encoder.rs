//! The encoder under study, built from a checkpoint's names and shapes alone.
//!
//! Every stage (measure, plan, rewrite, eval) reads the same [`Encoder`]: its layers in
//! forward order, each with the name users see and its number of units, and one forward pass
//! that returns the output of every layer (the "taps" the metrics read). What an
//! architecture is lives in its family's file ([`crate::model::registry`]); this file only
//! dispatches.

use crate::checkpoint::Checkpoint;
use crate::model::conv_bn::{ConvBn, Mode};
use crate::model::coupling::CouplingGroup;
pub use crate::model::family::{Layer, LayerKind, Net};
pub use crate::model::options::LoadOptions;
use anyhow::{bail, Result};
use candle_core::Tensor;

#[derive(Debug, Clone)]
pub struct Encoder {
    /// The network, of whichever family detected it.
    pub arch: Box<dyn Net>,
    pub layers: Vec<Layer>,
    pub checkpoint: Checkpoint,
    /// Tensors of the checkpoint the encoder does not use (projection heads, classifiers),
    /// reported and left alone.
    pub unused: Vec<String>,
    /// Where its weights are, and so where its forward passes run.
    pub device: candle_core::Device,
}

impl Encoder {
    pub fn load(path: &std::path::Path, opts: &LoadOptions) -> Result<Encoder> {
        let ckpt = Checkpoint::load_keyed(path, opts.prefix.as_deref(), opts.key.as_deref())?;
        Encoder::from_checkpoint(ckpt, opts)
    }

    /// [`Encoder::load`] with the weights on `device` (see [`crate::model::device`]).
    pub fn load_on(
        path: &std::path::Path,
        opts: &LoadOptions,
        device: &candle_core::Device,
    ) -> Result<Encoder> {
        let mut ckpt = Checkpoint::load_keyed(path, opts.prefix.as_deref(), opts.key.as_deref())?;
        if !device.is_cpu() {
            for t in ckpt.tensors.values_mut() {
                *t = t.to_device(device)?;
            }
        }
        Encoder::from_checkpoint(ckpt, opts)
    }

    pub fn from_checkpoint(ckpt: Checkpoint, opts: &LoadOptions) -> Result<Encoder> {
        let families = crate::model::registry::FAMILIES;
        let Some(family) = families.iter().find(|f| f.matches(&ckpt)) else {
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
            let expected: Vec<&str> = families.iter().map(|f| f.expects()).collect();
            bail!(
                "{}: unknown encoder layout: found tensors {found:?}{}; expected {}; use --prefix if the names carry another prefix",
                ckpt.path.display(),
                if ckpt.tensors.len() > 6 { " ..." } else { "" },
                expected.join(" or ")
            );
        };
        let ckpt = family.normalize(ckpt)?;
        let arch = family.load(&ckpt, opts)?;
        // Every family's tensors pass the same checks (finite values, complete pairs).
        ckpt.check_loaded(&arch.used_tensors())?;
        let layers = arch.layers();
        let used: std::collections::BTreeSet<String> = arch.used_tensors().into_iter().collect();
        let unused = ckpt
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        let device = ckpt
            .tensors
            .values()
            .next()
            .map(|t| t.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        Ok(Encoder {
            arch,
            layers,
            checkpoint: ckpt,
            unused,
            device,
        })
    }

    /// Refuses `what`, an operation on attention heads as units, when the head count is
    /// only a guess ([`crate::model::vit_heads`]); `layers`: the layers it reads (all: None).
    pub fn require_known_heads(&self, what: &str, layers: Option<&[usize]>) -> Result<()> {
        let reads_heads = self.layers.iter().enumerate().any(|(i, l)| {
            l.kind == LayerKind::AttentionHeads && layers.is_none_or(|s| s.contains(&i))
        });
        match self.arch.heads_guessed(what) {
            Some(line) if reads_heads => bail!("{line}"),
            _ => Ok(()),
        }
    }

    /// A short name of the architecture, e.g. `resnet9` or `resnet18 (basic, cifar stem)`.
    pub fn describe(&self) -> String {
        self.arch.describe()
    }

    /// Short architecture id stored in metadata and JSON: `resnet9`, `resnet` or `vit`.
    pub fn arch_id(&self) -> &'static str {
        self.arch.arch_id()
    }

    pub fn in_channels(&self) -> usize {
        self.arch.in_channels()
    }

    /// The image side the network was made for, and why ([`Net::input_size`]).
    pub fn input_size(&self) -> Option<(usize, String)> {
        self.arch.input_size()
    }

    /// Width of the representation (the last layer).
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
        self.arch.forward_taps(x, mode)
    }

    /// Inference forward handing tap `i` (as [`Encoder::forward_taps`] returns it) to
    /// `each(i, tap)` as soon as it is computed: a caller that reduces each tap holds a few
    /// layers' activations instead of the network's.
    pub fn forward_taps_each(
        &self,
        x: &Tensor,
        each: &mut dyn FnMut(usize, Tensor) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        self.arch.forward_taps_each(x, &mut Mode::Eval, each)
    }

    /// Floats per image of the largest tap of a forward pass of images of side `size` (one
    /// zero image through the network): what a batch's memory scales with when taps are
    /// reduced as they are computed.
    pub fn largest_tap(&self, size: usize) -> candle_core::Result<usize> {
        let x = Tensor::zeros(
            (1, self.in_channels(), size, size),
            candle_core::DType::F32,
            &self.device,
        )?;
        let mut largest = 0;
        self.forward_taps_each(&x, &mut |_, t| {
            largest = largest.max(t.elem_count());
            Ok(())
        })?;
        Ok(largest)
    }

    /// Fails, naming the checkpoint, when images of side `size` cannot pass through the
    /// network (too small for its pools and strides, or no patch for a ViT): one forward of a
    /// single zero image, so the error is one clear line before any work instead of an
    /// op's message ("max_pool2d: bad geometry") in the middle of it.
    pub fn check_input_size(&self, size: usize) -> Result<()> {
        let shown = self.checkpoint.path.display();
        if size == 0 {
            bail!("{shown}: images of side 0 cannot be measured");
        }
        let peak = self.arch.forward_peak(size).min(usize::MAX as u128) as usize;
        let input = (self.in_channels() as u128 * size as u128 * size as u128)
            .min(usize::MAX as u128) as usize;
        crate::data::limits::check_alloc(
            &format!(
                "{shown}: one {size}x{size} image through this {}",
                self.describe()
            ),
            &[peak.max(input), 2],
            4,
        )?;
        let x = Tensor::zeros(
            (1, self.in_channels(), size, size),
            candle_core::DType::F32,
            &self.device,
        )?;
        self.forward_taps(&x).map(|_| ()).map_err(|e| {
            let e = e.to_string();
            anyhow::anyhow!(
                "{shown}: {size}x{size} images do not fit this {} ({})",
                self.describe(),
                e.lines().next().unwrap_or("").trim()
            )
        })
    }

    /// Every conv + BatchNorm of the encoder, in forward order.
    pub fn conv_bns(&self) -> Vec<&ConvBn> {
        self.arch.conv_bns()
    }

    /// Freezes every conv + BatchNorm whose conv weight is not in `trainable` (names as
    /// `ConvBn::conv_name`), and unfreezes the others.
    pub fn freeze_all_but(&mut self, trainable: &std::collections::BTreeSet<String>) {
        for c in self.arch.conv_bns_mut() {
            c.frozen = !trainable.contains(&c.conv_name);
            if c.frozen {
                // The folded weights are computed from the trainable variables; detached,
                // backward stops here instead of computing gradients nobody keeps.
                c.folded_weight = c.folded_weight.detach();
                c.folded_bias = c.folded_bias.detach();
            }
        }
    }

    /// Per layer, the activation of every unit for every image: (N, units), the spatial
    /// mean of each channel (docs/METRICS.md's `act_u`; the family defines it for other units).
    pub fn forward_unit_acts(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.arch.unit_acts(x)
    }

    /// The pooled representation (N, feature_dim), what a linear probe reads.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut taps = self.forward_taps(x)?;
        Ok(taps
            .pop()
            .expect("every encoder has a representation layer"))
    }

    /// Multiply-accumulates of one forward pass of one image of side `size`.
    pub fn macs(&self, size: usize) -> u64 {
        self.arch.macs(size)
    }

    /// Learnable parameters of the encoder.
    pub fn params(&self) -> usize {
        self.arch.params()
    }

    /// Layers that own parameters, in forward order, with the tensors they own.
    pub fn trainable_groups(&self) -> Vec<(String, Vec<String>)> {
        self.arch.trainable_groups()
    }

    /// The widths `memprune train` records.
    pub fn widths(&self) -> Vec<usize> {
        self.arch.widths()
    }
}

/// The coupling groups of an encoder, in forward order.
pub fn coupling_groups(enc: &Encoder) -> Vec<CouplingGroup> {
    enc.arch.coupling_groups(crate::model::coupling::heads(
        &enc.checkpoint,
        enc.feature_dim(),
    ))
}
