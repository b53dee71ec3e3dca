//! Label-free recovery of a pruned encoder: feature distillation toward the unpruned one.
//!
//! The student (the pruned encoder) learns to reproduce the teacher's (the unpruned
//! encoder's) taps on unlabelled views of the policy's data; the teacher never changes.
//! Pruning removed units, so a student tap has fewer units than the teacher's: the teacher's
//! tap is mapped through the kept-unit indices (student unit `j` is teacher unit `kept[j]`,
//! [`KeptUnits`]). Nothing is learned on top of the student (no projector), so what trains
//! is exactly the encoder that is written.
//!
//! The loss of one tap over a batch of N views, `s_i` and `t_i` the student's tap and the
//! teacher's mapped tap of view i, flattened:
//!
//! - `cosine`: `L = (1/N) sum_i (1 - <s_i, t_i> / (|s_i| |t_i|))` (0 when the directions agree);
//! - `mse`: `L = sum_i |s_i - t_i|^2 / sum_i |t_i|^2`, the squared error relative to the
//!   teacher's energy, so that taps of different scales weigh alike.
//!
//! The loss of a batch is the mean over the taps (default: the representation only).
//!
//! Training is memprune's trainer (src/train/): its views (two per image and epoch, from the
//! counter-based generator under a seed derived from `seed`), its per-epoch batch order, its
//! AdamW and its warm-up + cosine learning rate; BatchNorm in training mode with running
//! statistics updated (momentum 0.1); frozen layers (a policy's `freeze`/`train` actions)
//! run with their running statistics and never change. Teacher and student see the same
//! views. Every draw comes from `seed`: the same seed gives the same student.

use crate::data::augment::AugmentConfig;
use crate::data::{ImageSet, Normalization};
use crate::model::conv_bn::Mode;
use crate::model::Encoder;
use crate::train::optim::{lr_at, OptimizerConfig, OptimizerKind};
use crate::train::split::SplitKind;
use crate::train::{Framework, TrainConfig, Trainer};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// The distillation loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistillLoss {
    /// `1 - cos(student, teacher)`, averaged over the views.
    Cosine,
    /// Squared error relative to the teacher's squared norm.
    Mse,
}

/// A policy's `recover` settings (strict keys; every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSettings {
    /// Default `cosine`.
    pub loss: DistillLoss,
    /// Layers (as `memprune inspect` names them) whose outputs are distilled. Default: the
    /// representation (`pool`) only.
    pub taps: Vec<String>,
    /// Passes over the data. Default 20.
    pub epochs: usize,
    /// Peak learning rate of AdamW. Default 1e-3.
    pub lr: f64,
    /// AdamW's decoupled weight decay. Default 0.
    pub weight_decay: f64,
    /// Images per step (each gives two views). Default 64.
    pub batch: usize,
    /// Linear warm-up, in epochs. Default 1.
    pub warmup_epochs: f64,
    /// Seed of the views and the batch order. Default 0.
    pub seed: u64,
    /// The views' augmentation. Default: the one the policy's scores use (said on the output).
    pub augment: Option<AugmentConfig>,
    /// Threads of the training. Default 4. The convolutions' backward pass sums per-thread
    /// partial gradients, so the trained weights depend on this number: fixed here (not
    /// taken from the machine or `RAYON_NUM_THREADS`), the same seed gives the same bits
    /// on any machine.
    pub threads: usize,
}

impl Default for DistillSettings {
    fn default() -> Self {
        DistillSettings {
            loss: DistillLoss::Cosine,
            taps: Vec::new(),
            epochs: 20,
            lr: 1e-3,
            weight_decay: 0.0,
            batch: 64,
            warmup_epochs: 1.0,
            seed: 0,
            augment: None,
            threads: 4,
        }
    }
}

