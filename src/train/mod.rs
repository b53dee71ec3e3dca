//! `memprune train`: SimCLR, SimSiam and supervised training of ResNet9 encoders on the CPU,
//! with the paper's f/g split for LayerMem, deterministic given the seed and thread count.
//!
//! - Views come from [`crate::data::augment`]'s counter-based generator: epoch `e` uses views
//!   `2e` and `2e + 1` of every point (supervised: view `e`), under a view seed derived from
//!   `--seed`, so they never coincide with the views `measure` draws under the same seed.
//! - Each epoch visits the training points in an order drawn from (seed, epoch); the last
//!   incomplete batch is dropped (as SimCLR does), unless the data is smaller than a batch.
//! - BatchNorm runs in training mode (batch statistics, running statistics with momentum 0.1).
//! - Learning rate: linear warm-up then cosine decay to 0, per step.
//! - After every epoch the checkpoint (`--out`) and a resume state beside it
//!   (`<out>.state.safetensors`: f32 weights, running statistics, optimizer state) are written
//!   atomically, so an interrupted run continues with `--resume <out>`.

pub mod checks;
pub mod distill;
pub mod init;
pub mod loss;
pub mod mae;
pub mod model;
pub mod optim;
pub mod split;

use crate::checkpoint::keys;
use crate::checkpoint::{write_safetensors_atomic, Checkpoint};
use crate::data::augment::{clean_batch, views_batch, AugmentConfig};
use crate::data::rng::{hash_key, Rng};
use crate::data::{ImageSet, Normalization};
use crate::model::fresh::FreshSpec;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use model::TrainModel;
use optim::{lr_at, Optimizer, OptimizerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use split::SplitKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const VIEW_TAG: u64 = 0x5452_4149_4E56_4945; // "TRAINVIE"
const SHUFFLE_TAG: u64 = 0x5348_5546_464C_4521; // "SHUFFLE!"

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    /// SimCLR: NT-Xent over two views, projection head `projector.{0,1,3}`.
    Simclr,
    /// SimSiam: projector + predictor, stop-gradient, symmetric negative cosine.
    Simsiam,
    /// Cross-entropy with a linear classifier `fc` on the pooled features.
    Supervised,
    /// MAE (ViTs only): 75 % of the patches masked, a light decoder predicts their
    /// normalised pixels.
    Mae,
}

