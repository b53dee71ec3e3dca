//! Seeded, deterministic initialisation of a fresh encoder (ResNet9 or a torchvision-layout
//! ResNet) and of the training heads.
//!
//! Conv weights: Kaiming normal, fan_out, gain sqrt(2) (torchvision's ResNet init).
//! BatchNorm: weight 1, bias 0, running mean 0, running variance 1. Linear layers:
//! PyTorch's default `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weight and bias. Every tensor
//! draws from its own stream keyed by (seed, tensor name), so adding a head never changes
//! the encoder's initial weights.

use crate::train::init_draws::{normals, rng_for};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

/// The paper's ResNet9 widths.
pub const PAPER_WIDTHS: [usize; 8] = [32, 64, 64, 64, 128, 256, 256, 256];

/// Checks ResNet9 widths: 8 positive values, with the residual sums' widths equal.
pub fn check_widths(widths: &[usize]) -> Result<()> {
    if widths.len() != 8 {
        bail!(
            "ResNet9 needs 8 widths (one per conv block), got {}",
            widths.len()
        );
    }
    if widths.contains(&0) {
        bail!("ResNet9 widths must be > 0, got {widths:?}");
    }
    if widths[1] != widths[3] || widths[5] != widths[7] {
        bail!("ResNet9 widths {widths:?}: blocks 2 and 4, and blocks 6 and 8, are added (Res2, Res6) and need equal widths");
    }
    Ok(())
}

fn cpu() -> Device {
    Device::Cpu
}

fn kaiming_conv(seed: u64, name: &str, cout: usize, cin: usize, k: usize) -> Result<Tensor> {
    let fan_out = (cout * k * k) as f64;
    let std = (2.0 / fan_out).sqrt() as f32;
    let v: Vec<f32> = normals(&mut rng_for(seed, name), cout * cin * k * k)
        .into_iter()
        .map(|x| x * std)
        .collect();
    Ok(Tensor::from_vec(v, (cout, cin, k, k), &cpu())?)
}

/// Adds `prefix.{weight,bias,running_mean,running_var}` of a fresh BatchNorm with `c` channels.
pub fn batch_norm(out: &mut BTreeMap<String, Tensor>, prefix: &str, c: usize) -> Result<()> {
    let d = cpu();
    out.insert(
        format!("{prefix}.weight"),
        Tensor::ones(c, candle_core::DType::F32, &d)?,
    );
    out.insert(
        format!("{prefix}.bias"),
        Tensor::zeros(c, candle_core::DType::F32, &d)?,
    );
    out.insert(
        format!("{prefix}.running_mean"),
        Tensor::zeros(c, candle_core::DType::F32, &d)?,
    );
    out.insert(
        format!("{prefix}.running_var"),
        Tensor::ones(c, candle_core::DType::F32, &d)?,
    );
    Ok(())
}

/// Adds `prefix.weight` (out, in) and, with `bias`, `prefix.bias` (out): PyTorch's default
/// Linear initialisation.
pub fn linear(
    out: &mut BTreeMap<String, Tensor>,
    seed: u64,
    prefix: &str,
    fan_in: usize,
    fan_out: usize,
    bias: bool,
) -> Result<()> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut rng = rng_for(seed, prefix);
    let w: Vec<f32> = (0..fan_in * fan_out)
        .map(|_| rng.uniform(-bound, bound) as f32)
        .collect();
    out.insert(
        format!("{prefix}.weight"),
        Tensor::from_vec(w, (fan_out, fan_in), &cpu())?,
    );
    if bias {
        let b: Vec<f32> = (0..fan_out)
            .map(|_| rng.uniform(-bound, bound) as f32)
            .collect();
        out.insert(
            format!("{prefix}.bias"),
            Tensor::from_vec(b, fan_out, &cpu())?,
        );
    }
    Ok(())
}

/// The architectures `memprune train` builds from scratch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TrainArch {
    /// The paper's ResNet9; `--widths` gives its 8 block widths.
    Resnet9,
    /// torchvision resnet18 (BasicBlock [2, 2, 2, 2]); `--widths` gives the 4 stage widths.
    Resnet18,
    /// torchvision resnet34 (BasicBlock [3, 4, 6, 3]).
    Resnet34,
    /// torchvision resnet50 (Bottleneck [3, 4, 6, 3], expansion 4).
    Resnet50,
    /// A ViT in timm's layout; sizes by --depth, --width, --heads, --mlp, --patch.
    Vit,
}

