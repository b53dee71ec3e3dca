//! A fresh ResNet9 for `memprune train --arch resnet9` ([`RESNET9`]), in the tensor names
//! [`crate::model::resnet9`] reads (its [`MEMPRUNE`] layout): `block{i}.conv.weight` and
//! `block{i}.bn.*`, initialised as [`crate::model::init`] says.

use crate::model::family::Net;
use crate::model::fresh::{Fresh, FreshArch, FreshSpec};
use crate::model::resnet9::{ResNet9, MEMPRUNE};
use anyhow::{bail, Result};
use candle_core::Tensor;
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

/// A fresh ResNet9 for `in_channels` inputs.
pub fn resnet9(
    in_channels: usize,
    widths: &[usize],
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    check_widths(widths)?;
    let mut out = BTreeMap::new();
    let mut cin = in_channels;
    for (block, &w) in MEMPRUNE.blocks.iter().zip(widths) {
        crate::model::init::conv_bn(
            &mut out,
            seed,
            &format!("{block}.conv"),
            &format!("{block}.{}", MEMPRUNE.bn),
            w,
            cin,
            3,
        )?;
        cin = w;
    }
    Ok(out)
}

/// `memprune train --arch resnet9`: the paper's ResNet9; `--widths` gives its 8 block widths.
pub struct ResNet9Arch;

/// memprune's ResNet9 as a fresh architecture.
pub static RESNET9: ResNet9Arch = ResNet9Arch;

impl FreshArch for ResNet9Arch {
    fn name(&self) -> &'static str {
        MEMPRUNE.id
    }

    fn about(&self) -> &'static str {
        "The paper's ResNet9; --widths gives its 8 block widths"
    }

    fn default_widths(&self) -> Vec<usize> {
        PAPER_WIDTHS.to_vec()
    }

    fn check_widths(&self, widths: &[usize]) -> Result<()> {
        check_widths(widths)?;
        crate::model::init::check_conv_fits(widths, 1)
    }

    fn init(&self, spec: &FreshSpec) -> Result<Fresh> {
        if spec.decoder {
            bail!("--framework mae trains ViTs (--arch vit)");
        }
        self.check_widths(spec.widths)?;
        Ok(Fresh {
            tensors: resnet9(spec.in_channels, spec.widths, spec.seed)?,
            metadata: BTreeMap::new(),
            widths: spec.widths.to_vec(),
            feature_dim: spec.widths.last().copied().unwrap_or(0),
        })
    }

    fn like(
        &self,
        net: &dyn Net,
        seed: u64,
    ) -> Option<Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)>> {
        let r = net.as_any().downcast_ref::<ResNet9>()?;
        if !std::ptr::eq(r.layout, &MEMPRUNE) {
            return None;
        }
        Some(resnet9(net.in_channels(), &net.widths(), seed).map(|t| (t, BTreeMap::new())))
    }
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

    /// The names written are the ones the family reads: a fresh ResNet9 loads as one.
    #[test]
    fn fresh_loads_as_a_resnet9() {
        let t = resnet9(3, &PAPER_WIDTHS, 0).unwrap();
        let n = t.len();
        let ckpt = crate::checkpoint::Checkpoint::from_tensors(
            std::path::Path::new("<fresh>"),
            t,
            BTreeMap::new(),
        );
        let enc =
            crate::model::Encoder::from_checkpoint(ckpt, &crate::model::LoadOptions::default())
                .unwrap();
        assert_eq!(enc.arch.arch_id(), MEMPRUNE.id);
        assert_eq!(enc.widths(), PAPER_WIDTHS.to_vec());
        assert!(
            enc.unused.is_empty(),
            "{} tensors, unused {:?}",
            n,
            enc.unused
        );
    }
}
