//! `taylor`, first-order Taylor importance (Molchanov et al., *Importance Estimation for
//! Neural Network Pruning*, CVPR 2019) on a label-free loss L: removing unit c sets its
//! parameters W_c to 0, which changes L by about the first-order term
//!
//!   I(c) = | sum_{s in W_c} w_s dL/dw_s |,
//!
//! summed over every parameter that produces the unit in its coupling group (conv filters,
//! conv bias, BatchNorm gamma and beta; a ViT's fc1 row and bias, a head's q/k/v rows and
//! biases). L is the self-supervised loss the checkpoint was trained with, through its own
//! heads (SimCLR's NT-Xent through its projector, SimSiam's through projector and predictor,
//! MAE's reconstruction through its decoder), in training mode (BatchNorm on batch
//! statistics) as in training; dL/dw is the gradient of the loss over all the policy's
//! points (each batch's mean loss weighted by its share of the points), one pair of views per
//! point (one view and one mask for MAE), drawn from the policy's seed. The batches are the
//! checkpoint's training batch (`memprune.batch`), else 256, whatever `metrics.batch` says:
//! NT-Xent's negatives depend on the batch.

use crate::checkpoint::Checkpoint;
use crate::data::augment::views_batch;
use crate::data::rng::hash_key;
use crate::data::{AugmentConfig, ImageSet, Normalization};
use crate::model::coupling::CouplingGroup;
use crate::model::Encoder;
use crate::plan::policy::TaylorLoss;
use crate::train::model::TrainModel;
use crate::train::Framework;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, BTreeSet};

/// The stream of the views a Taylor criterion reads ("TAYLORVW").
const TAYLOR_VIEW_TAG: u64 = 0x5441_594C_4F52_5657;
/// NT-Xent temperature when the checkpoint records none (SimCLR's CIFAR setting, as
/// `memprune train`'s default).
const DEFAULT_TEMPERATURE: f64 = 0.5;
/// Loss batch when the checkpoint records none.
const DEFAULT_BATCH: usize = 256;

/// The points and views the loss is measured on.
pub struct LossData<'a> {
    pub set: &'a ImageSet,
    pub points: &'a [usize],
    pub augment: &'a AugmentConfig,
    pub normalization: &'a Normalization,
    pub seed: u64,
}

fn framework(loss: TaylorLoss) -> Framework {
    match loss {
        TaylorLoss::Simclr => Framework::Simclr,
        TaylorLoss::Simsiam => Framework::Simsiam,
        TaylorLoss::Mae => Framework::Mae,
    }
}

/// The loss the checkpoint records it was trained with (`memprune.framework`), when it is
/// a label-free one.
pub fn recorded_loss(ckpt: &Checkpoint) -> Option<TaylorLoss> {
    match ckpt.metadata.get("memprune.framework")?.as_str() {
        "simclr" => Some(TaylorLoss::Simclr),
        "simsiam" => Some(TaylorLoss::Simsiam),
        "mae" => Some(TaylorLoss::Mae),
        _ => None,
    }
}

/// dL/dw of `loss` over `data` for the tensors `names` (canonical checkpoint names).
pub fn loss_gradients(
    enc: &Encoder,
    loss: TaylorLoss,
    data: &LossData,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, Tensor>> {
    let ckpt = &enc.checkpoint;
    let meta: BTreeMap<String, String> = ckpt
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() == "memprune.heads" || k.as_str() == "memprune.decoder_heads")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fw = framework(loss);
    let name = serde_json::to_value(loss)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let model = TrainModel::from_tensors(fw, &ckpt.tensors, &ckpt.path, &meta).map_err(|e| {
        anyhow!(
            "criterion taylor differentiates the {name} loss through the heads it was trained with, which this checkpoint lacks ({}); set `loss` to the one it was trained with",
            crate::report::error_line::error_line(&e)
        )
    })?;
    let temperature = ckpt
        .metadata
        .get("memprune.temperature")
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_TEMPERATURE);
    let batch = ckpt
        .metadata
        .get("memprune.batch")
        .and_then(|b| b.parse::<usize>().ok())
        .filter(|&b| b >= 2)
        .unwrap_or(DEFAULT_BATCH);
    if data.points.len() < 2 {
        bail!("criterion taylor needs at least 2 points (BatchNorm and the contrastive loss need pairs)");
    }
    let size = data.augment.output_size(data.set);
    let c = data.set.channels;
    let seed = hash_key(&[TAYLOR_VIEW_TAG, data.seed]);
    let total = data.points.len() as f64;
    let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
    // Batches of at least 2 points: a last batch of 1 joins the one before.
    let mut chunks: Vec<&[usize]> = data.points.chunks(batch).collect();
    if chunks.len() > 1 && chunks.last().is_some_and(|c| c.len() < 2) {
        let n = chunks.len();
        let start = (n - 2) * batch;
        chunks.truncate(n - 2);
        chunks.push(&data.points[start..]);
    }
    for chunk in chunks {
        let views = if fw == Framework::Mae { 1 } else { 2 };
        let items: Vec<(usize, u64)> = (0..views as u64)
            .flat_map(|v| chunk.iter().map(move |&p| (p, v)))
            .collect();
        let x = Tensor::from_vec(
            views_batch(data.augment, data.normalization, data.set, &items, seed),
            (items.len(), c, size, size),
            &Device::Cpu,
        )?;
        let masks = match &model.decoder {
            Some(_) => {
                let vit = model
                    .encoder
                    .arch
                    .as_any()
                    .downcast_ref::<crate::model::vit::Vit>()
                    .context("MAE trains ViTs")?;
                let g = (size / vit.patch()).pow(2);
                Some(crate::train::mae::masks(
                    crate::train::mae::mask_seed(data.seed),
                    0,
                    chunk,
                    g,
                )?)
            }
            None => None,
        };
        let (l, _) = model.loss(&x, None, masks.as_ref(), temperature)?;
        let l = (l * (chunk.len() as f64 / total))?;
        let grads = l.backward()?;
        for n in names {
            let Some(v) = model.vars.get(n) else { continue };
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let s = match sums.remove(n) {
                Some(s) => (s + g)?,
                None => g,
            };
            sums.insert(n.clone(), s);
        }
    }
    Ok(sums)
}

/// |sum over the unit's producing parameters of w dL/dw| per unit of `g`.
pub fn scores(
    g: &CouplingGroup,
    ckpt: &Checkpoint,
    grads: &BTreeMap<String, Tensor>,
) -> Result<Vec<f64>> {
    let mut s = vec![0f64; g.channels];
    let mut any = false;
    for p in &g.producers {
        let Some(dw) = grads.get(&p.tensor) else {
            continue;
        };
        any = true;
        let w = super::unit_rows(p, ckpt.get(&p.tensor)?, g.channels)?;
        let d = super::unit_rows(p, dw, g.channels)?;
        for (acc, (wr, dr)) in s.iter_mut().zip(w.iter().zip(&d)) {
            *acc += wr.iter().zip(dr).map(|(a, b)| a * b).sum::<f64>();
        }
    }
    if !any {
        bail!(
            "criterion taylor: the loss has no gradient for the parameters of `{}`",
            g.name
        );
    }
    Ok(s.into_iter().map(f64::abs).collect())
}

/// The producing tensors of `groups` (what [`loss_gradients`] must return).
pub fn producer_tensors<'a>(groups: impl Iterator<Item = &'a CouplingGroup>) -> BTreeSet<String> {
    groups
        .flat_map(|g| g.producers.iter().map(|p| p.tensor.clone()))
        .collect()
}
