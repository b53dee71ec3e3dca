//! `memprune probe`: the linear-probe (and kNN) accuracy of a frozen encoder, of a fresh
//! initialisation, or of the raw pixels: one request ([`ProbeRequest`]), one result
//! ([`ProbeResult`], what the lines and the JSON say).

use crate::data::options::{data_line, DataOptions};
use crate::data::{self, Normalization, Split};
use crate::eval::knn::{KnnResult, KnnSettings};
use crate::eval::probe::{self, ProbeSettings};
use crate::model::{Encoder, LoadOptions};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::PathBuf;

/// What to probe.
#[derive(Debug, Clone)]
pub enum ProbeSubject {
    /// A checkpoint's encoder (default: the embedded f).
    Checkpoint(Option<PathBuf>),
    /// The raw pixels: the floor.
    RawPixels,
    /// A fresh ResNet9 of these widths, seeded by the request's `init_seed`.
    RandomResNet9(Vec<usize>),
    /// A fresh initialisation of this checkpoint's architecture and sizes.
    RandomLike(PathBuf),
}

/// A probe as asked.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub subject: ProbeSubject,
    pub load: LoadOptions,
    /// Labelled data with train and test splits. Default: the embedded Fashion-MNIST subset.
    pub data: Option<PathBuf>,
    pub read: DataOptions,
    /// Seed of a fresh initialisation.
    pub init_seed: u64,
    pub settings: ProbeSettings,
    /// Also DINO's weighted kNN classifier, with these settings.
    pub knn: Option<KnnSettings>,
    /// `cpu`, `cuda` or `cuda:N` (a checkpoint's encoder only).
    pub device: String,
}

impl ProbeRequest {
    /// A linear probe of `subject` with the default settings.
    pub fn new(subject: ProbeSubject) -> ProbeRequest {
        ProbeRequest {
            subject,
            load: LoadOptions::default(),
            data: None,
            read: DataOptions::default(),
            init_seed: 0,
            settings: ProbeSettings::default(),
            knn: None,
            device: "cpu".to_string(),
        }
    }

    pub fn data_path(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(crate::defaults::data)
    }

    /// Registers what the probe reads.
    pub fn register(&self, set: &mut crate::output::OutputSet) {
        set.input(&self.data_path(), "the data");
        match &self.subject {
            ProbeSubject::RandomLike(like) => {
                set.input(like, "--random-like");
            }
            ProbeSubject::Checkpoint(p) => {
                set.input(
                    &p.clone().unwrap_or_else(crate::defaults::model_f),
                    "the checkpoint",
                );
            }
            ProbeSubject::RawPixels | ProbeSubject::RandomResNet9(_) => {}
        }
    }

    /// Fits the probe (and the kNN classifier). `on_data`: the line of each split as it
    /// is read.
    pub fn run(&self, mut on_data: impl FnMut(&str)) -> Result<ProbeResult> {
        self.settings.validate()?;
        let device = crate::model::device::parse(&self.device)?;
        if !device.is_cpu() && !matches!(self.subject, ProbeSubject::Checkpoint(_)) {
            bail!("--device {}: only a checkpoint's encoder runs on another device; the raw-pixel and random-init baselines run on the CPU", self.device);
        }
        let data_path = self.data_path();
        // A checkpoint's encoder first: its input size is the default of mixed-size folders.
        let loaded = match &self.subject {
            ProbeSubject::RandomLike(like) => Some(crate::model::fresh::random_like(
                like,
                &self.load,
                self.init_seed,
            )?),
            ProbeSubject::RawPixels | ProbeSubject::RandomResNet9(_) => None,
            ProbeSubject::Checkpoint(p) => {
                let path = p.clone().unwrap_or_else(crate::defaults::model_f);
                Some(Encoder::load_on(&path, &self.load, &device)?)
            }
        };
        let read = match &loaded {
            Some(e) => self.read.for_encoder(e),
            None => self.read.clone(),
        };
        let train = data::open::open_with(&data_path, Split::Train, &read)?;
        let test = data::open::open_with(&data_path, Split::Test, &read)?;
        let norm = self
            .settings
            .normalization
            .clone()
            .unwrap_or_else(|| Normalization::default_for(train.kind, train.channels));
        for (set, split) in [(&train, "train"), (&test, "test")] {
            on_data(&data_line(set, split, &norm, false));
        }
        if let Some(k) = &self.knn {
            k.validate()?;
        }
        let (model, ftr, fte) = match &self.subject {
            ProbeSubject::RawPixels => (
                "raw pixels".to_string(),
                probe::pixel_features(&train, &self.settings)?,
                probe::pixel_features(&test, &self.settings)?,
            ),
            _ => {
                let enc = match (loaded, &self.subject) {
                    (Some(e), _) => e,
                    (None, ProbeSubject::RandomResNet9(w)) => {
                        let t =
                            crate::model::resnet9_init::resnet9(train.channels, w, self.init_seed)?;
                        let name = PathBuf::from(format!(
                            "<random-init resnet9 {w:?}, seed {}>",
                            self.init_seed
                        ));
                        let ckpt = crate::checkpoint::Checkpoint::from_tensors(
                            &name,
                            t,
                            Default::default(),
                        );
                        Encoder::from_checkpoint(ckpt, &LoadOptions::default())?
                    }
                    (None, _) => bail!("no encoder to probe"),
                };
                (
                    enc.checkpoint.path.display().to_string(),
                    probe::encoder_features(&enc, &train, &self.settings)?,
                    probe::encoder_features(&enc, &test, &self.settings)?,
                )
            }
        };
        let (ytr, yte) = (probe::labels_of(&train)?, probe::labels_of(&test)?);
        let result = probe::fit(&ftr, &ytr, &fte, &yte, &self.settings)?;
        let knn = match &self.knn {
            Some(k) => Some(crate::eval::knn::knn(&ftr, &ytr, &fte, &yte, k)?),
            None => None,
        };
        Ok(ProbeResult {
            model,
            data: data_path.display().to_string(),
            data_options: read.to_json(),
            train_points: train.len(),
            test_points: test.len(),
            settings: self.settings.clone(),
            result,
            knn,
        })
    }
}

/// What a probe found (its JSON, field for field).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// What was probed: the checkpoint's path, a fresh initialisation's name, or `raw pixels`.
    pub model: String,
    pub data: String,
    pub data_options: serde_json::Value,
    pub train_points: usize,
    pub test_points: usize,
    pub settings: ProbeSettings,
    pub result: probe::ProbeResult,
    pub knn: Option<KnnResult>,
}