impl DistillSettings {
    /// Refuses settings that would train nothing or give NaN weights; errors start with
    /// the key.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("epochs must be at least 1, got 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lr must be a finite number > 0, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "weight_decay must be a finite number >= 0, got {}",
                self.weight_decay
            );
        }
        if self.batch < 2 {
            bail!(
                "batch must be at least 2 (BatchNorm needs pairs), got {}",
                self.batch
            );
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            bail!(
                "warmup_epochs must be a finite number >= 0, got {}",
                self.warmup_epochs
            );
        }
        if self.threads == 0 || self.threads > 256 {
            bail!("threads must be in 1..=256, got {}", self.threads);
        }
        let mut t = self.taps.clone();
        t.sort();
        if t.windows(2).any(|w| w[0] == w[1]) {
            bail!("taps {:?} name a layer twice", self.taps);
        }
        if let Some(a) = &self.augment {
            a.validate().context("augment")?;
        }
        Ok(())
    }
}

/// Per layer of the student, the teacher's units it kept, in order (layers absent: all kept).
pub type KeptUnits = BTreeMap<String, Vec<usize>>;

/// What a recovery did.
#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    pub loss: DistillLoss,
    pub taps: Vec<String>,
    pub epochs: usize,
    pub steps: u64,
    pub images: usize,
    /// Where the views' augmentation came from: `augment` of these settings, or the
    /// policy's (the first line of its output).
    pub augment: String,
    /// The distillation loss on clean images of the data (up to 256, the student in eval
    /// mode), before and after training.
    pub loss_before: f64,
    pub loss_after: f64,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    pub seconds: f64,
}

/// The trained student: its encoder tensors (by the checkpoint's names, f32) and the report.
pub struct Distilled {
    pub tensors: BTreeMap<String, Tensor>,
    pub report: DistillReport,
}

/// Images of a clean evaluation batch.
const EVAL_IMAGES: usize = 256;

/// A tap's unit axis: channels of NCHW and of (N, features), the last of (N, tokens, units).
fn unit_axis(t: &Tensor) -> usize {
    if t.rank() == 3 {
        2
    } else {
        1
    }
}

