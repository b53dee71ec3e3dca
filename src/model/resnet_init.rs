//! Fresh torchvision ResNets for `memprune train --arch resnet18|resnet34|resnet50`, in
//! torchvision's tensor names (what [`crate::model::resnet`] reads), initialised as
//! [`crate::model::init`] says.

use crate::model::fresh::{Fresh, FreshArch, FreshSpec};
use crate::model::init::conv_bn;
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// A fresh torchvision-layout ResNet (torchvision's names): `blocks[s]` blocks in stage s,
/// stage widths `widths` (x4 for Bottleneck), a downsample where the shape changes; the
/// CIFAR stem (3x3 stride 1, no max-pool) when `small_images`, else the ImageNet stem.
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

/// A torchvision ResNet to train from scratch: its name and blocks; `--widths` gives the 4
/// stage widths.
pub struct TorchvisionResNet {
    name: &'static str,
    about: &'static str,
    /// Blocks per stage.
    blocks: [usize; 4],
    /// Bottleneck blocks (expansion 4) rather than basic blocks.
    bottleneck: bool,
}

pub static RESNET18: TorchvisionResNet = TorchvisionResNet {
    name: "resnet18",
    about: "torchvision resnet18 (BasicBlock [2, 2, 2, 2]); --widths gives the 4 stage widths",
    blocks: [2, 2, 2, 2],
    bottleneck: false,
};

pub static RESNET34: TorchvisionResNet = TorchvisionResNet {
    name: "resnet34",
    about: "torchvision resnet34 (BasicBlock [3, 4, 6, 3])",
    blocks: [3, 4, 6, 3],
    bottleneck: false,
};

pub static RESNET50: TorchvisionResNet = TorchvisionResNet {
    name: "resnet50",
    about: "torchvision resnet50 (Bottleneck [3, 4, 6, 3], expansion 4)",
    blocks: [3, 4, 6, 3],
    bottleneck: true,
};

impl TorchvisionResNet {
    fn expansion(&self) -> usize {
        if self.bottleneck {
            4
        } else {
            1
        }
    }
}

impl FreshArch for TorchvisionResNet {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        self.about
    }

    fn default_widths(&self) -> Vec<usize> {
        vec![64, 128, 256, 512]
    }

    fn check_widths(&self, widths: &[usize]) -> Result<()> {
        if widths.len() != 4 || widths.contains(&0) {
            bail!(
                "{} needs 4 positive stage widths, got {widths:?}",
                self.name
            );
        }
        crate::model::init::check_conv_fits(widths, self.expansion())
    }

    fn init(&self, spec: &FreshSpec) -> Result<Fresh> {
        if spec.decoder {
            bail!("--framework mae trains ViTs (--arch vit)");
        }
        self.check_widths(spec.widths)?;
        Ok(Fresh {
            tensors: resnet(
                spec.in_channels,
                &self.blocks,
                self.bottleneck,
                spec.widths,
                spec.small_images,
                spec.seed,
            )?,
            metadata: BTreeMap::new(),
            widths: spec.widths.to_vec(),
            feature_dim: self.expansion() * spec.widths.last().copied().unwrap_or(0),
        })
    }
}
