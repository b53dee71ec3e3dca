//! ClassMem: the supervised counterpart of UnitMem, over class means instead of points.
//!
//! ```text
//! mu_u(C_j)   = mean of mu_u(x) over the points x of class j
//! ClassMem(u) = (max_j mu_u(C_j) - mean_{j != argmax} mu_u(C_j)) / (sum of the two)
//! ```
//!
//! Supervised encoders score high here and low on UnitMem; SSL encoders the reverse.
//! Streaming: per class an exact sum ([`ExactSum`]) and a count, O(classes x units) memory;
//! shards merge bit for bit.

use crate::metrics::exact_sum::ExactSum;
use crate::metrics::summary::{LayerSummary, UnitScore};
use crate::metrics::unit_mem::UnitMemLayer;
use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMemAccumulator {
    pub classes: usize,
    /// sums[l][class][u]
    pub sums: Vec<Vec<Vec<ExactSum>>>,
    pub counts: Vec<usize>,
    pub signed: Vec<bool>,
}

impl ClassMemAccumulator {
    pub fn new(units: &[usize], classes: usize) -> Self {
        ClassMemAccumulator {
            classes,
            sums: units
                .iter()
                .map(|&n| vec![vec![ExactSum::new(); n]; classes])
                .collect(),
            counts: vec![0; classes],
            signed: vec![false; units.len()],
        }
    }

    /// Adds a point of class `label`; `mu[l][u]` as in UnitMem's Eq. 5.
    pub fn push(&mut self, label: usize, mu: &[Vec<f64>]) -> Result<()> {
        if label >= self.classes {
            bail!("label {label} is out of range for {} classes", self.classes);
        }
        for (l, m) in mu.iter().enumerate() {
            for (s, &v) in self.sums[l][label].iter_mut().zip(m) {
                s.add(v);
                if v < 0.0 {
                    self.signed[l] = true;
                }
            }
        }
        self.counts[label] += 1;
        Ok(())
    }

    pub fn merge(&mut self, other: &ClassMemAccumulator) -> Result<()> {
        if self.classes != other.classes || self.sums.len() != other.sums.len() {
            bail!("cannot merge ClassMem results of different shapes");
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            for (ca, cb) in a.iter_mut().zip(b) {
                for (x, y) in ca.iter_mut().zip(cb) {
                    x.merge(y);
                }
            }
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.signed.iter_mut().zip(&other.signed) {
            *a |= b;
        }
        Ok(())
    }

    /// Scores per layer; classes with no point are left out (and named in the error if fewer
    /// than two remain). `argmax` of each unit is a class index.
    pub fn finish(&self, names: &[String]) -> Result<Vec<UnitMemLayer>> {
        let present: Vec<usize> = (0..self.classes).filter(|&c| self.counts[c] > 0).collect();
        if present.len() < 2 {
            bail!(
                "ClassMem needs points of at least 2 classes, got {}",
                present.len()
            );
        }
        Ok(self
            .sums
            .iter()
            .zip(names)
            .zip(&self.signed)
            .map(|((sums, name), &signed)| {
                let units: Vec<UnitScore> =
                    (0..sums[0].len())
                        .map(|u| {
                            let means: Vec<(usize, f64)> = present
                                .iter()
                                .map(|&c| (c, sums[c][u].value() / self.counts[c] as f64))
                                .collect();
                            let (arg, max) = means.iter().fold(
                                (usize::MAX, f64::NEG_INFINITY),
                                |acc, &(c, m)| if m > acc.1 { (c, m) } else { acc },
                            );
                            let rest = (means.iter().map(|m| m.1).sum::<f64>() - max)
                                / (means.len() - 1) as f64;
                            UnitScore::new(max, rest, arg)
                        })
                        .collect();
                UnitMemLayer {
                    name: name.clone(),
                    signed,
                    summary: LayerSummary::of(&units),
                    units,
                    control: None,
                    top: None,
                }
            })
            .collect())
    }
}
