//! UnitMem: how much a single unit specialises on a single training point.
//!
//! ```text
//! mu_u(x)    = mean over K views x' ~ Aug(x) of act_u(x')            (Eq. 5)
//! mu_max,u   = max_i mu_u(x_i),  k = argmax_i                         (Eq. 6)
//! mu_-max,u  = mean of mu_u(x_i) over i != k                          (Eq. 7)
//! UnitMem(u) = (mu_max,u - mu_-max,u) / (mu_max,u + mu_-max,u)        (Eq. 8)
//! ```
//!
//! Signed layers: act_u is measured from the layer's known lower bound `floor`
//! ([`ActFloor`]): `(mu_max - mu_-max) / ((mu_max - floor) + (mu_-max - floor))`, in [0, 1];
//! floor 0 (ReLU, norms) is Eq. 8 exactly. Layers with no known bound are not scored
//! ([`UnitMemAccumulator::finish`] leaves them out; [`UnitMemAccumulator::unscored`] names
//! them). The floor is applied at the end, so the accumulated state and its merge are those
//! of the raw act_u.
//!
//! The default (`mean`) is a streaming reduction: per unit a running max, its argmax and a
//! running sum, so memory is O(units) whatever the number of points, and partial results over
//! disjoint shards merge exactly ([`UnitMemAccumulator::merge`]). `median` (the paper's
//! appendix, the authors' script) keeps every value: O(points x units).
//! Ties for the maximum go to the smallest point index and the sum is exact (rounded once,
//! [`ExactSum`]), so the result does not depend on the order points arrive in nor on how
//! they are split into shards: merged shards give the single run's numbers bit for bit.

use crate::metrics::exact_sum::ExactSum;
use crate::metrics::summary::{median, LayerSummary, UnitScore};
use crate::model::act_floor::ActFloor;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How `mu_-max` is taken over the other N - 1 points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    /// The paper's Eq. 7 (streaming, O(units) memory).
    Mean,
    /// The paper's appendix and the authors' script (O(points x units) memory).
    Median,
}

/// The running state of one layer (serialised with f64s as bit patterns, for partials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAccumulator {
    #[serde(with = "crate::metrics::f64_bits::vec")]
    pub max: Vec<f64>,
    pub argmax: Vec<usize>,
    pub sum: Vec<ExactSum>,
    pub points: usize,
    /// Some activation was negative: the ratio is not bounded (docs/METRICS.md's "signed").
    pub signed: bool,
    /// `median` only: every (point, mu) per unit.
    #[serde(with = "crate::metrics::f64_bits::opt_pairs")]
    pub values: Option<Vec<Vec<(usize, f64)>>>,
}

impl LayerAccumulator {
    fn new(units: usize, reduce: Reduce) -> Self {
        LayerAccumulator {
            max: vec![f64::NEG_INFINITY; units],
            argmax: vec![usize::MAX; units],
            sum: vec![ExactSum::new(); units],
            points: 0,
            signed: false,
            values: (reduce == Reduce::Median).then(|| vec![Vec::new(); units]),
        }
    }

    fn push(&mut self, point: usize, mu: &[f64]) {
        for (u, &m) in mu.iter().enumerate() {
            if m > self.max[u] || (m == self.max[u] && point < self.argmax[u]) {
                self.max[u] = m;
                self.argmax[u] = point;
            }
            self.sum[u].add(m);
            if m < 0.0 {
                self.signed = true;
            }
            if let Some(v) = &mut self.values {
                v[u].push((point, m));
            }
        }
        self.points += 1;
    }

    fn merge(&mut self, other: &LayerAccumulator) {
        for u in 0..self.max.len() {
            let (m, p) = (other.max[u], other.argmax[u]);
            if m > self.max[u] || (m == self.max[u] && p < self.argmax[u]) {
                self.max[u] = m;
                self.argmax[u] = p;
            }
            self.sum[u].merge(&other.sum[u]);
        }
        self.points += other.points;
        self.signed |= other.signed;
        if let (Some(a), Some(b)) = (&mut self.values, &other.values) {
            for (x, y) in a.iter_mut().zip(b) {
                x.extend_from_slice(y);
            }
        }
    }