impl Framework {
    pub fn name(self) -> &'static str {
        match self {
            Framework::Simclr => "simclr",
            Framework::Simsiam => "simsiam",
            Framework::Supervised => "supervised",
            Framework::Mae => "mae",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Framework::Simclr => "SimCLR: NT-Xent over two views, projection head `projector.{0,1,3}`",
            Framework::Simsiam => {
                "SimSiam: projector + predictor, stop-gradient, symmetric negative cosine"
            }
            Framework::Supervised => {
                "Cross-entropy with a linear classifier `fc` on the pooled features"
            }
            Framework::Mae => "MAE (ViTs only): 75 % of the patches masked, a light decoder predicts their normalised pixels",
        }
    }

    pub fn is_ssl(self) -> bool {
        self != Framework::Supervised
    }

    /// The optimiser unless `--optimizer` says otherwise: AdamW for ViTs (timm's and MAE's
    /// recipes), LARS for SimCLR (its paper's), SGD for SimSiam and supervised ResNets.
    pub fn default_optimizer(self, vit: bool) -> optim::OptimizerKind {
        use optim::OptimizerKind as K;
        match self {
            _ if vit => K::Adamw,
            Framework::Simclr => K::Lars,
            _ => K::Sgd,
        }
    }

    /// The peak learning rate unless `--lr`: 1e-3 for AdamW; for the SGD family the
    /// frameworks' own base rates, scaled linearly by `batch / 256` (Goyal et al.).
    pub fn default_lr(self, kind: optim::OptimizerKind, batch: usize) -> f64 {
        let scale = batch as f64 / 256.0;
        match (self, kind) {
            (_, optim::OptimizerKind::Adamw) | (Framework::Mae, _) => 1e-3,
            (Framework::Simclr, optim::OptimizerKind::Lars) => 0.3 * scale,
            (Framework::Simclr, _) => 0.5 * scale,
            (Framework::Simsiam, _) => 0.05 * scale,
            (Framework::Supervised, _) => 0.1 * scale,
        }
    }

    /// The weight decay unless `--wd`: 0.05 for ViTs, SimCLR's 1e-6, else 5e-4.
    pub fn default_weight_decay(self, vit: bool) -> f64 {
        match self {
            _ if vit => 0.05,
            Framework::Simclr => 1e-6,
            _ => 5e-4,
        }
    }

    /// The optimiser's settings for `kind` and `wd`: MAE's Adam beta2 is 0.95 (its paper's).
    pub fn optimizer_config(self, kind: optim::OptimizerKind, wd: f64) -> OptimizerConfig {
        let mut c = OptimizerConfig::new(kind, wd);
        if self == Framework::Mae {
            c.beta2 = 0.95;
        }
        c
    }

    /// Views of each image per step: two for the contrastive and Siamese objectives.
    pub fn views(self) -> usize {
        match self {
            Framework::Simclr | Framework::Simsiam => 2,
            Framework::Supervised | Framework::Mae => 1,
        }
    }

    /// The augmentation this framework trains with: docs/METRICS.md's SSL augmentation for the
    /// SSL frameworks; for supervised training a milder one (random resized crop with scale
    /// 0.5..1, horizontal flip, no colour jitter or grayscale).
    pub fn default_augment(self) -> AugmentConfig {
        match self {
            // MAE's pre-training augmentation: random resized crop (0.2..1) and flips.
            Framework::Mae => AugmentConfig {
                crop_scale: (0.2, 1.0),
                jitter_p: 0.0,
                grayscale_p: 0.0,
                ..AugmentConfig::default()
            },
            Framework::Supervised => AugmentConfig {
                crop_scale: (0.5, 1.0),
                jitter_p: 0.0,
                grayscale_p: 0.0,
                ..AugmentConfig::default()
            },
            _ => AugmentConfig::default(),
        }
    }
}

crate::named_choice!(
    Framework,
    "framework",
    [
        Framework::Simclr,
        Framework::Simsiam,
        Framework::Supervised,
        Framework::Mae
    ]
);

/// Everything that decides a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub framework: Framework,
    pub arch: init::TrainArch,
    /// ResNet9: the 8 block widths; ResNets: the 4 stage widths.
    pub widths: Vec<usize>,
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub warmup_epochs: f64,
    pub seed: u64,
    pub split: SplitKind,
    pub split_seed: u64,
    /// NT-Xent temperature (SimCLR).
    pub temperature: f64,
    pub augment: AugmentConfig,
    pub normalization: Normalization,
    /// Dtype of the weights in the written checkpoint (the resume state is always f32).
    #[serde(skip, default = "f32_dtype")]
    pub save_dtype: DType,
    /// Fine-tuning: the encoder starts from this checkpoint (its architecture and widths;
    /// fresh heads) instead of a fresh initialisation.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Layers to train (names as `memprune inspect` lists them); the others are frozen.
    /// None: all, or with `init_from` the checkpoint's `memprune.trainable` if it has one.
    #[serde(default)]
    pub trainable: Option<Vec<String>>,
    /// Points of the data set known to be atypical (planted), recorded in the checkpoint's
    /// `memprune.planted` so that a localization can be checked against a known answer.
    /// Metadata only: training does not treat them differently.
    #[serde(default)]
    pub planted: Option<Vec<usize>>,
    /// ViT sizes (`arch: vit`).
    #[serde(default)]
    pub vit: crate::model::vit_init::VitShape,
    /// Where the model trains (`--device`): the weights, optimiser state and every batch
    /// live there; the views are made on the CPU and copied over; checkpoints are written
    /// from a CPU copy. Not part of the run's identity (a resume may change it).
    #[serde(skip, default = "cpu_device")]
    pub device: Device,
}

fn f32_dtype() -> DType {
    DType::F32
}

fn cpu_device() -> Device {
    Device::Cpu
}

/// `tensors` on `device` (no copy when they are there already).
fn on_device(
    tensors: &BTreeMap<String, Tensor>,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    Ok(tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(device)?)))
        .collect::<candle_core::Result<_>>()?)
}

