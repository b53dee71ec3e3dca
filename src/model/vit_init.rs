//! A fresh ViT in timm's tensor layout, and for MAE its light decoder in the MAE
//! reference's names (`decoder_embed`, `mask_token`, `decoder_pos_embed`,
//! `decoder_blocks.N.*`, `decoder_norm`, `decoder_pred`), initialised as MAE does: Xavier
//! uniform linear and patch-embedding weights, zero biases, LayerNorm 1/0, class and mask
//! tokens N(0, 0.02²), and fixed 2-D sin-cos position embeddings (the class token's row 0).
//! Every tensor draws from its own stream keyed by (seed, name).
//!
//! [`VIT`] is the ViT family's fresh architecture for `memprune train --arch vit`.

use crate::checkpoint::keys;
use crate::model::family::Net;
use crate::model::fresh::{Fresh, FreshArch, FreshSpec};
use crate::model::init_draws::{normals, rng_for};
use crate::model::patch_encoder::PatchEncoder;
use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sizes of a ViT to train (and of MAE's decoder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitShape {
    pub depth: usize,
    pub width: usize,
    pub heads: usize,
    /// MLP hidden width.
    pub mlp: usize,
    pub patch: usize,
    pub decoder_depth: usize,
    pub decoder_width: usize,
    pub decoder_heads: usize,
}

impl Default for VitShape {
    /// The embedded ViT: 28x28 Fashion-MNIST in 4x4 patches (a 7x7 grid), 6 blocks of
    /// width 128 with 4 heads and MLP ratio 4 (about 1.2 M parameters, the size of the
    /// embedded ResNet9); MAE's decoder 2 blocks of width 64.
    fn default() -> Self {
        VitShape {
            depth: 6,
            width: 128,
            heads: 4,
            mlp: 512,
            patch: 4,
            decoder_depth: 2,
            decoder_width: 64,
            decoder_heads: 4,
        }
    }
}

