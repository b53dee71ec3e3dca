//! The numbers of a training run, checked before any work: `--epochs 0` would write an
//! untrained checkpoint and `--warmup-epochs NaN` or a NaN rate would train to NaN weights,
//! both with exit code 0. Errors name `memprune train`'s flags.

use crate::train::TrainConfig;
use anyhow::{bail, Result};

fn finite(flag: &str, v: f64, ok: impl Fn(f64) -> bool, want: &str) -> Result<()> {
    if !(v.is_finite() && ok(v)) {
        bail!("{flag} must be a finite number {want}, got {v}");
    }
    Ok(())
}

/// Refuses settings that cannot train.
pub fn check_numbers(cfg: &TrainConfig) -> Result<()> {
    if cfg.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    finite("--lr", cfg.lr, |v| v > 0.0, "> 0")?;
    finite("--warmup-epochs", cfg.warmup_epochs, |v| v >= 0.0, ">= 0")?;
    finite("--temperature", cfg.temperature, |v| v > 0.0, "> 0")?;
    let o = &cfg.optimizer;
    finite("--wd", o.weight_decay, |v| v >= 0.0, ">= 0")?;
    finite(
        "--momentum",
        o.momentum,
        |v| (0.0..1.0).contains(&v),
        "in [0, 1)",
    )?;
    finite("--lars-eta", o.eta, |v| v > 0.0, "> 0")?;
    Ok(())
}
