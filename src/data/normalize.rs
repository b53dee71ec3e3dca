//! Per-channel normalisation `(x - mean) / std` applied to every view, and the usual
//! statistics of the known datasets (so runs match how the encoders were trained).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::DatasetKind;

/// Per-channel mean and standard deviation, for pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// These statistics with the user's `--mean` / `--std` put in their place, checked
    /// against the data's `channels`.
    pub fn overridden(
        mut self,
        mean: Option<&[f32]>,
        std: Option<&[f32]>,
        channels: usize,
    ) -> Result<Normalization> {
        if let Some(m) = mean {
            self.mean = m.to_vec();
        }
        if let Some(s) = std {
            self.std = s.to_vec();
        }
        self.validate(channels).context("--mean/--std")?;
        Ok(self)
    }

    /// The customary statistics of `kind`: MNIST 0.1307/0.3081, Fashion-MNIST
    /// 0.2860/0.3530, CIFAR-10 and CIFAR-100 their training-set statistics, anything else
    /// ImageNet's (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225), or 0.5/0.5 when it has one
    /// channel. A one-value default is repeated when the data has more channels (MNIST
    /// saved as RGB); a 3-value default falls back to 0.5/0.5 for other channel counts.
    pub fn default_for(kind: DatasetKind, channels: usize) -> Self {
        let (mean, std): (&[f32], &[f32]) = match kind {
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetKind::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            DatasetKind::Cifar100 => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
            DatasetKind::Folder | DatasetKind::Unknown => {
                (&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225])
            }
        };
        if mean.len() == channels {
            Normalization {
                mean: mean.to_vec(),
                std: std.to_vec(),
            }
        } else if mean.len() == 1 {
            Normalization {
                mean: vec![mean[0]; channels],
                std: vec![std[0]; channels],
            }
        } else {
            Normalization {
                mean: vec![0.5; channels],
                std: vec![0.5; channels],
            }
        }
    }

    /// Identity normalisation (mean 0, std 1): views stay in [0, 1].
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Checks one mean and one std per channel, finite means, and finite positive stds.
    pub fn validate(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            bail!(
                "normalisation has {} means and {} stds, the data has {channels} channels",
                self.mean.len(),
                self.std.len()
            );
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            bail!("normalisation mean {m} is not finite");
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            bail!("normalisation std {s} must be finite and > 0");
        }
        Ok(())
    }
}