impl TrainArch {
    pub fn name(self) -> &'static str {
        match self {
            TrainArch::Resnet9 => "resnet9",
            TrainArch::Resnet18 => "resnet18",
            TrainArch::Resnet34 => "resnet34",
            TrainArch::Resnet50 => "resnet50",
            TrainArch::Vit => "vit",
        }
    }

    /// The paper's ResNet9 widths, or torchvision's stage widths.
    pub fn default_widths(self) -> Vec<usize> {
        match self {
            TrainArch::Resnet9 => PAPER_WIDTHS.to_vec(),
            TrainArch::Vit => crate::train::vit_init::VitShape::default().widths(),
            _ => vec![64, 128, 256, 512],
        }
    }

    fn blocks(self) -> (&'static [usize], bool) {
        match self {
            TrainArch::Resnet9 | TrainArch::Vit => (&[], false),
            TrainArch::Resnet18 => (&[2, 2, 2, 2], false),
            TrainArch::Resnet34 => (&[3, 4, 6, 3], false),
            TrainArch::Resnet50 => (&[3, 4, 6, 3], true),
        }
    }

    /// Checks `widths` for this architecture.
    pub fn check_widths(self, widths: &[usize]) -> Result<()> {
        self.check_width_values(widths)?;
        // The widest 3x3 conv, with its gradient and optimizer state, must fit before the
        // network is built (`--widths 1000000000,...` is one line, not an abort).
        let widest = widths.iter().copied().max().unwrap_or(0);
        let out = if self.blocks().1 {
            widest.saturating_mul(4)
        } else {
            widest
        };
        crate::data::limits::check_alloc(
            &format!("a 3x3 conv of {widest} to {out} channels (--widths), with its gradient and optimizer state,"),
            &[out, widest, 9, 4],
            4,
        )
    }

    fn check_width_values(self, widths: &[usize]) -> Result<()> {
        match self {
            TrainArch::Resnet9 => check_widths(widths),
            // A ViT's sizes come from its own flags (VitShape::check).
            TrainArch::Vit => Ok(()),
            _ if widths.len() != 4 || widths.contains(&0) => {
                bail!(
                    "{} needs 4 positive stage widths, got {widths:?}",
                    self.name()
                )
            }
            _ => Ok(()),
        }
    }

    /// Width of the representation (the pooled features).
    pub fn feature_dim(self, widths: &[usize]) -> usize {
        if self == TrainArch::Vit {
            return widths.first().copied().unwrap_or(0);
        }
        let last = widths.last().copied().unwrap_or(0);
        if self.blocks().1 {
            4 * last
        } else {
            last
        }
    }

    /// A fresh encoder; ResNets get the CIFAR stem (3x3 stride 1, no max-pool) when
    /// `small_images`, else the ImageNet stem.
    pub fn init(
        self,
        in_channels: usize,
        widths: &[usize],
        small_images: bool,
        seed: u64,
    ) -> Result<BTreeMap<String, Tensor>> {
        self.check_widths(widths)?;
        match self {
            TrainArch::Resnet9 => resnet9(in_channels, widths, seed),
            TrainArch::Vit => {
                bail!("a ViT is made by train::vit_init::encoder (it needs the image size)")
            }
            _ => {
                let (blocks, bottleneck) = self.blocks();
                resnet(in_channels, blocks, bottleneck, widths, small_images, seed)
            }
        }
    }
}