impl VitShape {
    /// The checks that need no image: positive sizes that divide, and parameters (with
    /// their gradients and optimizer state) that fit in memory, before anything is sized by
    /// them (`--depth 1000000000` is one line, not an abort).
    pub fn check_sizes(&self) -> Result<()> {
        for (what, v) in [
            ("--depth", self.depth),
            ("--width", self.width),
            ("--heads", self.heads),
            ("--mlp", self.mlp),
            ("--patch", self.patch),
            ("--decoder-depth", self.decoder_depth),
            ("--decoder-width", self.decoder_width),
            ("--decoder-heads", self.decoder_heads),
        ] {
            if v == 0 {
                bail!("{what} must be > 0");
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            bail!(
                "--heads {} does not divide --width {}",
                self.heads,
                self.width
            );
        }
        if !self.decoder_width.is_multiple_of(self.decoder_heads) {
            bail!(
                "--decoder-heads {} does not divide --decoder-width {}",
                self.decoder_heads,
                self.decoder_width
            );
        }
        let params = self
            .width
            .checked_mul(self.width)
            .and_then(|ww| ww.checked_mul(12))
            .and_then(|a| {
                let b = self.width.checked_mul(self.mlp)?.checked_mul(2)?;
                a.checked_add(b)?.checked_mul(self.depth)
            })
            .unwrap_or(usize::MAX);
        crate::data::limits::check_alloc(
            &format!(
                "a ViT of {} blocks of width {} and MLP {} (--depth, --width, --mlp), its weights, gradients and optimizer state,",
                self.depth, self.width, self.mlp
            ),
            &[params, 4],
            4,
        )
    }

    pub fn check(&self, image: usize) -> Result<()> {
        self.check_sizes()?;
        if self.patch > image {
            bail!(
                "--patch {} is larger than the {image}-pixel images",
                self.patch
            );
        }
        // One patch leaves MAE nothing to mask (its loss is 0/0) and attention one token.
        let grid = image / self.patch;
        if grid * grid < 2 {
            bail!(
                "--patch {} on {image}-pixel images gives {} patch: a ViT needs at least 2 (a smaller --patch)",
                self.patch,
                grid * grid
            );
        }
        Ok(())
    }

    /// What the loaded encoder reports as its widths: the model width, then each block's
    /// MLP width.
    pub fn widths(&self) -> Vec<usize> {
        let mut v = vec![self.width];
        v.extend(std::iter::repeat_n(self.mlp, self.depth));
        v
    }
}

fn cpu() -> Device {
    Device::Cpu
}

fn xavier(
    m: &mut BTreeMap<String, Tensor>,
    seed: u64,
    prefix: &str,
    fan_in: usize,
    fan_out: usize,
) -> Result<()> {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let mut rng = rng_for(seed, prefix);
    let w: Vec<f32> = (0..fan_in * fan_out)
        .map(|_| rng.uniform(-bound, bound) as f32)
        .collect();
    m.insert(
        format!("{prefix}.weight"),
        Tensor::from_vec(w, (fan_out, fan_in), &cpu())?,
    );
    m.insert(
        format!("{prefix}.bias"),
        Tensor::zeros(fan_out, candle_core::DType::F32, &cpu())?,
    );
    Ok(())
}

fn layer_norm(m: &mut BTreeMap<String, Tensor>, prefix: &str, d: usize) -> Result<()> {
    m.insert(
        format!("{prefix}.weight"),
        Tensor::ones(d, candle_core::DType::F32, &cpu())?,
    );
    m.insert(
        format!("{prefix}.bias"),
        Tensor::zeros(d, candle_core::DType::F32, &cpu())?,
    );
    Ok(())
}

fn token(seed: u64, name: &str, d: usize) -> Result<Tensor> {
    let v: Vec<f32> = normals(&mut rng_for(seed, name), d)
        .into_iter()
        .map(|x| x * 0.02)
        .collect();
    Ok(Tensor::from_vec(v, (1, 1, d), &cpu())?)
}

/// MAE's `get_2d_sincos_pos_embed(d, grid, cls_token=True)`: (1, 1 + grid², d); half the
/// dimensions encode the row, half the column, each as sin and cos of 1/10000^(2i/(d/2)).
pub fn sincos_pos_embed(d: usize, grid: usize) -> Result<Tensor> {
    if !d.is_multiple_of(4) {
        bail!("a 2-D sin-cos position embedding needs a width divisible by 4, got {d}");
    }
    let quarter = d / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut v = vec![0f32; d];
    for h in 0..grid {
        for w in 0..grid {
            // MAE's meshgrid puts w first: emb_h uses grid[0] (= the column index).
            let mut row = Vec::with_capacity(d);
            for pos in [w as f64, h as f64] {
                row.extend(omega.iter().map(|o| (pos * o).sin() as f32));
                row.extend(omega.iter().map(|o| (pos * o).cos() as f32));
            }
            v.extend(row);
        }
    }
    Ok(Tensor::from_vec(v, (1, 1 + grid * grid, d), &cpu())?)
}

fn blocks(
    m: &mut BTreeMap<String, Tensor>,
    seed: u64,
    prefix: &str,
    depth: usize,
    d: usize,
    mlp: usize,
) -> Result<()> {
    for i in 0..depth {
        let b = format!("{prefix}.{i}");
        layer_norm(m, &format!("{b}.norm1"), d)?;
        xavier(m, seed, &format!("{b}.attn.qkv"), d, 3 * d)?;
        xavier(m, seed, &format!("{b}.attn.proj"), d, d)?;
        layer_norm(m, &format!("{b}.norm2"), d)?;
        xavier(m, seed, &format!("{b}.mlp.fc1"), d, mlp)?;
        xavier(m, seed, &format!("{b}.mlp.fc2"), mlp, d)?;
    }
    Ok(())
}

/// A fresh ViT encoder for `channels` x `image` x `image` inputs (the grid is
/// image / patch, the remainder cropped as the loader does).
pub fn encoder(
    shape: &VitShape,
    channels: usize,
    image: usize,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    shape.check(image)?;
    let (d, p) = (shape.width, shape.patch);
    let grid = image / p;
    let mut m = BTreeMap::new();
    xavier(&mut m, seed, "patch_embed.proj", channels * p * p, d)?;
    let w = m.remove("patch_embed.proj.weight").expect("just inserted");
    m.insert(
        "patch_embed.proj.weight".into(),
        w.reshape((d, channels, p, p))?,
    );
    m.insert("cls_token".into(), token(seed, "cls_token", d)?);
    m.insert("pos_embed".into(), sincos_pos_embed(d, grid)?);
    blocks(&mut m, seed, "blocks", shape.depth, d, shape.mlp)?;
    layer_norm(&mut m, "norm", d)?;
    Ok(m)
}

/// MAE's decoder for `encoder`'s grid: embeds the encoder's tokens to the decoder width,
/// fills the masked positions with `mask_token`, and predicts each patch's pixels.
pub fn mae_decoder(
    shape: &VitShape,
    channels: usize,
    image: usize,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    let (d, dd, p) = (shape.width, shape.decoder_width, shape.patch);
    let grid = image / p;
    let mut m = BTreeMap::new();
    xavier(&mut m, seed, "decoder_embed", d, dd)?;
    m.insert("mask_token".into(), token(seed, "mask_token", dd)?);
    m.insert("decoder_pos_embed".into(), sincos_pos_embed(dd, grid)?);
    blocks(
        &mut m,
        seed,
        "decoder_blocks",
        shape.decoder_depth,
        dd,
        4 * dd,
    )?;
    layer_norm(&mut m, "decoder_norm", dd)?;
    xavier(&mut m, seed, "decoder_pred", dd, channels * p * p)?;
    Ok(m)
}

/// MAE's decoder for a loaded encoder `enc` (its width, patch and grid; the decoder's
/// sizes from `shape`), with the load metadata it needs (its heads).
pub fn mae_decoder_for(
    enc: &dyn PatchEncoder,
    shape: &VitShape,
    channels: usize,
    seed: u64,
) -> Result<(BTreeMap<String, Tensor>, (&'static str, String))> {
    let shape = VitShape {
        width: enc.width(),
        patch: enc.patch(),
        ..shape.clone()
    };
    let image = enc.grid() * enc.patch();
    Ok((
        mae_decoder(&shape, channels, image, seed)?,
        (keys::DECODER_HEADS, shape.decoder_heads.to_string()),
    ))
}

/// `memprune train --arch vit`: a ViT in timm's layout, sized by its [`VitShape`].
pub struct VitArch;

/// The ViT family's fresh architecture.
pub static VIT: VitArch = VitArch;

impl FreshArch for VitArch {
    fn name(&self) -> &'static str {
        "vit"
    }

    fn about(&self) -> &'static str {
        "A ViT in timm's layout; sizes by --depth, --width, --heads, --mlp, --patch"
    }

