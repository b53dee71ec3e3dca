//! Fine-tuning jobs: `memprune experiment finetune` (the paper's Table 5) as one request
//! ([`FinetuneRequest`]) and one result ([`crate::eval::finetune_experiment::Table5`]); a
//! policy's `evaluation.finetune` fills the same [`FinetuneSettings`]
//! ([`crate::eval::finetune::settings_from`]).

use crate::data::augment_choice::GivenAugment;
use crate::eval::finetune::FinetuneSettings;
use crate::eval::finetune_experiment::{Table5, Table5Inputs};
use crate::metrics::layer_mem::LayerMemLayer;
use crate::model::LoadOptions;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Table 5 as asked.
#[derive(Debug, Clone)]
pub struct FinetuneRequest {
    /// The SSL encoder f. Default: the embedded f.
    pub checkpoint: Option<PathBuf>,
    /// The reference g for LayerMem. Default: the embedded g (with the embedded f only).
    pub reference: Option<PathBuf>,
    /// The pre-training data. Default: the embedded data.
    pub data: Option<PathBuf>,
    /// The downstream task. Default: the embedded MNIST subset.
    pub downstream: Option<PathBuf>,
    /// LayerMem: at most this many of f's candidates.
    pub points: usize,
    /// LayerMem: view pairs per point.
    pub views: usize,
    /// Seed of LayerMem's views and intervals.
    pub seed: u64,
    /// How f and g load.
    pub load: LoadOptions,
    /// LayerMem's augmentation YAML (default: the one f and g record).
    pub augment: Option<PathBuf>,
    pub settings: FinetuneSettings,
}

impl Default for FinetuneRequest {
    fn default() -> Self {
        FinetuneRequest {
            checkpoint: None,
            reference: None,
            data: None,
            downstream: None,
            points: crate::defaults::LAYER_CANDIDATES,
            views: crate::defaults::VIEWS,
            seed: crate::defaults::SEED,
            load: LoadOptions::default(),
            augment: None,
            settings: FinetuneSettings::default(),
        }
    }
}

impl FinetuneRequest {
    /// The inputs with their defaults; a checkpoint given without its reference is refused.
    pub fn inputs(&self) -> Result<Table5Inputs> {
        let reference = match (&self.reference, &self.checkpoint) {
            (Some(r), _) => r.clone(),
            (None, None) => crate::defaults::model_g(),
            (None, Some(_)) => bail!(
                "--reference: LayerMem needs the reference encoder g, trained without f's candidates"
            ),
        };
        Ok(Table5Inputs {
            checkpoint: self
                .checkpoint
                .clone()
                .unwrap_or_else(crate::defaults::model_f),
            reference,
            data: self.data.clone().unwrap_or_else(crate::defaults::data),
            downstream: self
                .downstream
                .clone()
                .unwrap_or_else(crate::defaults::downstream),
            points: self.points,
            views: self.views,
            seed: self.seed,
            heads: self.load.heads,
            augment: GivenAugment::from_flag(self.augment.as_deref())?,
        })
    }

    /// Registers what the experiment reads.
    pub fn register(&self, inputs: &Table5Inputs, set: &mut crate::output::OutputSet) {
        set.input(&inputs.checkpoint, "the checkpoint");
        set.input(&inputs.reference, "--reference");
        set.input(&inputs.data, "the data");
        set.input(&inputs.downstream, "--downstream");
        if let Some(p) = &self.augment {
            set.input(p, "the augment file");
        }
    }

    /// Measures f's LayerMem and fine-tunes. `progress`: bars and one line per run.
    pub fn run(
        &self,
        inputs: &Table5Inputs,
        progress: bool,
        log: impl FnMut(&str),
    ) -> Result<(Table5, Vec<LayerMemLayer>)> {
        crate::eval::finetune_experiment::run(inputs, &self.settings, progress, log)
    }
}
