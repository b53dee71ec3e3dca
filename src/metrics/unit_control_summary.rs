//! What the control of one layer's UnitMem/ClassMem holds (computed by
//! [`crate::metrics::unit_control`]); kept apart so that [`crate::metrics::unit_mem`] can
//! carry it without importing the computation.

use crate::metrics::bootstrap::Interval;
use crate::metrics::summary::LayerSummary;
use serde::{Deserialize, Serialize};

/// One layer's control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitControl {
    /// Points on each side.
    pub points: usize,
    /// The layer's scores on the unseen points (UnitMem or ClassMem).
    pub unseen: LayerSummary,
    /// Mean score over units on the training points and on the unseen points, with
    /// intervals over units.
    pub mean_ci: Interval,
    pub unseen_mean_ci: Interval,
    /// Mean over units of (training score - unseen score), with its interval.
    pub mean_difference: f64,
    pub mean_difference_ci: Interval,
    /// Share of units above 0.5 on the unseen points, with its interval; the training
    /// side's with its interval.
    pub share_above_half_ci: Interval,
    pub unseen_share_above_half_ci: Interval,
    /// UnitMem-excess of every unit (UnitMem only; empty for ClassMem).
    #[serde(default)]
    pub excess: Vec<f64>,
    pub excess_mean: Option<f64>,
    /// 95 % interval of the mean excess from relabelling the points (see
    /// [`crate::metrics::unit_control`]): per layer.
    pub excess_mean_ci: Option<Interval>,
    /// The spread of the units' excess (bootstrap over units): not an uncertainty of the
    /// mean, since the units answer to the same points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excess_units_ci: Option<Interval>,
    /// Permutation p-value of mean excess = 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excess_p: Option<f64>,
    /// Holm's family-wise star over the layers (5 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excess_star: Option<bool>,
}