/// The layer indices of `taps` (default: the representation) in `enc`, checked.
fn tap_indices(enc: &Encoder, taps: &[String]) -> Result<(Vec<usize>, Vec<String>)> {
    let names: Vec<String> = if taps.is_empty() {
        vec![enc
            .layers
            .last()
            .map(|l| l.name.clone())
            .context("the encoder has no layer")?]
    } else {
        taps.to_vec()
    };
    let idx = names
        .iter()
        .map(|n| {
            enc.layers
                .iter()
                .position(|l| &l.name == n)
                .with_context(|| {
                    format!(
                        "taps: `{n}` is not a layer of this {} (layers: {})",
                        enc.describe(),
                        enc.layers
                            .iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect::<Result<_>>()?;
    Ok((idx, names))
}

/// The teacher's taps at `idx`, mapped through the kept units and detached.
fn teacher_targets(
    teacher: &Encoder,
    x: &Tensor,
    idx: &[usize],
    names: &[String],
    kept: &KeptUnits,
) -> Result<Vec<Tensor>> {
    let all = teacher.forward_taps(x)?;
    idx.iter()
        .zip(names)
        .map(|(&i, n)| {
            let t = all[i].detach();
            Ok(match kept.get(n) {
                Some(k) => {
                    let ix: Vec<u32> = k.iter().map(|&c| c as u32).collect();
                    let ix = Tensor::from_vec(ix, k.len(), t.device())?;
                    t.index_select(&ix, unit_axis(&t))?
                }
                None => t,
            })
        })
        .collect()
}

/// The loss of the student's taps against the teacher's mapped taps (mean over taps).
pub fn tap_loss(student: &[Tensor], teacher: &[Tensor], loss: DistillLoss) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (s, t) in student.iter().zip(teacher) {
        if s.dims() != t.dims() {
            bail!(
                "a distilled tap of the pruned encoder has shape {:?}, the unpruned one's mapped through the kept units {:?}",
                s.dims(),
                t.dims()
            );
        }
        let n = s.dim(0)?;
        let (s, t) = (s.reshape((n, ()))?, t.reshape((n, ()))?);
        let l = match loss {
            DistillLoss::Cosine => {
                let dot = (&s * &t)?.sum(1)?;
                let norms = (s.sqr()?.sum(1)?.sqrt()? * t.sqr()?.sum(1)?.sqrt()?)?;
                let cos = dot.broadcast_div(&(norms + 1e-12)?)?;
                (1.0 - cos.mean_all()?.to_dtype(candle_core::DType::F32)?)?
            }
            DistillLoss::Mse => {
                let err = (&s - &t)?.sqr()?.sum_all()?;
                let energy = (t.sqr()?.sum_all()? + 1e-12)?;
                err.broadcast_div(&energy)?
            }
        };
        total = Some(match total {
            Some(acc) => (acc + l)?,
            None => l,
        });
    }
    let total = total.context("no tap to distill")?;
    Ok((total / student.len() as f64)?)
}

/// The student's taps at `idx`, checked against the kept units (a tap whose tensor's unit
/// axis is not its units, such as a ViT's heads, cannot be mapped).
fn check_taps(
    student: &Encoder,
    teacher: &Encoder,
    idx: &[usize],
    names: &[String],
    kept: &KeptUnits,
) -> Result<()> {
    for (&i, n) in idx.iter().zip(names) {
        let (su, tu) = (student.layers[i].units, teacher.layers[i].units);
        let want = kept.get(n).map(|k| k.len()).unwrap_or(tu);
        if su != want || teacher.layers[i].name != *n {
            bail!("taps: `{n}` has {su} units in the pruned encoder and {want} kept of {tu} in the unpruned one");
        }
    }
    Ok(())
}

/// The mean distillation loss on clean images of `points` (the student in eval mode).
fn eval_loss(
    student: &Encoder,
    teacher: &Encoder,
    x: &Tensor,
    idx: &[usize],
    names: &[String],
    kept: &KeptUnits,
    loss: DistillLoss,
) -> Result<f64> {
    let target = teacher_targets(teacher, x, idx, names, kept)?;
    let all = student.forward_taps(x)?;
    let mine: Vec<Tensor> = idx.iter().map(|&i| all[i].clone()).collect();
    for (&i, (s, n)) in idx.iter().zip(mine.iter().zip(names)) {
        let axis = unit_axis(s);
        if s.dim(axis)? != student.layers[i].units {
            bail!(
                "taps: `{n}` cannot be distilled: its output's features ({}) are not its units ({})",
                s.dim(axis)?,
                student.layers[i].units
            );
        }
    }
    Ok(tap_loss(&mine, &target, loss)?.to_scalar::<f32>()? as f64)
}

/// Distils `student` toward `teacher` on every image of `set`. `trainable`: the layers that
/// train (None: all); `augment`: the views' augmentation when the settings give none.
pub fn distill(
    student: &Encoder,
    teacher: &Encoder,
    kept: &KeptUnits,
    set: &ImageSet,
    settings: &DistillSettings,
    augment: &AugmentConfig,
    trainable: Option<Vec<String>>,
) -> Result<Distilled> {
    settings.validate()?;
    let t0 = Instant::now();
    let (idx, names) = tap_indices(student, &settings.taps)?;
    if student.layers.len() != teacher.layers.len() {
        bail!("the pruned encoder has other layers than the unpruned one");
    }
    check_taps(student, teacher, &idx, &names, kept)?;
    let cfg = TrainConfig {
        // SimCLR's two views per image and step; its projector is never in the loss, so
        // it never trains and is not written.
        framework: Framework::Simclr,
        arch: crate::train::init::TrainArch::named("resnet9")?,
        widths: Vec::new(),
        epochs: settings.epochs,
        batch: settings.batch,
        lr: settings.lr,
        optimizer: OptimizerConfig::new(OptimizerKind::Adamw, settings.weight_decay),
        warmup_epochs: settings.warmup_epochs,
        seed: settings.seed,
        split: SplitKind::All,
        split_seed: 0,
        temperature: 0.5,
        augment: settings.augment.clone().unwrap_or_else(|| augment.clone()),
        normalization: Normalization::default_for(set.kind, set.channels),
        save_dtype: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        init_from: None,
        trainable,
        planted: None,
        vit: Default::default(),
    };
    let eval_points: Vec<usize> = (0..set.len().min(EVAL_IMAGES)).collect();
    let eval_x = crate::train::clean_tensor(
        &AugmentConfig {
            size: cfg.augment.size,
            ..AugmentConfig::identity()
        },
        &cfg.normalization,
        set,
        &eval_points,
    )?;
    let loss_before = eval_loss(student, teacher, &eval_x, &idx, &names, kept, settings.loss)?;
    // The training runs on its own pool of `threads` threads: see `threads`.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.threads)
        .build()
        .context("recover: starting the training's threads")?;
    let (trainer, epoch_losses) = pool.install(|| -> Result<(Trainer, Vec<f64>)> {
        let mut trainer = Trainer::finetune(cfg, set, &set.source, student)?;
        let spe = trainer.steps_per_epoch();
        let b = trainer.batch_size();
        let warmup = (trainer.cfg.warmup_epochs * spe as f64).round() as u64;
        let total = trainer.total_steps();
        let mut epoch_losses = Vec::new();
        for epoch in 0..settings.epochs {
            let order = trainer.epoch_order(epoch);
            let mut sum = 0.0;
            for k in 0..spe {
                let (x, _) = trainer.batch_input(&order[k * b..(k + 1) * b], epoch)?;
                let target = teacher_targets(teacher, &x, &idx, &names, kept)?;
                let mut mode = Mode::Train(Vec::new());
                let all = trainer.model.encoder.forward_taps_mode(&x, &mut mode)?;
                let Mode::Train(stats) = mode else {
                    unreachable!("the mode stays Train")
                };
                let mine: Vec<Tensor> = idx.iter().map(|&i| all[i].clone()).collect();
                let loss = tap_loss(&mine, &target, settings.loss)?;
                let value = loss.to_scalar::<f32>()? as f64;
                if !value.is_finite() {
                    bail!(
                        "recover: the distillation loss became {value} at step {} (lower lr?)",
                        trainer.optimizer.steps + 1
                    );
                }
                let grads = loss.backward()?;
                let lr = lr_at(trainer.cfg.lr, trainer.optimizer.steps, warmup, total);
                trainer.optimizer.step(&trainer.model.vars, &grads, lr)?;
                trainer.model.update_running_stats(&stats)?;
                sum += value;
            }
            epoch_losses.push(sum / spe as f64);
        }
        Ok((trainer, epoch_losses))
    })?;
    let trained = trainer.model.tensors()?;
    let after = trainer.model.eval_encoder(&student.checkpoint.path)?;
    let loss_after = eval_loss(&after, teacher, &eval_x, &idx, &names, kept, settings.loss)?;
    // The encoder's tensors only (the SimCLR projector that carried the views is dropped).
    let tensors: BTreeMap<String, Tensor> = trained
        .into_iter()
        .filter(|(k, _)| student.checkpoint.tensors.contains_key(k) && !student.unused.contains(k))
        .collect();
    Ok(Distilled {
        tensors,
        report: DistillReport {
            loss: settings.loss,
            taps: names,
            epochs: settings.epochs,
            steps: trainer.optimizer.steps,
            images: trainer.points.len(),
            augment: if settings.augment.is_some() {
                "its own `augment`".into()
            } else {
                "the policy's augmentation (first line)".into()
            },
            loss_before,
            loss_after,
            epoch_losses,
            seconds: t0.elapsed().as_secs_f64(),
        },
    })
}
