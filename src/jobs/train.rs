//! `memprune train`: one request with its defaults and checks ([`TrainRequest`]), run into
//! a checkpoint, with what the run starts from ([`TrainStart`]) and what it did
//! ([`crate::train::TrainSummary`]).

use crate::data::augment::AugmentConfig;
use crate::data::{self, Normalization, Split};
use crate::model::vit_init::VitShape;
use crate::model::{Encoder, LoadOptions};
use crate::train::init::TrainArch;
use crate::train::optim::OptimizerKind;
use crate::train::split::SplitKind;
use crate::train::{Framework, TrainConfig, TrainSummary, Trainer};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The settings a run takes unless told otherwise (the optimiser, its rate and weight decay
/// depend on the framework and architecture: [`Framework::default_optimizer`] and the like).
pub struct TrainDefaults {
    pub epochs: usize,
    pub batch: usize,
    pub momentum: f64,
    pub lars_eta: f64,
    pub warmup_epochs: f64,
    pub temperature: f64,
}

pub const DEFAULTS: TrainDefaults = TrainDefaults {
    epochs: 10,
    batch: 256,
    momentum: 0.9,
    lars_eta: 0.02,
    warmup_epochs: 1.0,
    temperature: 0.5,
};

/// A ViT's sizes as asked; unset ones are [`VitShape::default`]'s (the MLP: 4 x width).
#[derive(Debug, Clone, Default)]
pub struct VitSizes {
    pub depth: Option<usize>,
    pub width: Option<usize>,
    pub heads: Option<usize>,
    pub mlp: Option<usize>,
    pub patch: Option<usize>,
    pub decoder_depth: Option<usize>,
    pub decoder_width: Option<usize>,
    pub decoder_heads: Option<usize>,
}

impl VitSizes {
    /// The shape, defaults filled in.
    pub fn shape(&self) -> VitShape {
        let d = VitShape::default();
        let width = self.width.unwrap_or(d.width);
        VitShape {
            depth: self.depth.unwrap_or(d.depth),
            width,
            heads: self.heads.unwrap_or(d.heads),
            mlp: self.mlp.unwrap_or(4 * width),
            patch: self.patch.unwrap_or(d.patch),
            decoder_depth: self.decoder_depth.unwrap_or(d.decoder_depth),
            decoder_width: self.decoder_width.unwrap_or(d.decoder_width),
            decoder_heads: self.decoder_heads.unwrap_or(d.decoder_heads),
        }
    }
}

/// A training run as asked.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub framework: Framework,
    pub arch: TrainArch,
    /// Conv nets' widths (default: the architecture's).
    pub widths: Option<Vec<usize>>,
    pub vit: VitSizes,
    /// Training data. Default: the embedded Fashion-MNIST subset.
    pub data: Option<PathBuf>,
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate (default: [`Framework::default_lr`]).
    pub lr: Option<f64>,
    /// Weight decay (default: [`Framework::default_weight_decay`]).
    pub wd: Option<f64>,
    /// Default: [`Framework::default_optimizer`].
    pub optimizer: Option<OptimizerKind>,
    pub momentum: f64,
    pub nesterov: bool,
    pub lars_eta: f64,
    pub warmup_epochs: f64,
    pub temperature: f64,
    pub seed: u64,
    pub split: SplitKind,
    pub split_seed: u64,
    /// Augmentation YAML (default: [`Framework::default_augment`]).
    pub augment: Option<PathBuf>,
    /// The checkpoint to write; its resume state goes beside it.
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    /// Fine-tune from this checkpoint (its architecture and widths) with fresh heads.
    pub init: Option<PathBuf>,
    pub trainable: Option<Vec<String>>,
    /// A file of planted point indices.
    pub planted: Option<PathBuf>,
    /// Store the weights as f16.
    pub f16: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

impl TrainRequest {
    /// A run of `framework` writing `out`, every other setting its default.
    pub fn new(framework: Framework, out: PathBuf) -> TrainRequest {
        TrainRequest {
            framework,
            arch: TrainArch::Resnet9,
            widths: None,
            vit: VitSizes::default(),
            data: None,
            epochs: DEFAULTS.epochs,
            batch: DEFAULTS.batch,
            lr: None,
            wd: None,
            optimizer: None,
            momentum: DEFAULTS.momentum,
            nesterov: false,
            lars_eta: DEFAULTS.lars_eta,
            warmup_epochs: DEFAULTS.warmup_epochs,
            temperature: DEFAULTS.temperature,
            seed: 0,
            split: SplitKind::All,
            split_seed: 0,
            augment: None,
            out,
            resume: None,
            init: None,
            trainable: None,
            planted: None,
            f16: false,
            device: "cpu".to_string(),
        }
    }

    /// The data path (given or the embedded default).
    pub fn data_path(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(crate::defaults::data)
    }

    /// Registers what the run reads and writes, before any work: `--out` and its resume
    /// state are neither the data, `--init` nor `--augment` (`--resume` continues in
    /// place, so `--out` may be the resumed checkpoint).
    pub fn register(&self, set: &mut crate::output::OutputSet) -> Result<()> {
        set.input(&self.data_path(), "the data");
        if let Some(init) = &self.init {
            set.input(init, "--init");
        }
        if let Some(p) = &self.augment {
            set.input(p, "the augment file");
        }
        set.output(&self.out, "--out")?;
        crate::output::parent_exists(&self.out, "--out")?;
        set.output(&crate::train::state_path(&self.out), "--out's resume state")?;
        Ok(())
    }

    /// Trains (or resumes) and writes the checkpoint after every epoch. `on_start` sees
    /// the run before its first step; `progress`: a bar on stderr; unless `quiet`, a line
    /// per epoch.
    pub fn run(
        &self,
        progress: bool,
        quiet: bool,
        on_start: impl FnOnce(&TrainStart),
    ) -> Result<TrainSummary> {
        let device = crate::model::device::parse(&self.device)?;
        {
            let mut outputs = crate::output::OutputSet::new();
            self.register(&mut outputs)?;
        }
        let data_path = self.data_path();
        let set = data::open(&data_path, Split::Train)?;
        // A patch-token network (a ViT) trains with AdamW by default, whether it is fresh,
        // MAE's, or the checkpoint it starts from.
        let init_is_tokens = match &self.init {
            Some(p) => Encoder::load(p, &LoadOptions::default())?
                .arch
                .patch_encoder()
                .is_some(),
            None => false,
        };
        let tokens =
            self.arch.fresh().tokens() || self.framework == Framework::Mae || init_is_tokens;
        let kind = self
            .optimizer
            .unwrap_or_else(|| self.framework.default_optimizer(tokens));
        let lr = self
            .lr
            .unwrap_or_else(|| self.framework.default_lr(kind, self.batch));
        let wd = self
            .wd
            .unwrap_or_else(|| self.framework.default_weight_decay(tokens));
        let mut optimizer = self.framework.optimizer_config(kind, wd);
        optimizer.momentum = self.momentum;
        optimizer.nesterov = self.nesterov;
        optimizer.eta = self.lars_eta;
        let vit_shape = self.vit.shape();
        let augment = match &self.augment {
            Some(p) => AugmentConfig::load(p)?,
            None => self.framework.default_augment(),
        };
        let widths = if self.arch.fresh().tokens() {
            if self.widths.is_some() {
                bail!(
                    "--widths sizes ResNets; a ViT takes --depth, --width, --heads, --mlp, --patch"
                );
            }
            vit_shape.check_sizes()?;
            vit_shape.widths()
        } else {
            self.widths
                .clone()
                .unwrap_or_else(|| self.arch.default_widths())
        };
        if self.init.is_none() {
            self.arch.check_widths(&widths)?;
        }
        let cfg = TrainConfig {
            framework: self.framework,
            arch: self.arch,
            widths,
            epochs: self.epochs,
            batch: self.batch,
            lr,
            optimizer,
            warmup_epochs: self.warmup_epochs,
            seed: self.seed,
            split: self.split,
            split_seed: self.split_seed,
            temperature: self.temperature,
            augment,
            normalization: Normalization::default_for(set.kind, set.channels),
            save_dtype: if self.f16 {
                candle_core::DType::F16
            } else {
                candle_core::DType::F32
            },
            init_from: self.init.clone(),
            trainable: self.trainable.clone(),
            planted: match &self.planted {
                Some(p) => Some(crate::data::subset::Subset::from_file(p, set.len())?.indices),
                None => None,
            },
            vit: vit_shape,
            device,
        };
        let label = data_path.display().to_string();
        let mut trainer = Trainer::new(cfg, &set, &label, self.resume.as_deref())?;
        on_start(&TrainStart {
            framework: self.framework,
            from: match &trainer.cfg.init_from {
                Some(p) => format!("from {}", p.display()),
                None => self.arch.name().to_string(),
            },
            widths: trainer.cfg.widths.clone(),
            train_points: trainer.points.len(),
            data_points: set.len(),
            data: label.clone(),
            split: self.split,
            epochs: self.epochs,
            steps_per_epoch: trainer.steps_per_epoch(),
            batch: trainer.batch_size(),
            optimizer: kind,
            lr,
            wd,
            epochs_done: trainer.epochs_done,
            trainable: trainer.cfg.trainable.clone(),
        });
        trainer.run(&self.out, progress, quiet)
    }
}

/// What a run starts from, known before its first step.
#[derive(Debug, Clone)]
pub struct TrainStart {
    pub framework: Framework,
    /// The architecture's name, or `from <checkpoint>` when fine-tuning.
    pub from: String,
    pub widths: Vec<usize>,
    pub train_points: usize,
    pub data_points: usize,
    /// The data's label (the path given).
    pub data: String,
    pub split: SplitKind,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Images per step actually used.
    pub batch: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub wd: f64,
    /// Epochs already done (a resumed run).
    pub epochs_done: usize,
    /// The layers that train, when not all.
    pub trainable: Option<Vec<String>>,
}
