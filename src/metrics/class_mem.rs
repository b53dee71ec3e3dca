//! ClassMem: the supervised counterpart of UnitMem, over class means instead of points.
//!
//! ```text
//! mu_u(C_j)   = mean of mu_u(x) over the points x of class j
//! ClassMem(u) = (max_j mu_u(C_j) - mean_{j != argmax} mu_u(C_j)) / (sum of the two)
//! ```
//!
//! Supervised encoders score high here and low on UnitMem; SSL encoders the reverse.
//! Signed layers as UnitMem's: measured from the layer's floor, unbounded layers not scored.
//! Streaming: per class an exact sum ([`ExactSum`]) and a count, O(classes x units) memory;
//! shards merge bit for bit.

use crate::metrics::exact_sum::ExactSum;
use crate::metrics::summary::{LayerSummary, UnitScore};
use crate::metrics::unit_mem::UnitMemLayer;
use crate::model::act_floor::ActFloor;
use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMemAccumulator {
    pub classes: usize,
    /// sums[l][class][u]
    pub sums: Vec<Vec<Vec<ExactSum>>>,
    pub counts: Vec<usize>,
    pub signed: Vec<bool>,
    /// Per layer, what act_u is measured from.
    pub floors: Vec<ActFloor>,
}

impl ClassMemAccumulator {
    /// Every act_u non-negative (Eq. 8 exactly).
    pub fn new(units: &[usize], classes: usize) -> Self {
        Self::with_floors(units, &vec![ActFloor::Zero; units.len()], classes)
    }

    /// Layer `l` measured from `floors[l]`.
    pub fn with_floors(units: &[usize], floors: &[ActFloor], classes: usize) -> Self {
        assert_eq!(units.len(), floors.len(), "one floor per layer");
        ClassMemAccumulator {
            floors: floors.to_vec(),
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
        let shape = |a: &ClassMemAccumulator| -> Vec<Vec<usize>> {
            a.sums
                .iter()
                .map(|l| l.iter().map(Vec::len).collect())
                .collect()
        };
        if self.classes != other.classes
            || self.counts.len() != other.counts.len()
            || self.signed.len() != other.signed.len()
            || shape(self) != shape(other)
            || self.floors != other.floors
        {
            bail!(
                "ClassMem results of different shapes ({} classes and {} layers against {} and {})",
                other.classes,
                other.sums.len(),
                self.classes,
                self.sums.len()
            );
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

    /// The layers [`ClassMemAccumulator::finish`] leaves out: no known lower bound of act_u.
    pub fn unscored(&self, names: &[String]) -> Vec<String> {
        crate::metrics::unit_mem::unscored(&self.floors, names)
    }

    /// Scores per scored layer; classes with no point are left out (and named in the error if fewer
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
            .zip(&self.floors)
            .filter_map(|(((sums, name), &signed), f)| Some((sums, name, signed, f.value()?)))
            .map(|(sums, name, signed, floor)| {
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
                            UnitScore::from_floor(max, rest, arg, floor)
                        })
                        .collect();
                UnitMemLayer {
                    name: name.clone(),
                    signed,
                    act_floor: floor,
                    summary: LayerSummary::of(&units),
                    units,
                    control: None,
                }
            })
            .collect())
    }
}