/// SHA-256 of a set's geometry, pixels and labels, hex.
pub fn data_hash(set: &ImageSet) -> String {
    let mut h = Sha256::new();
    for d in [set.len(), set.channels, set.height, set.width] {
        h.update((d as u64).to_le_bytes());
    }
    h.update(&set.pixels);
    if let Some(l) = &set.labels {
        for x in l {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of the resume state written beside a checkpoint.
pub fn state_path(ckpt: &Path) -> PathBuf {
    let mut s = ckpt.as_os_str().to_os_string();
    s.push(".state.safetensors");
    PathBuf::from(s)
}

/// Classes of a labelled set (max label + 1), 0 when unlabelled.
pub fn num_classes(set: &ImageSet) -> usize {
    set.labels
        .as_ref()
        .and_then(|l| l.iter().max())
        .map(|&m| m as usize + 1)
        .unwrap_or(0)
}

/// The state of a run: model, optimizer, and where it is in the schedule.
pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub set: &'a ImageSet,
    /// A label for `memprune.data` (the path the user gave).
    pub data_label: String,
    pub model: TrainModel,
    pub optimizer: Optimizer,
    /// The training points (indices into `set`), sorted.
    pub points: Vec<usize>,
    pub candidates: Option<Vec<usize>>,
    /// g's independent points (shared + independent runs only).
    pub independent: Option<Vec<usize>>,
    pub epochs_done: usize,
    pub data_hash: String,
    view_seed: u64,
}

impl<'a> Trainer<'a> {
    /// A fresh run (initialised from `cfg.seed`), or one resumed from a checkpoint or its
    /// resume state.
    pub fn new(
        cfg: TrainConfig,
        set: &'a ImageSet,
        data_label: &str,
        resume: Option<&Path>,
    ) -> Result<Trainer<'a>> {
        Self::build(cfg, set, data_label, resume, None)
    }

    /// Fine-tuning an encoder already in memory (a policy's rewritten model, an
    /// experiment's): as `cfg.init_from`, with fresh heads; `cfg.trainable` chooses the
    /// layers that train.
    pub fn finetune(
        cfg: TrainConfig,
        set: &'a ImageSet,
        data_label: &str,
        encoder: &crate::model::Encoder,
    ) -> Result<Trainer<'a>> {
        Self::build(cfg, set, data_label, None, Some(encoder))
    }

    fn build(
        mut cfg: TrainConfig,
        set: &'a ImageSet,
        data_label: &str,
        resume: Option<&Path>,
        start: Option<&crate::model::Encoder>,
    ) -> Result<Trainer<'a>> {
        checks::check_numbers(&cfg)?;
        if set.is_empty() {
            bail!("{}: no images", set.source);
        }
        if cfg.batch < 2 {
            bail!("--batch must be at least 2 (BatchNorm and contrastive losses need pairs)");
        }
        if cfg.framework == Framework::Supervised && set.labels.is_none() {
            bail!("{}: supervised training needs labels", set.source);
        }
        cfg.augment.validate()?;
        cfg.normalization.validate(set.channels)?;
        let hash = data_hash(set);
        let sp = split::split(set.len(), cfg.split_seed);
        let points = sp.train_points(cfg.split);
        let candidates = (cfg.split == SplitKind::SharedCandidates).then(|| sp.candidates.clone());
        let independent =
            (cfg.split == SplitKind::SharedIndependent).then(|| sp.independent.clone());
        if let Some(p) = &cfg.planted {
            if let Some(&bad) = p.iter().find(|&&i| i >= set.len()) {
                bail!(
                    "--planted: point {bad} is out of range ({} has {} points)",
                    set.source,
                    set.len()
                );
            }
        }
        let mut optimizer = Optimizer::new(cfg.optimizer.clone());
        let (mut model, epochs_done) = match resume {
            None if start.is_some() => {
                let enc = start.context("an encoder to fine-tune")?;
                let p = enc.checkpoint.path.clone();
                (pretrained_model(enc, &mut cfg, set, &p)?, 0)
            }
            None if cfg.init_from.is_some() => {
                let p = cfg.init_from.clone().unwrap_or_default();
                let enc = crate::model::Encoder::load(&p, &crate::model::LoadOptions::default())?;
                (pretrained_model(&enc, &mut cfg, set, &p)?, 0)
            }
            None => {
                let fresh = cfg.arch.fresh().init(&FreshSpec {
                    in_channels: set.channels,
                    image: cfg.augment.output_size(set),
                    // Images of 64 pixels or less get the CIFAR stem (solo-learn's choice).
                    small_images: set.height.max(set.width) <= 64,
                    widths: &cfg.widths,
                    vit: &cfg.vit,
                    decoder: cfg.framework == Framework::Mae,
                    seed: cfg.seed,
                })?;
                let mut t = fresh.tensors;
                t.extend(model::init_heads(
                    cfg.framework,
                    fresh.feature_dim,
                    num_classes(set),
                    cfg.seed,
                )?);
                cfg.widths = fresh.widths;
                (
                    TrainModel::from_tensors(
                        cfg.framework,
                        &on_device(&t, &cfg.device)?,
                        Path::new("<fresh>"),
                        &fresh.metadata,
                    )?,
                    0,
                )
            }
            Some(p) => {
                let sp = state_path(p);
                let (path, state) = if sp.exists() {
                    (sp.clone(), Checkpoint::load(&sp, Some(""))?)
                } else {
                    (p.to_path_buf(), Checkpoint::load(p, Some(""))?)
                };
                let m = &state.metadata;
                let want = [
                    (keys::FRAMEWORK, cfg.framework.name().to_string()),
                    (keys::SPLIT, cfg.split.name().to_string()),
                    (keys::SPLIT_SEED, cfg.split_seed.to_string()),
                    (keys::SEED, cfg.seed.to_string()),
                    (keys::DATA_HASH, hash.clone()),
                    (keys::OPTIMIZER, cfg.optimizer.kind.name().to_string()),
                ];
                for (k, v) in want {
                    if m.get(k) != Some(&v) {
                        bail!(
                            "{}: cannot resume: `{k}` is {:?} but this run has {v:?}",
                            path.display(),
                            m.get(k)
                        );
                    }
                }
                let done: usize = m
                    .get(keys::EPOCHS)
                    .and_then(|s| s.parse().ok())
                    .context("no `memprune.epochs` in the resume state")?;
                let steps: u64 = m
                    .get(keys::OPTIMIZER_STEPS)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if !state.tensors.keys().any(|k| k.starts_with("optimizer.")) && done > 0 {
                    bail!(
                        "{}: no optimizer state (expected the resume state {} beside it)",
                        p.display(),
                        sp.display()
                    );
                }
                optimizer.load_state(&on_device(&state.tensors, &cfg.device)?, steps)?;
                let meta: BTreeMap<String, String> = state
                    .metadata
                    .iter()
                    .filter(|(k, _)| k.as_str() == keys::HEADS || k.as_str() == keys::DECODER_HEADS)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (
                    TrainModel::from_tensors(
                        cfg.framework,
                        &on_device(&state.tensors, &cfg.device)?,
                        &path,
                        &meta,
                    )?,
                    done,
                )
            }
        };
        let widths: Vec<usize> = model.encoder.widths();
        if cfg.init_from.is_some() || start.is_some() {
            cfg.widths = widths.clone();
        }
        if resume.is_some() && widths != cfg.widths {
            bail!(
                "cannot resume: the checkpoint has widths {widths:?}, this run asks for {:?}",
                cfg.widths
            );
        }
        if let Some(layers) = &cfg.trainable {
            let src = start
                .map(|e| e.checkpoint.path.as_path())
                .or(cfg.init_from.as_deref())
                .or(resume)
                .unwrap_or(Path::new("--trainable"));
            model
                .freeze_all_but(layers)
                .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
        }
        if model.encoder.in_channels() != set.channels {
            bail!(
                "{}: images of {} channel(s), but the encoder takes {}",
                set.source,
                set.channels,
                model.encoder.in_channels()
            );
        }
        model
            .encoder
            .check_input_size(cfg.augment.output_size(set))
            .with_context(|| set.source.clone())?;
        let view_seed = hash_key(&[VIEW_TAG, cfg.seed]);
        Ok(Trainer {
            cfg,
            set,
            data_label: data_label.to_string(),
            model,
            optimizer,
            points,
            candidates,
            independent,
            epochs_done,
            data_hash: hash,
            view_seed,
        })
    }

    /// Batch size actually used (the data may be smaller than `--batch`).
    pub fn batch_size(&self) -> usize {
        self.cfg.batch.min(self.points.len())
    }

    pub fn steps_per_epoch(&self) -> usize {
        (self.points.len() / self.batch_size()).max(1)
    }

    pub fn total_steps(&self) -> u64 {
        (self.steps_per_epoch() * self.cfg.epochs) as u64
    }

    /// Training points in epoch `epoch`'s order.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut v = self.points.clone();
        let mut rng = Rng::from_key(&[SHUFFLE_TAG, self.cfg.seed, epoch as u64]);
        for i in (1..v.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }

    /// Input tensor (and labels) of one batch of points in epoch `epoch`.
    pub fn batch_input(&self, points: &[usize], epoch: usize) -> Result<(Tensor, Option<Tensor>)> {
        let s = self.cfg.augment.output_size(self.set);
        let c = self.set.channels;
        let e = epoch as u64;
        let (items, n): (Vec<(usize, u64)>, usize) = if self.cfg.framework.views() == 2 {
            let mut items: Vec<(usize, u64)> = points.iter().map(|&p| (p, 2 * e)).collect();
            items.extend(points.iter().map(|&p| (p, 2 * e + 1)));
            (items, 2 * points.len())
        } else {
            (points.iter().map(|&p| (p, e)).collect(), points.len())
        };
        let data = views_batch(
            &self.cfg.augment,
            &self.cfg.normalization,
            self.set,
            &items,
            self.view_seed,
        );
        let x = Tensor::from_vec(data, (n, c, s, s), &self.cfg.device)?;
        let labels = match &self.set.labels {
            Some(l) if self.cfg.framework == Framework::Supervised => {
                let v: Vec<u32> = points.iter().map(|&p| l[p]).collect();
                Some(Tensor::from_vec(v, points.len(), &self.cfg.device)?)
            }
            _ => None,
        };
        Ok((x, labels))
    }

    /// One optimisation step on `points` (views of epoch `epoch`); returns the loss.
    pub fn step(&mut self, points: &[usize], epoch: usize) -> Result<f64> {
        let (x, labels) = self.batch_input(points, epoch)?;
        let masks = match &self.model.decoder {
            Some(_) => {
                let tokens = self
                    .model
                    .encoder
                    .arch
                    .patch_encoder()
                    .context("MAE trains ViTs")?;
                let g = (x.dim(2)? / tokens.patch()).pow(2);
                Some(
                    mae::masks(mae::mask_seed(self.cfg.seed), epoch, points, g)?
                        .to_device(&self.cfg.device)?,
                )
            }
            None => None,
        };
        let (loss, stats) =
            self.model
                .loss(&x, labels.as_ref(), masks.as_ref(), self.cfg.temperature)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            bail!(
                "the loss became {value} at step {} (lower --lr?)",
                self.optimizer.steps + 1
            );
        }
        let grads = loss.backward()?;
        let spe = self.steps_per_epoch() as f64;
        let warmup = (self.cfg.warmup_epochs * spe).round() as u64;
        let lr = lr_at(
            self.cfg.lr,
            self.optimizer.steps,
            warmup,
            self.total_steps(),
        );
        self.optimizer.step(&self.model.vars, &grads, lr)?;
        self.model.update_running_stats(&stats)?;
        Ok(value)
    }

    /// Metadata of the checkpoint after `self.epochs_done` epochs.
    pub fn metadata(&self, final_loss: f64) -> BTreeMap<String, String> {
        let c = &self.cfg;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put(keys::ARCH, c.arch.name().into());
        put(
            keys::WIDTHS,
            serde_json::to_string(&c.widths).unwrap_or_default(),
        );
        put(keys::FRAMEWORK, c.framework.name().into());
        put(keys::DATA, self.data_label.clone());
        put(keys::DATA_HASH, self.data_hash.clone());
        put(keys::DATA_POINTS, self.set.len().to_string());
        put(keys::TRAIN_POINTS, self.points.len().to_string());
        put(keys::SPLIT, c.split.name().into());
        put(keys::SPLIT_SEED, c.split_seed.to_string());
        put(keys::SEED, c.seed.to_string());
        put(keys::EPOCHS, self.epochs_done.to_string());
        put(keys::EPOCHS_PLANNED, c.epochs.to_string());
        put(keys::BATCH, c.batch.to_string());
        put(keys::LR, c.lr.to_string());
        put(keys::OPTIMIZER, c.optimizer.kind.name().into());
        put(
            keys::OPTIMIZER_CONFIG,
            serde_json::to_string(&c.optimizer).unwrap_or_default(),
        );
        put(keys::OPTIMIZER_STEPS, self.optimizer.steps.to_string());
        put(keys::WARMUP_EPOCHS, c.warmup_epochs.to_string());
        put(keys::TEMPERATURE, c.temperature.to_string());
        put(
            keys::AUGMENT,
            serde_json::to_string(&c.augment).unwrap_or_default(),
        );
        put(
            keys::NORMALIZATION,
            serde_json::to_string(&c.normalization).unwrap_or_default(),
        );
        put(keys::FINAL_LOSS, format!("{final_loss}"));
        if let Some(p) = &c.init_from {
            put(keys::INIT_FROM, p.display().to_string());
        }
        if let Some(t) = &c.trainable {
            put(
                keys::TRAINABLE,
                serde_json::to_string(t).unwrap_or_default(),
            );
        }
        put(keys::VERSION, env!("CARGO_PKG_VERSION").into());
        if let Some(cands) = &self.candidates {
            put(
                keys::CANDIDATES,
                serde_json::to_string(cands).unwrap_or_default(),
            );
        }
        if let Some(ind) = &self.independent {
            put(
                keys::INDEPENDENT,
                serde_json::to_string(ind).unwrap_or_default(),
            );
        }
        if let Some(p) = &c.planted {
            put(keys::PLANTED, serde_json::to_string(p).unwrap_or_default());
        }
        for (k, v) in &self.model.meta {
            m.insert(k.clone(), v.clone());
        }
        if let (None, Some((k, v))) = (&c.init_from, c.arch.fresh().shape_record(&c.vit)) {
            m.insert(k.into(), v);
        }
        m
    }

    /// Writes the checkpoint (weights in `save_dtype`) and the resume state beside it.
    pub fn save(&self, out: &Path, final_loss: f64) -> Result<()> {
        let meta = self.metadata(final_loss);
        let tensors = on_device(&self.model.tensors()?, &Device::Cpu)?;
        let saved: BTreeMap<String, Tensor> = tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_dtype(self.cfg.save_dtype)?)))
            .collect::<candle_core::Result<_>>()?;
        // A fine-tuned model never replaces the checkpoint it started from.
        let inputs: Vec<&Path> = self.cfg.init_from.iter().map(|p| p.as_path()).collect();
        write_safetensors_atomic(out, &saved, &meta, &inputs)?;
        let mut state = tensors;
        state.extend(on_device(&self.optimizer.state_tensors(), &Device::Cpu)?);
        write_safetensors_atomic(&state_path(out), &state, &meta, &inputs)
    }

    /// Trains up to `cfg.epochs`, saving after each epoch; returns the mean loss of the last
    /// epoch. `progress`: a bar on stderr; otherwise, unless `quiet`, one line per epoch.
    pub fn run(&mut self, out: &Path, progress: bool, quiet: bool) -> Result<TrainSummary> {
        let spe = self.steps_per_epoch();
        let b = self.batch_size();
        let views = self.cfg.framework.views();
        let start = Instant::now();
        let mut last = f64::NAN;
        let mut epoch_secs = Vec::new();
        while self.epochs_done < self.cfg.epochs {
            let epoch = self.epochs_done;
            let order = self.epoch_order(epoch);
            let t0 = Instant::now();
            let pb = if progress && !quiet {
                let pb = indicatif::ProgressBar::new(spe as u64);
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                pb.set_prefix(format!("{}/{}", epoch + 1, self.cfg.epochs));
                Some(pb)
            } else {
                None
            };
            let mut sum = 0.0;
            for k in 0..spe {
                let l = self.step(&order[k * b..(k + 1) * b], epoch)?;
                crate::interrupt::check()?;
                sum += l;
                if let Some(pb) = &pb {
                    let ips = ((k + 1) * b) as f64 / t0.elapsed().as_secs_f64();
                    pb.set_message(format!("loss {l:.4} {ips:.0} img/s"));
                    pb.inc(1);
                }
            }
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            last = sum / spe as f64;
            self.epochs_done += 1;
            let secs = t0.elapsed().as_secs_f64();
            epoch_secs.push(secs);
            self.save(out, last)?;
            if !quiet {
                eprintln!(
                    "epoch {}/{}: loss {last:.4}, {secs:.1} s, {:.0} img/s ({} views each), lr {:.4}",
                    self.epochs_done,
                    self.cfg.epochs,
                    (spe * b) as f64 / secs,
                    views,
                    lr_at(self.cfg.lr, self.optimizer.steps.saturating_sub(1), (self.cfg.warmup_epochs * spe as f64).round() as u64, self.total_steps())
                );
            }
        }
        if self.epochs_done == self.cfg.epochs && epoch_secs.is_empty() && !out.exists() {
            self.save(out, last)?;
        }
        Ok(TrainSummary {
            epochs: self.epochs_done,
            final_loss: last,
            seconds: start.elapsed().as_secs_f64(),
            epoch_seconds: epoch_secs,
            train_points: self.points.len(),
        })
    }
}

