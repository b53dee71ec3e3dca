//! MAE (He et al. 2022): mask 75 % of the patches, encode the visible ones, let a light
//! decoder predict the pixels of the masked ones.
//!
//! loss = mean over masked patches of mean_pixels (pred - norm(target))², where norm(target)
//! is each patch's pixels standardised by their own mean and unbiased variance (+1e-6), the
//! reference's `norm_pix_loss`. The mask of (point, epoch) is a seeded shuffle of the
//! patches, independent of the batch it falls in.

use crate::checkpoint::Checkpoint;
use crate::data::rng::{hash_key, Rng};
use crate::model::patch_encoder::PatchEncoder;
use crate::model::vit::{load_block, load_linear, load_norm, Block, Linear, Norm};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};

const MASK_TAG: u64 = 0x4D41_455F_4D41_534B; // "MAE_MASK"

/// The masking ratio of the MAE paper.
pub const MASK_RATIO: f64 = 0.75;

/// The masks of one batch.
pub struct Masks {
    /// (N, K) u32: the visible patches, in shuffled order.
    pub keep: Tensor,
    /// (N, G) u32: where each patch sits in the shuffled order (MAE's `ids_restore`).
    pub restore: Tensor,
    /// (N, G) f32: 1 for masked patches.
    pub masked: Tensor,
}

impl Masks {
    /// The masks on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Masks> {
        Ok(Masks {
            keep: self.keep.to_device(device)?,
            restore: self.restore.to_device(device)?,
            masked: self.masked.to_device(device)?,
        })
    }
}

/// Patches kept of `g`: MAE's `int(g * (1 - ratio))`, at least one.
pub fn kept(g: usize) -> usize {
    ((g as f64 * (1.0 - MASK_RATIO)) as usize).max(1)
}

/// Masks for `points` in epoch `epoch` over a grid of `g` patches.
pub fn masks(seed: u64, epoch: usize, points: &[usize], g: usize) -> Result<Masks> {
    let k = kept(g);
    let n = points.len();
    let (mut keep, mut restore, mut masked) = (
        Vec::with_capacity(n * k),
        vec![0u32; n * g],
        vec![1f32; n * g],
    );
    for (i, &p) in points.iter().enumerate() {
        let mut rng = Rng::from_key(&[MASK_TAG, seed, epoch as u64, p as u64]);
        let mut order: Vec<u32> = (0..g as u32).collect();
        for j in (1..g).rev() {
            let r = rng.below(j as u64 + 1) as usize;
            order.swap(j, r);
        }
        for (pos, &patch) in order.iter().enumerate() {
            restore[i * g + patch as usize] = pos as u32;
            if pos < k {
                masked[i * g + patch as usize] = 0.0;
            }
        }
        keep.extend_from_slice(&order[..k]);
    }
    let dev = Device::Cpu;
    Ok(Masks {
        keep: Tensor::from_vec(keep, (n, k), &dev)?,
        restore: Tensor::from_vec(restore, (n, g), &dev)?,
        masked: Tensor::from_vec(masked, (n, g), &dev)?,
    })
}

/// The seed of the masks of a run (a stream apart from its views and init).
pub fn mask_seed(seed: u64) -> u64 {
    hash_key(&[MASK_TAG, seed])
}

