//! The model being trained: the encoder's and the heads' parameters as candle `Var`s, the
//! BatchNorm running statistics as buffers, and the training forward pass of each framework.
//!
//! The [`Encoder`] is built once from the `Var`s' tensors: its ConvBn weights share storage
//! with the `Var`s, so `Var::set` updates the encoder in place and the gradients of the loss
//! reach the `Var`s. Its folded (eval) weights go stale during training; rebuild an encoder
//! from [`TrainModel::tensors`] to evaluate.

use crate::checkpoint::keys;
use crate::checkpoint::Checkpoint;
use crate::model::conv_bn::{BatchStats, Mode};
use crate::model::{Encoder, LoadOptions};
use crate::train::loss;
use crate::train::Framework;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};
use std::collections::BTreeMap;
use std::path::Path;

/// PyTorch's BatchNorm momentum for the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;
/// Projection head: hidden and output widths (SimCLR, SimSiam).
pub const PROJ_HIDDEN: usize = 512;
pub const PROJ_OUT: usize = 128;
/// SimSiam predictor's bottleneck.
pub const PRED_HIDDEN: usize = 64;

/// Buffers: BatchNorm running statistics and counters, not trained by gradient.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

/// Fresh heads of `framework` for features of width `d`.
pub fn init_heads(
    framework: Framework,
    d: usize,
    classes: usize,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    use crate::model::init::{batch_norm, linear};
    let mut m = BTreeMap::new();
    match framework {
        Framework::Simclr => {
            linear(&mut m, seed, "projector.0", d, PROJ_HIDDEN, true)?;
            batch_norm(&mut m, "projector.1", PROJ_HIDDEN)?;
            linear(&mut m, seed, "projector.3", PROJ_HIDDEN, PROJ_OUT, true)?;
        }
        Framework::Simsiam => {
            linear(&mut m, seed, "projector.0", d, PROJ_HIDDEN, true)?;
            batch_norm(&mut m, "projector.1", PROJ_HIDDEN)?;
            linear(&mut m, seed, "projector.3", PROJ_HIDDEN, PROJ_OUT, true)?;
            batch_norm(&mut m, "projector.4", PROJ_OUT)?;
            linear(&mut m, seed, "predictor.0", PROJ_OUT, PRED_HIDDEN, true)?;
            batch_norm(&mut m, "predictor.1", PRED_HIDDEN)?;
            linear(&mut m, seed, "predictor.3", PRED_HIDDEN, PROJ_OUT, true)?;
        }
        Framework::Supervised => {
            if classes == 0 {
                bail!("supervised training needs labelled data");
            }
            linear(&mut m, seed, "fc", d, classes, true)?;
        }
        // MAE's decoder depends on the patch grid: the ViT family's `vit_init` makes it.
        Framework::Mae => {}
    }
    Ok(m)
}

/// Tensors MAE keeps fixed (its sin-cos position embeddings).
fn fixed_in(framework: Framework, name: &str) -> bool {
    framework == Framework::Mae && (name == "pos_embed" || name == "decoder_pos_embed")
}

pub struct TrainModel {
    pub framework: Framework,
    pub vars: BTreeMap<String, Var>,
    pub buffers: BTreeMap<String, Tensor>,
    /// Parameters of frozen layers (see [`TrainModel::freeze_all_but`]): saved, never updated.
    pub frozen: BTreeMap<String, Tensor>,
    pub encoder: Encoder,
    /// MAE's decoder.
    pub decoder: Option<crate::train::mae::Decoder>,
    /// Load metadata the encoder needs (`memprune.heads`, `memprune.decoder_heads`).
    pub meta: BTreeMap<String, String>,
}