/// The model that fine-tunes `enc` (read from `p`): its encoder tensors (what it does not
/// read, such as its own heads and optimizer state, is dropped) and fresh heads.
fn pretrained_model(
    enc: &crate::model::Encoder,
    cfg: &mut TrainConfig,
    set: &ImageSet,
    p: &Path,
) -> Result<TrainModel> {
    if cfg.trainable.is_none() {
        if let Some(t) = enc.checkpoint.metadata.get(keys::TRAINABLE) {
            cfg.trainable = Some(
                serde_json::from_str(t)
                    .with_context(|| format!("{}: bad `memprune.trainable`", p.display()))?,
            );
        }
    }
    // The encoder only: what it does not read (the checkpoint's own heads,
    // optimizer state) is dropped, and fresh heads are added.
    let mut t: BTreeMap<String, Tensor> = enc
        .checkpoint
        .tensors
        .iter()
        .filter(|(k, _)| !enc.unused.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    t.extend(model::init_heads(
        cfg.framework,
        enc.feature_dim(),
        num_classes(set),
        cfg.seed,
    )?);
    // The load metadata the encoder needs (a ViT's heads): the checkpoint's where it has
    // it, else what the loaded network says.
    let mut meta: BTreeMap<String, String> = enc
        .arch
        .rewrite_metadata(&[])
        .into_iter()
        .map(|(k, v)| {
            let v = enc.checkpoint.metadata.get(&k).cloned().unwrap_or(v);
            (k, v)
        })
        .collect();
    if cfg.framework == Framework::Mae {
        let Some(tokens) = enc.arch.patch_encoder() else {
            bail!(
                "{}: --framework mae trains ViTs; this is {}",
                p.display(),
                enc.describe()
            );
        };
        let (decoder, decoder_meta) =
            crate::model::vit_init::mae_decoder_for(tokens, &cfg.vit, set.channels, cfg.seed)?;
        t.extend(decoder);
        meta.extend(decoder_meta);
    }
    TrainModel::from_tensors(cfg.framework, &on_device(&t, &cfg.device)?, p, &meta)
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub epochs: usize,
    pub final_loss: f64,
    pub seconds: f64,
    pub epoch_seconds: Vec<f64>,
    pub train_points: usize,
}

/// Clean (un-augmented) normalised images of `points` as an (N, C, S, S) tensor.
pub fn clean_tensor(
    cfg: &AugmentConfig,
    norm: &Normalization,
    set: &ImageSet,
    points: &[usize],
) -> Result<Tensor> {
    let s = cfg.output_size(set);
    let v = clean_batch(cfg, norm, set, points);
    Ok(Tensor::from_vec(
        v,
        (points.len(), set.channels, s, s),
        &Device::Cpu,
    )?)
}
