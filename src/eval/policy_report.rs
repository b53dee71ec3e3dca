//! What a policy run reports: the model before and after as evaluated, the steps of a
//! schedule and their recovery. Plain data, below the report that renders it and the
//! policy job (`jobs::policy`) that fills it in.

use crate::data::augment_choice::ChosenAugment;
use crate::eval::cost::{Cost, SpeedComparison};
use crate::model::Encoder;
use crate::plan::Plan;
use crate::train::distill::DistillReport;
use serde::Serialize;
use std::path::PathBuf;

/// The model before or after, as evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluated {
    pub checkpoint: PathBuf,
    pub cost: Cost,
    /// Linear-probe top-1 on the test split, when evaluated.
    pub probe_accuracy: Option<f64>,
    /// kNN on the probe's features, when evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn: Option<crate::eval::knn::KnnResult>,
    /// Downstream fine-tuning, when evaluated: before, the head only; after, the layers the
    /// policy marked trainable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune: Option<crate::eval::finetune::FinetuneResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub policy: PathBuf,
    /// The augmentation the scores' views were made with, and where it came from.
    pub augment: ChosenAugment,
    pub plan: Plan,
    pub before: Evaluated,
    pub after: Evaluated,
    /// When inexact units were removed (`allow_inexact`): how far the removed model's
    /// representation is from the masked one's (relative L2 over images of the data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inexact_change: Option<InexactChange>,
    /// The steps of a schedule and the recovery (feature distillation), when the policy
    /// has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// The model after the pruning and before its final recovery (for its probe).
    #[serde(skip)]
    pub pruned: Option<Encoder>,
    /// The forward speed of before and after, timed alternately (when `evaluation.speed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<SpeedComparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InexactChange {
    pub groups: Vec<String>,
    pub images: usize,
    /// ||removed - masked|| / ||masked|| of the `pool` features.
    pub relative_l2: f64,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    /// Units removed by this step, and left after it (all coupling groups).
    pub units_pruned: usize,
    pub units_left: usize,
    /// The recovery after this step, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover: Option<DistillReport>,
}

/// What the steps and the recovery did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub steps: Vec<StepReport>,
    /// The policy's `recover` action, after the last step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover: Option<DistillReport>,
    /// Linear-probe top-1 of the model after the pruning, before its final recovery (when
    /// there is one and the probe runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_probe_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned_knn: Option<crate::eval::knn::KnnResult>,
}
