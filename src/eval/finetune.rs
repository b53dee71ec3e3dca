//! Fine-tuning on a downstream task: the chosen layers of an encoder and a fresh linear head
//! train on the downstream training split, everything else frozen; the score is the
//! fine-tuned network's top-1 accuracy on the downstream test split.
//!
//! The head starts at the linear probe's solution on the frozen encoder (LP-FT, Kumar et
//! al. 2022), so "head only" is the linear probe trained further on augmented images.
//! Frozen layers keep no gradients, and frozen BatchNorm runs in eval mode with its running
//! statistics (see [`crate::train::model::TrainModel::freeze_all_but`]). The head is the
//! supervised framework's `fc` on the pooled features; the loss is cross-entropy; AdamW
//! with a linear warm-up and cosine decay. Test images are clean (no augmentation) and
//! the network is evaluated in eval mode. Each seed draws its own head, batch order and
//! augmentations; the same seed gives the same accuracy whatever the thread count.

use crate::data::augment::AugmentConfig;
use crate::data::{ImageSet, Normalization};
use crate::eval::probe::{self, LinearHead, ProbeSettings};
use crate::model::Encoder;
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::split::SplitKind;
use crate::train::{Framework, TrainConfig, Trainer};
use anyhow::{bail, Context, Result};
use candle_core::D;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How to fine-tune (a policy's `evaluation.finetune`, less its data).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneSettings {
    pub epochs: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    pub weight_decay: f64,
    pub batch: usize,
    pub warmup_epochs: f64,
    /// One fine-tuning per seed; results are reported as mean and standard deviation.
    pub seeds: Vec<u64>,
    /// Training augmentation. Default: a mild random resized crop (scale 0.8..1), no flips
    /// and no colour changes: right for any kind of image (flips are wrong for digits and
    /// text).
    pub augment: AugmentConfig,
}

impl Default for FinetuneSettings {
    fn default() -> Self {
        FinetuneSettings {
            epochs: 10,
            lr: 1e-3,
            weight_decay: 1e-4,
            batch: 64,
            warmup_epochs: 1.0,
            seeds: vec![0, 1, 2],
            augment: AugmentConfig {
                crop_scale: (0.8, 1.0),
                flip_p: 0.0,
                jitter_p: 0.0,
                grayscale_p: 0.0,
                ..AugmentConfig::default()
            },
        }
    }
}

impl FinetuneSettings {
    /// Refuses settings that would train nothing or give NaN weights.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("finetune: epochs must be at least 1, got 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("finetune: lr must be a finite number > 0, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "finetune: weight_decay must be a finite number >= 0, got {}",
                self.weight_decay
            );
        }
        if self.batch < 2 {
            bail!("finetune: batch must be at least 2, got {}", self.batch);
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            bail!(
                "finetune: warmup_epochs must be a finite number >= 0, got {}",
                self.warmup_epochs
            );
        }
        if self.seeds.is_empty() {
            bail!("finetune: seeds is empty");
        }
        let mut s = self.seeds.clone();
        s.sort_unstable();
        if s.windows(2).any(|w| w[0] == w[1]) {
            bail!("finetune: seeds {:?} repeat a seed", self.seeds);
        }
        self.augment.validate()
    }
}

/// The settings of a policy's `evaluation.finetune` (its defaults filled in).
pub fn settings_from(ft: &crate::plan::policy::FinetuneEval) -> FinetuneSettings {
    let d = FinetuneSettings::default();
    FinetuneSettings {
        epochs: ft.epochs.unwrap_or(d.epochs),
        lr: ft.lr.unwrap_or(d.lr),
        weight_decay: ft.weight_decay.unwrap_or(d.weight_decay),
        batch: ft.batch.unwrap_or(d.batch),
        warmup_epochs: ft.warmup_epochs.unwrap_or(d.warmup_epochs),
        seeds: ft.seeds.clone().unwrap_or(d.seeds),
        augment: ft.augment.clone().unwrap_or(d.augment),
    }
}

/// One fine-tuning run.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneRun {
    pub seed: u64,
    /// Downstream test top-1, in [0, 1].
    pub accuracy: f64,
    pub final_loss: f64,
    pub seconds: f64,
}

/// The runs of one choice of layers, one per seed.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneResult {
    /// The encoder layers that trained (empty: the head only).
    pub layers: Vec<String>,
    pub runs: Vec<FinetuneRun>,
}

