//! Optimisers over named candle `Var`s, with their state as named tensors (so `--resume`
//! continues exactly), and the learning-rate schedule.
//!
//! Weight decay and (for LARS) the trust ratio apply to weights only (tensors of rank >= 2:
//! conv and linear weights), never to biases or BatchNorm parameters, as in SimCLR's LARS
//! and common practice.

use anyhow::{anyhow, bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum (PyTorch's convention), optionally Nesterov.
    Sgd,
    /// AdamW (decoupled weight decay), betas 0.9/0.999, eps 1e-8.
    Adamw,
    /// LARS (You et al. 2017) as in SimCLR: SGD momentum with a per-tensor trust ratio
    /// `eta * |w| / |g + wd w|` on weights; biases and BatchNorm use plain SGD momentum.
    Lars,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Lars => "lars",
        }
    }
}

impl crate::choice::Choice for OptimizerKind {
    const WHAT: &'static str = "optimizer";
    const ALL: &'static [Self] = &[
        OptimizerKind::Sgd,
        OptimizerKind::Adamw,
        OptimizerKind::Lars,
    ];
    fn name(self) -> &'static str {
        OptimizerKind::name(self)
    }
    fn about(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "SGD with momentum (PyTorch's convention), optionally Nesterov",
            OptimizerKind::Adamw => "AdamW (decoupled weight decay), betas 0.9/0.999, eps 1e-8",
            OptimizerKind::Lars => "LARS (You et al. 2017) as in SimCLR: SGD momentum with a per-tensor trust ratio on weights",
        }
    }
}
crate::named_choice!(OptimizerKind);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// LARS trust coefficient.
    pub eta: f64,
}

impl OptimizerConfig {
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Self {
        OptimizerConfig {
            kind,
            weight_decay,
            momentum: 0.9,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            eta: 0.02,
        }
    }
}

/// Whether weight decay (and LARS adaptation) applies to this tensor.
pub fn decays(t: &Tensor) -> bool {
    t.rank() >= 2
}

pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Per variable: `momentum` (SGD, LARS) or `m`, `v` (AdamW).
    pub state: BTreeMap<String, Vec<Tensor>>,
    /// Steps taken so far.
    pub steps: u64,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            state: BTreeMap::new(),
            steps: 0,
        }
    }

    fn state_names(&self) -> &'static [&'static str] {
        match self.config.kind {
            OptimizerKind::Sgd | OptimizerKind::Lars => &["momentum"],
            OptimizerKind::Adamw => &["m", "v"],
        }
    }

    /// One update of every variable that has a gradient, with learning rate `lr`.
    pub fn step(&mut self, vars: &BTreeMap<String, Var>, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let c = self.config.clone();
        for (name, var) in vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: arithmetic on a `Var` (or on a gradient that candle computed from
            // one) records graph nodes, and the state kept across steps would chain every
            // step's graph together (a leak of the parameters' size per step).
            let (p, g) = (&var.as_tensor().detach(), &g.detach());
            let decay = decays(p);
            let wd = if decay { c.weight_decay } else { 0.0 };
            let new = match c.kind {
                OptimizerKind::Sgd | OptimizerKind::Lars => {
                    let mut d = if wd != 0.0 {
                        (g + (p * wd)?)?
                    } else {
                        g.clone()
                    };
                    if c.kind == OptimizerKind::Lars && decay {
                        let pn = p.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
                        let gn = d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
                        let trust = if pn > 0.0 && gn > 0.0 {
                            c.eta * pn / gn
                        } else {
                            1.0
                        };
                        d = (d * trust)?;
                    }
                    let buf = match self.state.get(name) {
                        Some(s) => ((&s[0] * c.momentum)? + &d)?,
                        None => d.clone(),
                    };
                    let upd = if c.nesterov {
                        (&d + (&buf * c.momentum)?)?
                    } else {
                        buf.clone()
                    };
                    self.state.insert(name.clone(), vec![buf]);
                    (p - (upd * lr)?)?
                }
                OptimizerKind::Adamw => {
                    let t = self.steps as i32;
                    let (m, v) = match self.state.get(name) {
                        Some(s) => (s[0].clone(), s[1].clone()),
                        None => (p.zeros_like()?, p.zeros_like()?),
                    };
                    let m = ((m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
                    let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let mhat = (&m / (1.0 - c.beta1.powi(t)))?;
                    let vhat = (&v / (1.0 - c.beta2.powi(t)))?;
                    self.state.insert(name.clone(), vec![m, v]);
                    let decayed = (p * (1.0 - lr * wd))?;
                    (decayed - (mhat.div(&(vhat.sqrt()? + c.eps)?)? * lr)?)?
                }
            };
            var.set(&new)?;
        }
        Ok(())
    }

    /// The state as tensors named `optimizer.{var}.{momentum|m|v}`.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let names = self.state_names();
        let mut out = BTreeMap::new();
        for (var, ts) in &self.state {
            for (n, t) in names.iter().zip(ts) {
                out.insert(format!("optimizer.{var}.{n}"), t.clone());
            }
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, steps: u64) -> Result<()> {
        let names = self.state_names();
        self.state.clear();
        let mut vars: BTreeMap<String, Vec<Option<Tensor>>> = BTreeMap::new();
        for (k, t) in tensors {
            let Some(rest) = k.strip_prefix("optimizer.") else {
                continue;
            };
            let (var, which) = rest
                .rsplit_once('.')
                .ok_or_else(|| anyhow!("bad optimizer tensor name `{k}`"))?;
            let Some(i) = names.iter().position(|n| *n == which) else {
                bail!(
                    "optimizer tensor `{k}` does not belong to a {} optimizer",
                    self.config.kind.name()
                );
            };
            vars.entry(var.to_string())
                .or_insert_with(|| vec![None; names.len()])[i] = Some(t.clone());
        }
        for (var, ts) in vars {
            let ts: Option<Vec<Tensor>> = ts.into_iter().collect();
            let ts = ts.ok_or_else(|| anyhow!("optimizer state of `{var}` is incomplete"))?;
            self.state.insert(var, ts);
        }
        self.steps = steps;
        Ok(())
    }
}

/// Linear warm-up from `base / warmup` to `base` over `warmup` steps, then cosine decay to 0
/// at `total` steps; evaluated per step (`step` counts from 0).
pub fn lr_at(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}