    fn tokens(&self) -> bool {
        true
    }

    fn default_widths(&self) -> Vec<usize> {
        VitShape::default().widths()
    }

    /// A ViT's sizes come from its own flags ([`VitShape::check`]).
    fn check_widths(&self, _widths: &[usize]) -> Result<()> {
        Ok(())
    }

    fn init(&self, spec: &FreshSpec) -> Result<Fresh> {
        let shape = spec.vit;
        let mut tensors = encoder(shape, spec.in_channels, spec.image, spec.seed)?;
        let mut metadata = BTreeMap::new();
        metadata.insert(keys::HEADS.to_string(), shape.heads.to_string());
        if spec.decoder {
            tensors.extend(mae_decoder(shape, spec.in_channels, spec.image, spec.seed)?);
            metadata.insert(
                keys::DECODER_HEADS.to_string(),
                shape.decoder_heads.to_string(),
            );
        }
        Ok(Fresh {
            tensors,
            metadata,
            widths: shape.widths(),
            feature_dim: shape.width,
        })
    }

    fn shape_record(&self, vit: &VitShape) -> Option<(&'static str, String)> {
        Some((keys::VIT, serde_json::to_string(vit).unwrap_or_default()))
    }

    fn like(
        &self,
        net: &dyn Net,
        seed: u64,
    ) -> Option<Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)>> {
        let vit = net.as_any().downcast_ref::<crate::model::vit::Vit>()?;
        Some((|| {
            let heads = vit.heads_per_block();
            let widths = net.widths();
            if heads.iter().any(|&h| h != heads[0]) || widths[1..].iter().any(|&w| w != widths[1]) {
                return Err(anyhow!(
                    "--random-like needs a ViT with equal blocks (this one is pruned)"
                ));
            }
            let shape = VitShape {
                depth: heads.len(),
                width: vit.width(),
                heads: heads[0],
                mlp: widths[1],
                patch: vit.patch(),
                ..Default::default()
            };
            let t = encoder(&shape, net.in_channels(), vit.grid() * vit.patch(), seed)?;
            let m = [(keys::HEADS.to_string(), heads[0].to_string())].into();
            Ok((t, m))
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row 0 (the class token) is zero; row 1 + h*g + w starts with sin(w * 1) = sin(w)
    /// and its cos half with cos(w); the second half encodes h.
    #[test]
    fn sincos_matches_mae_layout() {
        let t = sincos_pos_embed(8, 3).unwrap();
        let v: Vec<Vec<f32>> = t.squeeze(0).unwrap().to_vec2().unwrap();
        assert!(v[0].iter().all(|&x| x == 0.0));
        let (h, w) = (2usize, 1usize);
        let r = &v[1 + h * 3 + w];
        assert!((r[0] - (w as f32).sin()).abs() < 1e-6);
        assert!((r[2] - (w as f32).cos()).abs() < 1e-6);
        assert!((r[4] - (h as f32).sin()).abs() < 1e-6);
        assert!((r[6] - (h as f32).cos()).abs() < 1e-6);
        assert!((r[1] - (w as f32 * 0.01).sin()).abs() < 1e-6);
    }

    #[test]
    fn shapes_are_checked() {
        let mut s = VitShape::default();
        assert!(s.check(28).is_ok());
        s.heads = 3;
        assert!(s.check(28).unwrap_err().to_string().contains("--heads 3"));
        let s = VitShape {
            patch: 40,
            ..VitShape::default()
        };
        assert!(s.check(28).is_err());
    }
}