    fn finish(&self, floor: f64) -> Vec<UnitScore> {
        (0..self.max.len())
            .map(|u| {
                let rest = match &self.values {
                    None => (self.sum[u].value() - self.max[u]) / (self.points - 1) as f64,
                    Some(v) => {
                        let mut others: Vec<f64> = v[u]
                            .iter()
                            .filter(|(p, _)| *p != self.argmax[u])
                            .map(|(_, m)| *m)
                            .collect();
                        median(&mut others)
                    }
                };
                UnitScore::from_floor(self.max[u], rest, self.argmax[u], floor)
            })
            .collect()
    }
}

/// UnitMem of every unit of every layer, fed one point at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitMemAccumulator {
    pub reduce: Reduce,
    /// Per layer, what act_u is measured from.
    pub floors: Vec<ActFloor>,
    pub layers: Vec<LayerAccumulator>,
}

/// The UnitMem of one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitMemLayer {
    pub name: String,
    pub signed: bool,
    /// What act_u is measured from (0: Eq. 8 exactly; GELU's minimum for a ViT's fc1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub act_floor: f64,
    pub summary: LayerSummary,
    pub units: Vec<UnitScore>,
    /// The same units on an equal number of unseen points, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<crate::metrics::unit_control_summary::UnitControl>,
}

impl UnitMemAccumulator {
    /// `units[l]` is the number of units of layer `l`; every act_u non-negative (Eq. 8).
    pub fn new(units: &[usize], reduce: Reduce) -> Self {
        Self::with_floors(units, &vec![ActFloor::Zero; units.len()], reduce)
    }

    /// As [`UnitMemAccumulator::new`], layer `l` measured from `floors[l]`.
    pub fn with_floors(units: &[usize], floors: &[ActFloor], reduce: Reduce) -> Self {
        assert_eq!(units.len(), floors.len(), "one floor per layer");
        UnitMemAccumulator {
            reduce,
            floors: floors.to_vec(),
            layers: units
                .iter()
                .map(|&n| LayerAccumulator::new(n, reduce))
                .collect(),
        }
    }

    /// Adds point `point` (its global index); `mu[l][u]` is `mu_u(x)` of Eq. 5.
    pub fn push(&mut self, point: usize, mu: &[Vec<f64>]) {
        for (acc, m) in self.layers.iter_mut().zip(mu) {
            acc.push(point, m);
        }
    }

    /// Adds the result of a disjoint shard of points. Exact: max of maxes, sum of sums.
    pub fn merge(&mut self, other: &UnitMemAccumulator) -> Result<()> {
        if self.reduce != other.reduce
            || self.floors != other.floors
            || self.layers.len() != other.layers.len()
            || self
                .layers
                .iter()
                .zip(&other.layers)
                .any(|(a, b)| a.max.len() != b.max.len())
        {
            bail!("UnitMem results of other layers, unit counts or reduction");
        }
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            a.merge(b);
        }
        Ok(())
    }

    pub fn points(&self) -> usize {
        self.layers.first().map(|l| l.points).unwrap_or(0)
    }

    /// The layers [`UnitMemAccumulator::finish`] leaves out: no known lower bound of act_u.
    pub fn unscored(&self, names: &[String]) -> Vec<String> {
        unscored(&self.floors, names)
    }

    /// Scores per scored layer (those with a floor); `names[l]` names layer `l`. Needs at
    /// least two points.
    pub fn finish(&self, names: &[String]) -> Result<Vec<UnitMemLayer>> {
        if self.points() < 2 {
            bail!("UnitMem needs at least 2 points, got {}", self.points());
        }
        Ok(self
            .layers
            .iter()
            .zip(names)
            .zip(&self.floors)
            .filter_map(|((acc, name), floor)| Some((acc, name, floor.value()?)))
            .map(|(acc, name, floor)| {
                let units = acc.finish(floor);
                UnitMemLayer {
                    name: name.clone(),
                    signed: acc.signed,
                    act_floor: floor,
                    summary: LayerSummary::of(&units),
                    units,
                    control: None,
                }
            })
            .collect())
    }
}

/// The names of layers whose floor is unknown (not scored).
pub fn unscored(floors: &[ActFloor], names: &[String]) -> Vec<String> {
    floors
        .iter()
        .zip(names)
        .filter(|(f, _)| f.value().is_none())
        .map(|(_, n)| n.clone())
        .collect()
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