impl TrainModel {
    /// From named tensors (encoder + heads + running statistics); `optimizer.*` tensors are
    /// ignored. `meta`: the metadata the encoder is loaded with (a ViT's head counts).
    pub fn from_tensors(
        framework: Framework,
        tensors: &BTreeMap<String, Tensor>,
        path: &Path,
        meta: &BTreeMap<String, String>,
    ) -> Result<TrainModel> {
        let mut vars = BTreeMap::new();
        let mut buffers = BTreeMap::new();
        let mut frozen = BTreeMap::new();
        let mut ckpt_tensors = BTreeMap::new();
        for (k, t) in tensors {
            if k.starts_with("optimizer.") {
                continue;
            }
            let t = t.to_dtype(DType::F32)?.contiguous()?;
            if k.ends_with(".num_batches_tracked") {
                continue;
            }
            if is_buffer(k) {
                buffers.insert(k.clone(), t.clone());
                ckpt_tensors.insert(k.clone(), t);
            } else if fixed_in(framework, k) {
                frozen.insert(k.clone(), t.clone());
                ckpt_tensors.insert(k.clone(), t);
            } else {
                // A fresh copy: the Var owns its storage.
                let v = Var::from_tensor(&t.copy()?)?;
                ckpt_tensors.insert(k.clone(), v.as_tensor().clone());
                vars.insert(k.clone(), v);
            }
        }
        let ckpt = Checkpoint::from_tensors(path, ckpt_tensors, meta.clone());
        let encoder = Encoder::from_checkpoint(ckpt.clone(), &LoadOptions::default())
            .context("building the encoder to train")?;
        let decoder = if framework == Framework::Mae {
            let Some(tokens) = encoder.arch.patch_encoder() else {
                bail!(
                    "{}: --framework mae trains ViTs; this is {}",
                    path.display(),
                    encoder.describe()
                );
            };
            let heads = meta
                .get(keys::DECODER_HEADS)
                .and_then(|h| h.parse().ok())
                .context("no `memprune.decoder_heads` for MAE's decoder")?;
            Some(crate::train::mae::Decoder::load(
                &ckpt,
                tokens.width(),
                heads,
            )?)
        } else {
            None
        };
        let model = TrainModel {
            framework,
            vars,
            buffers,
            frozen,
            encoder,
            decoder,
            meta: meta.clone(),
        };
        let need: &[&str] = match framework {
            Framework::Simclr => &["projector.0.weight", "projector.3.weight"],
            Framework::Simsiam => &[
                "projector.0.weight",
                "projector.4.weight",
                "predictor.0.weight",
                "predictor.3.weight",
            ],
            Framework::Supervised => &["fc.weight", "fc.bias"],
            Framework::Mae => &["decoder_embed.weight", "decoder_pred.weight", "mask_token"],
        };
        for n in need {
            if !model.vars.contains_key(*n) {
                bail!(
                    "{}: no `{n}`: not a {} training checkpoint",
                    path.display(),
                    framework.name()
                );
            }
        }
        Ok(model)
    }

    fn var(&self, name: &str) -> Result<&Tensor> {
        self.vars
            .get(name)
            .map(|v| v.as_tensor())
            .with_context(|| format!("missing parameter `{name}`"))
    }

    fn linear(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let w = self.var(&format!("{prefix}.weight"))?;
        let y = x.matmul(&w.t()?)?;
        Ok(match self.vars.get(&format!("{prefix}.bias")) {
            Some(b) => y.broadcast_add(b.as_tensor())?,
            None => y,
        })
    }

    /// BatchNorm1d in training mode over the batch (biased variance for normalising,
    /// unbiased recorded for the running statistics).
    fn bn1d(&self, x: &Tensor, prefix: &str, stats: &mut Vec<BatchStats>) -> Result<Tensor> {
        let n = x.dim(0)? as f64;
        let mean = x.mean_keepdim(0)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(0)?;
        let y = c.broadcast_div(&(var.clone() + crate::model::conv_bn::BN_EPS)?.sqrt()?)?;
        let y = y
            .broadcast_mul(self.var(&format!("{prefix}.weight"))?)?
            .broadcast_add(self.var(&format!("{prefix}.bias"))?)?;
        let unbiased = (var.detach().flatten_all()? * (n / (n - 1.0).max(1.0)))?;
        stats.push(BatchStats {
            bn_name: prefix.to_string(),
            mean: mean.detach().flatten_all()?,
            var: unbiased,
        });
        Ok(y)
    }

    fn projector(&self, h: &Tensor, stats: &mut Vec<BatchStats>) -> Result<Tensor> {
        let z = self.linear(h, "projector.0")?;
        let z = self.bn1d(&z, "projector.1", stats)?.relu()?;
        let z = self.linear(&z, "projector.3")?;
        if self.framework == Framework::Simsiam {
            self.bn1d(&z, "projector.4", stats)
        } else {
            Ok(z)
        }
    }

    fn predictor(&self, z: &Tensor, stats: &mut Vec<BatchStats>) -> Result<Tensor> {
        let p = self.linear(z, "predictor.0")?;
        let p = self.bn1d(&p, "predictor.1", stats)?.relu()?;
        self.linear(&p, "predictor.3")
    }

    /// The training loss of one batch. SSL frameworks: `x` holds 2N views, the first N the
    /// views 0 of the N images and the last N their views 1 (BatchNorm sees all 2N together).
    /// Supervised: N views and their `labels`.
    pub fn loss(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        masks: Option<&crate::train::mae::Masks>,
        temperature: f64,
    ) -> Result<(Tensor, Vec<BatchStats>)> {
        if self.framework == Framework::Mae {
            let tokens = self
                .encoder
                .arch
                .patch_encoder()
                .context("MAE trains ViTs")?;
            let dec = self.decoder.as_ref().context("MAE needs its decoder")?;
            let masks = masks.context("MAE needs masks")?;
            return Ok((crate::train::mae::loss(tokens, dec, x, masks)?, Vec::new()));
        }
        let mut mode = Mode::Train(Vec::new());
        let h = self
            .encoder
            .forward_taps_mode(x, &mut mode)?
            .pop()
            .context("encoder has no pool tap")?;
        let Mode::Train(mut stats) = mode else {
            unreachable!()
        };
        let loss = match self.framework {
            Framework::Simclr => {
                let n = x.dim(0)? / 2;
                let z = self.projector(&h, &mut stats)?;
                loss::nt_xent(&z.narrow(0, 0, n)?, &z.narrow(0, n, n)?, temperature)?
            }
            Framework::Simsiam => {
                let n = x.dim(0)? / 2;
                let z = self.projector(&h, &mut stats)?;
                let p = self.predictor(&z, &mut stats)?;
                loss::simsiam(
                    &p.narrow(0, 0, n)?,
                    &p.narrow(0, n, n)?,
                    &z.narrow(0, 0, n)?,
                    &z.narrow(0, n, n)?,
                )?
            }
            Framework::Supervised => {
                let logits = self.linear(&h, "fc")?;
                loss::cross_entropy(&logits, labels.context("supervised training needs labels")?)?
            }
            Framework::Mae => unreachable!("handled above"),
        };
        Ok((loss, stats))
    }