impl FinetuneResult {
    pub fn accuracies(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.accuracy).collect()
    }

    pub fn mean(&self) -> f64 {
        mean(&self.accuracies())
    }

    /// Sample standard deviation (n - 1); 0 for one run.
    pub fn std(&self) -> f64 {
        std(&self.accuracies())
    }
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn train_config(s: &FinetuneSettings, layers: &[String], seed: u64, set: &ImageSet) -> TrainConfig {
    TrainConfig {
        framework: Framework::Supervised,
        arch: crate::train::init::TrainArch::default(),
        widths: Vec::new(),
        epochs: s.epochs,
        batch: s.batch,
        lr: s.lr,
        optimizer: OptimizerConfig::new(OptimizerKind::Adamw, s.weight_decay),
        warmup_epochs: s.warmup_epochs,
        seed,
        split: SplitKind::All,
        split_seed: 0,
        temperature: 0.5,
        augment: s.augment.clone(),
        normalization: Normalization::default_for(set.kind, set.channels),
        save_dtype: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        init_from: None,
        trainable: Some(layers.to_vec()),
        planted: None,
        vit: Default::default(),
    }
}

/// Fine-tunes `layers` of `encoder` (plus a fresh head) on `train` once with `seed`, and
/// scores the result on `test`.
pub fn finetune_once(
    encoder: &Encoder,
    layers: &[String],
    train: &ImageSet,
    test: &ImageSet,
    settings: &FinetuneSettings,
    seed: u64,
) -> Result<FinetuneRun> {
    let t0 = Instant::now();
    let Some(test_labels) = &test.labels else {
        bail!(
            "{}: fine-tuning is scored on labels; this set has none",
            test.source
        );
    };
    if test.channels != train.channels || test.height != train.height || test.width != train.width {
        bail!(
            "{}: images of {}x{}x{}, but the fine-tuning data {} has {}x{}x{}",
            test.source,
            test.channels,
            test.height,
            test.width,
            train.source,
            train.channels,
            train.height,
            train.width
        );
    }
    let cfg = train_config(settings, layers, seed, train);
    let mut trainer = Trainer::finetune(cfg, train, &train.source, encoder)?;
    // LP-FT (Kumar et al., 2022): the head starts at the linear probe's solution, so that
    // the first steps do not push a random head's gradients into the pretrained layers.
    let head = probe_head(encoder, train)?;
    for (name, value) in [("fc.weight", &head.weight), ("fc.bias", &head.bias)] {
        let var = trainer
            .model
            .vars
            .get(name)
            .with_context(|| format!("the fine-tuning head `{name}`"))?;
        if var.dims() != value.dims() {
            bail!(
                "{}: the probe's head {:?} does not fit `{name}` {:?}",
                train.source,
                value.dims(),
                var.dims()
            );
        }
        var.set(value)?;
    }
    let spe = trainer.steps_per_epoch();
    let b = trainer.batch_size();
    let mut last = f64::NAN;
    for epoch in 0..settings.epochs {
        let order = trainer.epoch_order(epoch);
        let mut sum = 0.0;
        for k in 0..spe {
            sum += trainer.step(&order[k * b..(k + 1) * b], epoch)?;
        }
        last = sum / spe as f64;
    }
    let model = &trainer.model;
    let enc = model.eval_encoder(&encoder.checkpoint.path)?;
    let w = model
        .vars
        .get("fc.weight")
        .context("the fine-tuning head `fc.weight`")?
        .as_tensor()
        .t()?;
    let bias = model
        .vars
        .get("fc.bias")
        .context("the fine-tuning head `fc.bias`")?
        .as_tensor()
        .clone();
    let norm = Normalization::default_for(train.kind, train.channels);
    let ident = AugmentConfig::identity();
    let mut correct = 0usize;
    let all: Vec<usize> = (0..test.len()).collect();
    for chunk in all.chunks(256) {
        let x = crate::train::clean_tensor(&ident, &norm, test, chunk)?;
        let pred = enc
            .features(&x)?
            .matmul(&w)?
            .broadcast_add(&bias)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        correct += pred
            .iter()
            .zip(chunk)
            .filter(|(p, &i)| **p == test_labels[i])
            .count();
    }
    Ok(FinetuneRun {
        seed,
        accuracy: correct as f64 / test.len().max(1) as f64,
        final_loss: last,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The linear probe of the frozen `encoder` on `train` (clean images), as the head's weights.
fn probe_head(encoder: &Encoder, train: &ImageSet) -> Result<LinearHead> {
    let settings = ProbeSettings::default();
    let x = probe::encoder_features(encoder, train, &settings)?;
    let y = train
        .labels
        .clone()
        .with_context(|| format!("{}: fine-tuning needs labels", train.source))?;
    // Scored on its own training points: only the head is wanted here.
    let (_, head) = probe::fit_head(&x, &y, &x, &y, &settings)?;
    Ok(head)
}

/// [`finetune_once`] for every seed of `settings`.
pub fn finetune(
    encoder: &Encoder,
    layers: &[String],
    train: &ImageSet,
    test: &ImageSet,
    settings: &FinetuneSettings,
) -> Result<FinetuneResult> {
    settings.validate()?;
    let runs = settings
        .seeds
        .iter()
        .map(|&seed| finetune_once(encoder, layers, train, test, settings, seed))
        .collect::<Result<_>>()?;
    Ok(FinetuneResult {
        layers: layers.to_vec(),
        runs,
    })
}