/// (N, C, H, W) -> (N, G, C*p*p) in the patch order of the ViT's patch embedding.
pub fn patchify(x: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (gh, gw) = (h / p, w / p);
    x.narrow(2, 0, gh * p)?
        .narrow(3, 0, gw * p)?
        .reshape((n, c, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((n, gh * gw, c * p * p))
}

/// MAE's decoder, sharing storage with the trained `Var`s like the encoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Linear,
    mask_token: Tensor,
    /// (1 + G, Dd)
    pos: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    pred: Linear,
}

impl Decoder {
    pub fn load(ckpt: &Checkpoint, encoder_width: usize, heads: usize) -> Result<Decoder> {
        let mut used = Vec::new();
        let embed = load_linear(ckpt, "decoder_embed", encoder_width, &mut used)?;
        let dd = embed.weight.dim(0)?;
        let mask_token = ckpt
            .get_shaped("mask_token", &[1, 1, dd])?
            .reshape((1, dd))?;
        let pos = ckpt.get("decoder_pos_embed")?;
        if pos.rank() != 3 || pos.dim(2)? != dd {
            bail!(
                "{}: `decoder_pos_embed` has shape {:?}, expected (1, 1 + patches, {dd})",
                ckpt.path.display(),
                pos.dims()
            );
        }
        let pos = pos.squeeze(0)?;
        let depth = (0..)
            .take_while(|i| ckpt.contains(&format!("decoder_blocks.{i}.attn.qkv.weight")))
            .count();
        let blocks = (0..depth)
            .map(|i| load_block(ckpt, &format!("decoder_blocks.{i}"), dd, heads, &mut used))
            .collect::<Result<Vec<_>>>()?;
        let norm = load_norm(ckpt, "decoder_norm", dd, &mut used, true)?.expect("required");
        let pred = load_linear(ckpt, "decoder_pred", dd, &mut used)?;
        Ok(Decoder {
            embed,
            mask_token,
            pos,
            blocks,
            norm,
            pred,
        })
    }

    /// The encoder's tokens (N, P + K, D) of the visible patches -> predicted pixels of
    /// every patch (N, G, C*p*p). `prefix`: the encoder's prefix tokens (the class token).
    pub fn forward(
        &self,
        latent: &Tensor,
        prefix: usize,
        masks: &Masks,
    ) -> candle_core::Result<Tensor> {
        let x = self.embed.forward(latent)?;
        let (n, t, dd) = x.dims3()?;
        let k = t - prefix;
        let g = masks.restore.dim(1)?;
        // Shuffled order: the K visible tokens, then G - K mask tokens; restore unshuffles.
        let visible = x.narrow(1, prefix, k)?;
        let fill = self
            .mask_token
            .unsqueeze(0)?
            .broadcast_as((n, g - k, dd))?
            .contiguous()?;
        let shuffled = Tensor::cat(&[&visible, &fill], 1)?.reshape((n * g, dd))?;
        let offsets = Tensor::arange(0u32, n as u32, masks.restore.device())?
            .affine(g as f64, 0.0)?
            .unsqueeze(1)?;
        let rows = masks.restore.broadcast_add(&offsets)?.flatten_all()?;
        let patches = shuffled.index_select(&rows, 0)?.reshape((n, g, dd))?;
        let mut y = Tensor::cat(&[&x.narrow(1, 0, prefix)?, &patches], 1)?;
        let pos_rows = self.pos.dim(0)?;
        if pos_rows != prefix + g {
            candle_core::bail!(
                "`decoder_pos_embed` has {pos_rows} positions, the encoder gives {} tokens",
                prefix + g
            );
        }
        y = y.broadcast_add(&self.pos.unsqueeze(0)?)?;
        for b in &self.blocks {
            y = b.forward(&y, true)?[3].clone();
        }
        let y = self.norm.forward(&y, true)?;
        self.pred.forward(&y.narrow(1, prefix, g)?)
    }
}

/// The MAE loss of a batch `x` (N, C, H, W), normalised images.
pub fn loss(
    enc: &dyn PatchEncoder,
    dec: &Decoder,
    x: &Tensor,
    masks: &Masks,
) -> candle_core::Result<Tensor> {
    let latent = enc.encode_visible(x, &masks.keep)?;
    let pred = dec.forward(&latent, enc.prefix_tokens(), masks)?;
    let target = patchify(x, enc.patch())?;
    let d = target.dim(D::Minus1)?;
    let mean = target.mean_keepdim(D::Minus1)?;
    let c = target.broadcast_sub(&mean)?;
    let var = (c.sqr()?.sum_keepdim(D::Minus1)? / (d.max(2) - 1) as f64)?;
    let target = c.broadcast_div(&(var + 1e-6)?.sqrt()?)?;
    let per_patch = (pred - target)?.sqr()?.mean(D::Minus1)?;
    let m = masks.masked.to_dtype(DType::F32)?;
    (per_patch * &m)?.sum_all()? / m.sum_all()?.to_scalar::<f32>()? as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_a_quarter_and_restore_inverts_the_shuffle() {
        let m = masks(7, 3, &[5, 9], 49).unwrap();
        assert_eq!(m.keep.dims(), &[2, 12]);
        let keep: Vec<Vec<u32>> = m.keep.to_vec2().unwrap();
        let restore: Vec<Vec<u32>> = m.restore.to_vec2().unwrap();
        let masked: Vec<Vec<f32>> = m.masked.to_vec2().unwrap();
        for i in 0..2 {
            for (pos, &p) in keep[i].iter().enumerate() {
                assert_eq!(restore[i][p as usize], pos as u32);
                assert_eq!(masked[i][p as usize], 0.0);
            }
            assert_eq!(masked[i].iter().filter(|&&v| v == 1.0).count(), 37);
        }
        assert_ne!(keep[0], keep[1]);
        // A point's mask does not depend on its batch.
        let alone = masks(7, 3, &[9], 49).unwrap();
        assert_eq!(alone.keep.to_vec2::<u32>().unwrap()[0], keep[1]);
    }
}