    /// `running = (1 - momentum) running + momentum * batch` for every recorded BatchNorm.
    pub fn update_running_stats(&mut self, stats: &[BatchStats]) -> Result<()> {
        for s in stats {
            for (suffix, batch) in [("running_mean", &s.mean), ("running_var", &s.var)] {
                let key = format!("{}.{suffix}", s.bn_name);
                let old = self
                    .buffers
                    .get(&key)
                    .with_context(|| format!("missing buffer `{key}`"))?;
                let new = ((old * (1.0 - BN_MOMENTUM))? + (batch * BN_MOMENTUM)?)?;
                self.buffers.insert(key, new);
            }
        }
        Ok(())
    }

    /// Trains only `layers` (layer names as `memprune inspect` lists them; a ResNet block
    /// name covers its last conv and its downsample): every other conv + BatchNorm runs
    /// with its folded running statistics and its parameters leave the optimiser.
    pub fn freeze_all_but(&mut self, layers: &[String]) -> Result<()> {
        if self.encoder.conv_bns().is_empty() {
            return self.freeze_tensors_but(layers);
        }
        let groups = self.encoder.trainable_groups();
        let mut convs = std::collections::BTreeSet::new();
        for l in layers {
            match groups.iter().find(|(name, _)| name == l) {
                Some((_, c)) => convs.extend(c.iter().cloned()),
                None => bail!(
                    "no trainable layer `{l}` in this encoder (it has {})",
                    groups
                        .iter()
                        .map(|g| g.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        self.encoder.freeze_all_but(&convs);
        for c in self.encoder.conv_bns() {
            if !c.frozen {
                continue;
            }
            for k in [
                c.conv_name.clone(),
                format!("{}.weight", c.bn_name),
                format!("{}.bias", c.bn_name),
            ] {
                if let Some(v) = self.vars.remove(&k) {
                    self.frozen.insert(k, v.as_tensor().clone());
                }
            }
        }
        Ok(())
    }

    /// Families without BatchNorm (ViTs): the parameters of every trainable group but
    /// `layers` leave the optimiser; the forward pass is unchanged.
    fn freeze_tensors_but(&mut self, layers: &[String]) -> Result<()> {
        let groups = self.encoder.arch.trainable_groups();
        let mut keep = std::collections::BTreeSet::new();
        for l in layers {
            match groups.iter().find(|(name, _)| name == l) {
                Some((_, t)) => keep.extend(t.iter().cloned()),
                None => bail!(
                    "no trainable layer `{l}` in this encoder (it has {})",
                    groups
                        .iter()
                        .map(|g| g.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        for (_, tensors) in &groups {
            for k in tensors {
                if keep.contains(k) {
                    continue;
                }
                if let Some(v) = self.vars.remove(k) {
                    self.frozen.insert(k.clone(), v.as_tensor().detach());
                }
            }
        }
        // Rebuilt so that the frozen weights it reads are plain tensors: backward then
        // stops at the first trainable layer instead of computing unused gradients.
        let mut t: BTreeMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        for (k, f) in self.buffers.iter().chain(&self.frozen) {
            t.insert(k.clone(), f.clone());
        }
        let path = self.encoder.checkpoint.path.clone();
        self.encoder = Encoder::from_checkpoint(
            Checkpoint::from_tensors(&path, t, self.meta.clone()),
            &LoadOptions::default(),
        )?;
        Ok(())
    }

    /// Current values of every parameter and buffer (copies, safe to keep).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.vars {
            out.insert(k.clone(), v.as_tensor().copy()?);
        }
        for (k, t) in self.buffers.iter().chain(&self.frozen) {
            out.insert(k.clone(), t.clone());
        }
        Ok(out)
    }

    /// An inference encoder (BatchNorm folded with the current running statistics).
    pub fn eval_encoder(&self, path: &Path) -> Result<Encoder> {
        let ckpt = Checkpoint::from_tensors(path, self.tensors()?, self.meta.clone());
        Encoder::from_checkpoint(ckpt, &LoadOptions::default())
    }
}