/// A fresh encoder of `like`'s architecture and sizes (ResNet9 or ViT), seeded by `seed`
/// as `memprune train` initialises: the random-init baseline of a trained model.
pub fn random_like(
    like: &std::path::Path,
    opts: &crate::model::LoadOptions,
    seed: u64,
) -> Result<crate::model::Encoder> {
    use crate::checkpoint::Checkpoint;
    use crate::model::Encoder;
    let enc = Encoder::load(like, opts)?;
    let name = std::path::PathBuf::from(format!(
        "<random-init like {}, seed {seed}>",
        like.display()
    ));
    let channels = enc.in_channels();
    let (tensors, meta) = if let Some(vit) =
        enc.arch.as_any().downcast_ref::<crate::model::vit::Vit>()
    {
        let heads = vit.heads_per_block();
        let widths = enc.widths();
        if heads.iter().any(|&h| h != heads[0]) || widths[1..].iter().any(|&w| w != widths[1]) {
            bail!(
                "{}: --random-like needs a ViT with equal blocks (this one is pruned)",
                like.display()
            );
        }
        let shape = crate::train::vit_init::VitShape {
            depth: heads.len(),
            width: vit.width(),
            heads: heads[0],
            mlp: widths[1],
            patch: vit.patch(),
            ..Default::default()
        };
        let t = crate::train::vit_init::encoder(&shape, channels, vit.grid() * vit.patch(), seed)?;
        let mut m = BTreeMap::new();
        m.insert("memprune.heads".to_string(), heads[0].to_string());
        (t, m)
    } else if enc.arch.arch_id() == "resnet9" {
        (resnet9(channels, &enc.widths(), seed)?, BTreeMap::new())
    } else {
        bail!(
            "{}: --random-like makes ResNet9s and ViTs; this is {}",
            like.display(),
            enc.describe()
        );
    };
    Encoder::from_checkpoint(Checkpoint::from_tensors(&name, tensors, meta), opts)
}

fn conv_bn(
    out: &mut BTreeMap<String, Tensor>,
    seed: u64,
    conv: &str,
    bn: &str,
    cout: usize,
    cin: usize,
    k: usize,
) -> Result<()> {
    let name = format!("{conv}.weight");
    out.insert(name.clone(), kaiming_conv(seed, &name, cout, cin, k)?);
    batch_norm(out, bn, cout)
}

/// A fresh torchvision-layout ResNet (torchvision's names): `blocks[s]` blocks in stage s,
/// stage widths `widths` (x4 for Bottleneck), a downsample where the shape changes.
pub fn resnet(
    in_channels: usize,
    blocks: &[usize],
    bottleneck: bool,
    widths: &[usize],
    small_images: bool,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    let stem_k = if small_images { 3 } else { 7 };
    conv_bn(
        &mut out,
        seed,
        "conv1",
        "bn1",
        widths[0],
        in_channels,
        stem_k,
    )?;
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = widths[0];
    for (s, (&n, &planes)) in blocks.iter().zip(widths).enumerate() {
        for j in 0..n {
            let pre = format!("layer{}.{j}", s + 1);
            let cout = planes * expansion;
            // (kernel, out, in) of conv1, conv2 (, conv3), as torchvision builds them.
            let convs: Vec<(usize, usize, usize)> = if bottleneck {
                vec![(1, planes, cin), (3, planes, planes), (1, cout, planes)]
            } else {
                vec![(3, planes, cin), (3, cout, planes)]
            };
            for (i, (k, co, ci)) in convs.into_iter().enumerate() {
                let (conv, bn) = (format!("{pre}.conv{}", i + 1), format!("{pre}.bn{}", i + 1));
                conv_bn(&mut out, seed, &conv, &bn, co, ci, k)?;
            }
            let stride = if s > 0 && j == 0 { 2 } else { 1 };
            if stride != 1 || cin != cout {
                conv_bn(
                    &mut out,
                    seed,
                    &format!("{pre}.downsample.0"),
                    &format!("{pre}.downsample.1"),
                    cout,
                    cin,
                    1,
                )?;
            }
            cin = cout;
        }
    }
    Ok(out)
}

/// A fresh ResNet9 (`block{i}.conv.weight`, `block{i}.bn.*`) for `in_channels` inputs.
pub fn resnet9(
    in_channels: usize,
    widths: &[usize],
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    check_widths(widths)?;
    let mut out = BTreeMap::new();
    let mut cin = in_channels;
    for (i, &w) in widths.iter().enumerate() {
        let b = i + 1;
        conv_bn(
            &mut out,
            seed,
            &format!("block{b}.conv"),
            &format!("block{b}.bn"),
            w,
            cin,
            3,
        )?;
        cin = w;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded() {
        let a = resnet9(1, &[4, 4, 4, 4, 4, 8, 8, 8], 3).unwrap();
        let b = resnet9(1, &[4, 4, 4, 4, 4, 8, 8, 8], 3).unwrap();
        let c = resnet9(1, &[4, 4, 4, 4, 4, 8, 8, 8], 4).unwrap();
        let v = |m: &BTreeMap<String, Tensor>| {
            m["block3.conv.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        assert!(check_widths(&[4, 4, 4, 5, 4, 8, 8, 8]).is_err());
    }
}
