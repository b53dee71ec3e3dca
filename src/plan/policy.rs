//! Policy files: what to measure, what to prune, mask, freeze or train, how to evaluate and
//! where to write. YAML, unknown keys refused; every field has a default except `actions`.
//!
//! ```yaml
//! model: assets/models/resnet9-simclr-f.safetensors   # default: the embedded f
//! reference: assets/models/resnet9-simclr-g.safetensors  # only for layermem/dlayermem ranks
//! heads: 12                                          # ViT only: heads per block (as --heads)
//! data: {path: assets/fashion-mnist, split: train, points: 1000}
//! metrics: {views: 10, seed: 0, reduce: mean, batch: 256}
//! actions:
//!   - prune: {criterion: unitmem, end: low, fraction: 0.1, scope: per-layer, mode: remove}
//!   - freeze: {layers: ["*"]}
//!   - train: {by: dlayermem, top: 2}
//!   - recover: {loss: cosine, epochs: 20, lr: 0.001}  # after the pruning (docs/COMPRESSION.md)
//! schedule: {steps: 3, recover: {epochs: 5}}          # prune in 3 re-measured steps
//! evaluation: {probe: true, speed: true, knn: false,
//!              finetune: {data: assets/mnist, epochs: 10, lr: 0.001, seeds: [0, 1, 2]}}
//! output: {checkpoint: out/pruned.safetensors, json: out/report.json, chart: out/report.svg, report: out/report.html}
//! ```

use crate::data::augment::AugmentConfig;
use crate::data::Split;
use crate::metrics::unit_mem::Reduce;
use crate::output::OutputSet;
use crate::rewrite::PruneMode;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The encoder to rewrite. Default: the embedded SimCLR ResNet9 f.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// The reference encoder g for LayerMem ranks. Default: the embedded g when the model
    /// is the embedded f.
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// ViT: attention heads per block, as `--heads` (default: the checkpoint's metadata, else
    /// the table of published ViTs; pruning or scoring heads refuses a count guessed from
    /// the width).
    #[serde(default)]
    pub heads: Option<usize>,
    /// The points the scores are measured on.
    #[serde(default)]
    pub data: DataSpec,
    #[serde(default)]
    pub metrics: MetricSettings,
    #[serde(deserialize_with = "actions_from_maps")]
    pub actions: Vec<Action>,
    /// Prune in `steps` steps, re-measuring between them (docs/COMPRESSION.md).
    #[serde(default)]
    pub schedule: Option<crate::plan::schedule::Schedule>,
    #[serde(default)]
    pub evaluation: Evaluation,
    #[serde(default)]
    pub output: Output,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    /// Default: the embedded Fashion-MNIST subset.
    pub path: Option<PathBuf>,
    pub split: Split,
    /// N points drawn at random (seeded by metrics.seed). Default 1000; the candidates in
    /// f's metadata are used for LayerMem when neither `points`, `range` nor `indices` is set.
    pub points: Option<usize>,
    /// `START..END`
    pub range: Option<String>,
    /// A file of point indices.
    pub indices: Option<PathBuf>,
    /// The unseen points (control, probe test) as `--test-data`.
    pub test_data: Option<PathBuf>,
    /// A folder without train/ and test/: the held-out fraction, as `--holdout`.
    pub holdout: Option<f64>,
    /// The seed of `holdout` (default 0).
    pub holdout_seed: u64,
    /// Shorter side of every image, as `--resize`.
    pub resize: Option<usize>,
    /// Centre crop, as `--crop`.
    pub crop: Option<usize>,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            path: None,
            split: Split::Train,
            points: None,
            range: None,
            indices: None,
            test_data: None,
            holdout: None,
            holdout_seed: 0,
            resize: None,
            crop: None,
        }
    }
}

impl DataSpec {
    /// How the data is read, as the command-line flags say it.
    pub fn options(&self) -> crate::data::DataOptions {
        crate::data::DataOptions {
            test_data: self.test_data.clone(),
            holdout: self.holdout,
            holdout_seed: self.holdout_seed,
            resize: self.resize,
            crop: self.crop,
            default_size: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricSettings {
    /// K views per point (LayerMem: K pairs).
    pub views: usize,
    pub seed: u64,
    pub reduce: Reduce,
    pub batch: usize,
    /// Default: the augmentation the model records (`memprune.augment`), else
    /// docs/METRICS.md's SSL augmentation.
    pub augment: Option<AugmentConfig>,
}

impl Default for MetricSettings {
    fn default() -> Self {
        MetricSettings {
            views: crate::defaults::VIEWS,
            seed: crate::defaults::SEED,
            reduce: Reduce::Mean,
            batch: crate::defaults::BATCH,
            augment: None,
        }
    }
}

/// One step of a policy, written as a one-key map: `- prune: {...}`, `- freeze: {...}`,
/// `- train: {...}` or `- recover: {...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Action {
    Prune(PruneAction),
    Freeze(LayerSelect),
    Train(LayerSelect),
    /// Feature distillation of the pruned encoder toward the unpruned one, after the
    /// pruning ([`crate::train::distill`]).
    Recover(crate::train::distill::DistillSettings),
}

/// The YAML shape of an [`Action`] (serde_yaml reads enums as `!tags`; users write maps).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionMap {
    #[serde(default)]
    prune: Option<PruneAction>,
    #[serde(default)]
    freeze: Option<LayerSelect>,
    #[serde(default)]
    train: Option<LayerSelect>,
    #[serde(default)]
    recover: Option<crate::train::distill::DistillSettings>,
}

fn actions_from_maps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Action>, D::Error> {
    let maps: Vec<ActionMap> = Deserialize::deserialize(d)?;
    maps.into_iter()
        .enumerate()
        .map(|(i, m)| match (m.prune, m.freeze, m.train, m.recover) {
            (Some(p), None, None, None) => Ok(Action::Prune(p)),
            (None, Some(f), None, None) => Ok(Action::Freeze(f)),
            (None, None, Some(t), None) => Ok(Action::Train(t)),
            (None, None, None, Some(r)) => Ok(Action::Recover(r)),
            _ => Err(serde::de::Error::custom(format!(
                "actions[{i}]: each action is exactly one of `prune`, `freeze`, `train`, `recover`"
            ))),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// UnitMem of each channel (mean over the group's taps).
    Unitmem,
    /// UnitMem-excess of each channel: how far its peak response to a training point stands
    /// out beyond its peak on as many unseen points (measures UnitMem on both).
    UnitmemExcess,
    /// ClassMem (needs labels).
    Classmem,
    /// Uniform random scores from `seed`.
    Random,
    /// L1 norm of the producing filters (Li et al. 2017), the classic baseline.
    L1Norm,
    /// |gamma| of the BatchNorm after each channel (network slimming, Liu et al. 2017).
    BnScale,
    /// First-order Taylor, |sum over the unit's parameters of w dL/dw| on a label-free loss
    /// (`loss`; Molchanov et al. 2019).
    Taylor,
    /// Distance sum to the layer's other filters (geometric median, He et al. 2019).
    Fpgm,
    /// Squared magnitude over the sum of the squared magnitudes not smaller (LAMP, Lee et
    /// al. 2021).
    Lamp,
}

/// The label-free loss a `taylor` criterion differentiates (docs/COMPRESSION.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaylorLoss {
    /// SimCLR's NT-Xent on two views per point, through the checkpoint's projection head.
    Simclr,
    /// SimSiam's symmetric negative cosine, through its projector and predictor.
    Simsiam,
    /// MAE's masked-patch reconstruction, through its decoder.
    Mae,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// The highest scores (most memorizing units) go.
    Top,
    /// The lowest scores go.
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The amount is taken from each layer (coupling group).
    PerLayer,
    /// All selected channels are ranked together.
    Global,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneAction {
    pub criterion: Criterion,
    #[serde(default = "default_end")]
    pub end: End,
    /// Share of units to prune, in (0, 1). Give `fraction` or `count`.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Number of units to prune (per layer, or in all for `global`).
    #[serde(default)]
    pub count: Option<usize>,
    #[serde(default = "default_scope")]
    pub scope: Scope,
    /// Layer (coupling group) names or globs (`*`, `?`); a group matches if its name or
    /// any of its taps does. Default: all.
    #[serde(default = "all_layers")]
    pub layers: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "default_mode")]
    pub mode: PruneMode,
    /// Units kept in every layer at least.
    #[serde(default = "one")]
    pub min_keep: usize,
    /// Seed of the `random` criterion.
    #[serde(default)]
    pub seed: u64,
    /// Which kind of unit: `mlp` (a ViT's MLP neurons), `heads` (its attention heads) or
    /// `channels` (conv channels, a ViT's residual stream). Default: every kind.
    #[serde(default)]
    pub units: Option<UnitKind>,
    /// Also remove units whose removal changes what the kept ones compute (a ViT's residual
    /// stream, under LayerNorm); the report then says by how much.
    #[serde(default)]
    pub allow_inexact: bool,
    /// Every pruned group keeps a width that is a multiple of N (Torch-Pruning's rule: the
    /// kept count rounded down, never below `min_keep`; docs/COMPRESSION.md). A positive
    /// integer, checked by [`round_to_value`].
    #[serde(default)]
    pub round_to: Option<serde_yaml::Value>,
    /// `taylor` only: the label-free loss it differentiates. Default: the framework the
    /// checkpoint records (`memprune.framework`), said in the plan.
    #[serde(default)]
    pub loss: Option<TaylorLoss>,
}

/// `round_to` as a positive integer, or the reason it is not one.
pub fn round_to_value(v: &serde_yaml::Value) -> std::result::Result<usize, String> {
    match v.as_u64() {
        Some(0) => Err("0 is not a width multiple: give a positive integer".into()),
        Some(n) => Ok(n as usize),
        None => {
            let shown = serde_yaml::to_string(v)
                .map(|t| t.trim().to_string())
                .unwrap_or_default();
            Err(format!("`{shown}` is not a positive integer"))
        }
    }
}

/// The kinds of unit a prune action may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Mlp,
    Heads,
    Channels,
}

fn default_end() -> End {
    End::Low
}
fn default_scope() -> Scope {
    Scope::PerLayer
}
fn all_layers() -> Vec<String> {
    vec!["*".into()]
}
fn default_mode() -> PruneMode {
    PruneMode::Remove
}
fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    Layermem,
    Dlayermem,
}

/// Layers chosen by name (`layers`), by rank (`by` + `top`), or the last `last`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSelect {
    #[serde(default)]
    pub layers: Option<Vec<String>>,
    #[serde(default)]
    pub by: Option<Rank>,
    #[serde(default)]
    pub top: Option<usize>,
    #[serde(default)]
    pub last: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Evaluation {
    /// Linear-probe accuracy before and after.
    pub probe: bool,
    /// Probe training data. Default: the train split of the policy's data path.
    pub train: Option<PathBuf>,
    /// Probe test data. Default: the test split of the policy's data path.
    pub test: Option<PathBuf>,
    /// Measured forward images/s before and after.
    pub speed: bool,
    /// kNN top-1 and top-5 (DINO's protocol: k = 20, T = 0.07) before and after, on the
    /// probe's features.
    pub knn: bool,
    /// Fine-tune the layers the `train` actions chose (everything else frozen) with a fresh
    /// head on a downstream task; before: the head only.
    pub finetune: Option<FinetuneEval>,
}

/// `evaluation.finetune`: the downstream data and how to fine-tune (defaults: those of the
/// evaluator's fine-tuning settings, which also check the values).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneEval {
    /// The downstream task: train and test splits, labelled. Default: the embedded MNIST
    /// subset.
    #[serde(default)]
    pub data: Option<PathBuf>,
    #[serde(default)]
    pub epochs: Option<usize>,
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub weight_decay: Option<f64>,
    #[serde(default)]
    pub batch: Option<usize>,
    #[serde(default)]
    pub warmup_epochs: Option<f64>,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    #[serde(default)]
    pub augment: Option<crate::data::augment::AugmentConfig>,
}

impl FinetuneEval {
    pub fn data_path(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(crate::defaults::downstream)
    }
}

impl Default for Evaluation {
    fn default() -> Self {
        Evaluation {
            probe: true,
            train: None,
            test: None,
            speed: true,
            knn: false,
            finetune: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    /// The rewritten checkpoint. Default: `out/<policy file name>.safetensors`.
    pub checkpoint: Option<PathBuf>,
    /// Everything as JSON (optional).
    pub json: Option<PathBuf>,
    /// A chart (SVG) of UnitMem per layer and units pruned (optional).
    pub chart: Option<PathBuf>,
    /// The HTML report of `memprune report` on the policy's model, data and metric
    /// settings, with the plan and the before/after figures (optional).
    pub report: Option<PathBuf>,
}

/// A parsed policy with its source, for error messages.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub text: String,
    pub policy: Policy,
}

impl PolicyFile {
    /// The output set of a policy run: the policy file, its model, reference, data, indices and
    /// evaluation data read; its checkpoint, JSON, chart and HTML report written.
    pub fn outputs(&self) -> Result<OutputSet> {
        let (pf, p) = (self, &self.policy);
        let mut set = self.inputs();
        set.output(&pf.output_checkpoint(), "output.checkpoint")
            .map_err(|e| pf.error_at(None, "checkpoint", &e.to_string()))?;
        for (path, key) in [
            (&p.output.json, "json"),
            (&p.output.chart, "chart"),
            (&p.output.report, "report"),
        ] {
            if let Some(path) = path {
                set.output(path, &format!("output.{key}"))
                    .map_err(|e| pf.error_at(None, key, &e.to_string()))?;
            }
        }
        Ok(set)
    }

    /// The files the policy reads, as the inputs of an output set (no output yet).
    pub fn inputs(&self) -> OutputSet {
        let (pf, p) = (self, &self.policy);
        let mut set = OutputSet::new();
        set.input(&pf.path, "the policy file");
        set.input(
            &p.model.clone().unwrap_or_else(crate::defaults::model_f),
            "the model",
        );
        set.input(
            &p.reference.clone().unwrap_or_else(crate::defaults::model_g),
            "the reference",
        );
        let data = p.data.path.clone().unwrap_or_else(crate::defaults::data);
        set.input(&data, "the data");
        if let Some(t) = &self.policy.data.test_data {
            set.input(t, "data.test_data");
        }
        if let Some(i) = &p.data.indices {
            set.input(i, "the indices file");
        }
        for d in [&p.evaluation.train, &p.evaluation.test]
            .into_iter()
            .flatten()
        {
            set.input(d, "the evaluation data");
        }
        if let Some(ft) = &p.evaluation.finetune {
            set.input(&ft.data_path(), "the fine-tuning data");
        }
        set
    }

    /// Reads and checks a policy: YAML errors name the file, line and field.
    pub fn load(path: &Path) -> Result<PolicyFile> {
        let text = crate::input::read_yaml(path, "a policy")?;
        let policy: Policy = serde_yaml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?;
        let pf = PolicyFile {
            path: path.to_path_buf(),
            text,
            policy,
        };
        pf.validate()?;
        Ok(pf)
    }

    /// A one-line error at the line of `key` inside action `action` (or anywhere).
    pub fn error_at(&self, action: Option<usize>, key: &str, msg: &str) -> anyhow::Error {
        match self.line_of(action, key) {
            Some(l) => anyhow::anyhow!("{}: line {l}: {msg}", self.path.display()),
            None => anyhow::anyhow!("{}: {msg}", self.path.display()),
        }
    }

    /// The 1-based line where `key:` appears within action `action` (the action's list item
    /// under `actions:`), or anywhere when `action` is None.
    fn line_of(&self, action: Option<usize>, key: &str) -> Option<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        let (mut from, mut to) = (0, lines.len());
        if let Some(i) = action {
            let start = lines
                .iter()
                .position(|l| l.trim_start().starts_with("actions:"))?;
            let indent = |l: &str| l.len() - l.trim_start().len();
            let items: Vec<usize> = (start + 1..lines.len())
                .filter(|&k| lines[k].trim_start().starts_with("- "))
                .collect();
            let base = items.first().map(|&k| indent(lines[k]))?;
            let items: Vec<usize> = items
                .into_iter()
                .filter(|&k| indent(lines[k]) == base)
                .collect();
            from = *items.get(i)?;
            to = items.get(i + 1).copied().unwrap_or(lines.len());
        }
        let pat = format!("{key}:");
        (from..to).find(|&k| lines[k].contains(&pat)).map(|k| k + 1)
    }

    fn validate(&self) -> Result<()> {
        let p = &self.policy;
        if p.actions.is_empty() {
            return Err(self.error_at(None, "actions", "actions: the policy has no action"));
        }
        if p.metrics.views == 0 {
            return Err(self.error_at(None, "views", "metrics.views must be at least 1"));
        }
        if p.metrics.batch == 0 {
            return Err(self.error_at(None, "batch", "metrics.batch must be at least 1"));
        }
        let d = &p.data;
        let given: Vec<&str> = [
            ("points", d.points.is_some()),
            ("range", d.range.is_some()),
            ("indices", d.indices.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| *k)
        .collect();
        if given.len() > 1 {
            return Err(self.error_at(
                None,
                given[1],
                &format!(
                    "data: give at most one of `points`, `range` and `indices` (this policy gives {})",
                    given.join(" and ")
                ),
            ));
        }
        if d.points == Some(0) {
            return Err(self.error_at(None, "points", "data.points must be at least 1"));
        }
        d.options().validate().map_err(|e| {
            let e = e.to_string().replace("--test-data", "data.test_data");
            let e = e.replace("--", "data.");
            self.error_at(None, "data", &e)
        })?;
        if let Some(a) = &p.metrics.augment {
            a.validate()
                .map_err(|e| self.error_at(None, "augment", &format!("metrics.augment: {e}")))?;
        }
        if p.evaluation.finetune.is_some()
            && !p
                .actions
                .iter()
                .any(|a| matches!(a, Action::Freeze(_) | Action::Train(_)))
        {
            return Err(self.error_at(None, "finetune", "evaluation.finetune fine-tunes the layers the policy's `train` actions choose; this policy has no `freeze` or `train` action"));
        }
        self.validate_recovery()?;
        let mut mode = None;
        for (i, a) in p.actions.iter().enumerate() {
            match a {
                Action::Prune(pr) => {
                    match (pr.fraction, pr.count) {
                        (Some(_), Some(_)) | (None, None) => {
                            return Err(self.error_at(
                                Some(i),
                                "prune",
                                &format!(
                                "actions[{i}].prune: give exactly one of `fraction` and `count`"
                            ),
                            ))
                        }
                        (Some(f), None) if !(f > 0.0 && f < 1.0) => {
                            return Err(self.error_at(
                                Some(i),
                                "fraction",
                                &format!("actions[{i}].prune.fraction: {f} is outside (0, 1)"),
                            ))
                        }
                        (None, Some(0)) => {
                            return Err(self.error_at(
                                Some(i),
                                "count",
                                &format!("actions[{i}].prune.count must be at least 1"),
                            ))
                        }
                        _ => {}
                    }
                    if pr.min_keep == 0 {
                        return Err(self.error_at(Some(i), "min_keep", &format!("actions[{i}].prune.min_keep must be at least 1: a layer is never emptied")));
                    }
                    if pr.layers.is_empty() {
                        return Err(self.error_at(Some(i), "layers", &format!("actions[{i}].prune.layers is empty: it selects no layer (default: all)")));
                    }
                    if mode.is_some_and(|m| m != pr.mode) {
                        return Err(self.error_at(Some(i), "mode", &format!("actions[{i}].prune.mode: all prune actions of a policy must use the same mode")));
                    }
                    mode = Some(pr.mode);
                    if let Some(v) = &pr.round_to {
                        round_to_value(v).map_err(|e| {
                            self.error_at(
                                Some(i),
                                "round_to",
                                &format!("actions[{i}].prune.round_to: {e}"),
                            )
                        })?;
                    }
                    if pr.loss.is_some() && pr.criterion != Criterion::Taylor {
                        return Err(self.error_at(Some(i), "loss", &format!("actions[{i}].prune.loss: only the `taylor` criterion differentiates a loss")));
                    }
                }
                Action::Recover(_) => {}
                Action::Freeze(s) | Action::Train(s) => {
                    let verb = if matches!(a, Action::Freeze(_)) {
                        "freeze"
                    } else {
                        "train"
                    };
                    let ok = matches!(
                        (&s.layers, s.by, s.top, s.last),
                        (Some(_), None, None, None)
                            | (None, Some(_), Some(_), None)
                            | (None, None, None, Some(_))
                    );
                    if !ok {
                        return Err(self.error_at(
                            Some(i),
                            verb,
                            &format!(
                                "actions[{i}].{verb}: give `layers`, or `by` with `top`, or `last`"
                            ),
                        ));
                    }
                    for (key, n) in [("top", s.top), ("last", s.last)] {
                        if n == Some(0) {
                            return Err(self.error_at(
                                Some(i),
                                key,
                                &format!("actions[{i}].{verb}.{key} must be at least 1: 0 selects no layer"),
                            ));
                        }
                    }
                    if s.layers.as_ref().is_some_and(|l| l.is_empty()) {
                        return Err(self.error_at(
                            Some(i),
                            "layers",
                            &format!("actions[{i}].{verb}.layers is empty: it selects no layer"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `recover` and `schedule`: settings in range, a recovery after the pruning it
    /// recovers from, units removed (masked units would come back to life in training).
    fn validate_recovery(&self) -> Result<()> {
        let p = &self.policy;
        let prunes: Vec<usize> = (0..p.actions.len())
            .filter(|&i| matches!(p.actions[i], Action::Prune(_)))
            .collect();
        let masks = p
            .actions
            .iter()
            .any(|a| matches!(a, Action::Prune(pr) if pr.mode == PruneMode::Mask));
        let mut seen = None;
        for (i, a) in p.actions.iter().enumerate() {
            let Action::Recover(r) = a else { continue };
            let at = |key: &str, msg: String| self.error_at(Some(i), key, &msg);
            if let Some(first) = seen {
                return Err(at("recover", format!("actions[{i}].recover: a policy recovers once, after its pruning (actions[{first}] already does)")));
            }
            seen = Some(i);
            if let Err(e) = r.validate() {
                let key = first_word(&e.to_string());
                return Err(at(&key, format!("actions[{i}].recover.{e:#}")));
            }
            match prunes.last() {
                None => return Err(at("recover", format!("actions[{i}].recover distils a pruned encoder toward the unpruned one; this policy prunes nothing"))),
                Some(&last) if last > i => return Err(at("recover", format!("actions[{i}].recover comes before actions[{last}].prune: a recovery follows the pruning it recovers from"))),
                _ => {}
            }
            if masks {
                return Err(at("recover", format!("actions[{i}].recover needs `mode: remove`: training would bring masked units back to life")));
            }
        }
        if let Some(s) = &p.schedule {
            let at = |key: &str, msg: String| self.error_at(None, key, &msg);
            if s.steps == 0 {
                return Err(at(
                    "steps",
                    "schedule.steps must be at least 1, got 0".into(),
                ));
            }
            if let Some(r) = &s.recover {
                if let Err(e) = r.validate() {
                    let key = first_word(&e.to_string());
                    return Err(at(&key, format!("schedule.recover.{e:#}")));
                }
            }
            if prunes.is_empty() {
                return Err(at(
                    "schedule",
                    "schedule: prunes in steps, but this policy has no prune action".into(),
                ));
            }
            if masks && s.steps > 1 {
                return Err(at("schedule", "schedule needs `mode: remove`: a step re-measures the model the previous step left, and masked units would be measured again".into()));
            }
            if s.steps > 1
                && p.actions
                    .iter()
                    .any(|a| matches!(a, Action::Freeze(l) | Action::Train(l) if l.by.is_some()))
            {
                return Err(at("schedule", "schedule: layers chosen `by` LayerMem rank are measured against the reference on the unpruned model only; name them with `layers` or `last`".into()));
            }
        }
        Ok(())
    }

    /// The policy's `recover` action, with its index.
    pub fn recover_action(&self) -> Option<(usize, &crate::train::distill::DistillSettings)> {
        self.policy
            .actions
            .iter()
            .enumerate()
            .find_map(|(i, a)| match a {
                Action::Recover(r) => Some((i, r)),
                _ => None,
            })
    }

    /// Steps of the schedule (1 without one).
    pub fn steps(&self) -> usize {
        self.policy.schedule.as_ref().map(|s| s.steps).unwrap_or(1)
    }

    /// The checkpoint to write: `output.checkpoint`, or `out/<policy stem>.safetensors`.
    pub fn output_checkpoint(&self) -> PathBuf {
        self.policy.output.checkpoint.clone().unwrap_or_else(|| {
            let stem = self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "policy".into());
            PathBuf::from("out").join(format!("{stem}.safetensors"))
        })
    }

    /// Does any action rank by UnitMem-excess (so UnitMem needs its control)?
    pub fn needs_unit_control(&self) -> bool {
        self.policy
            .actions
            .iter()
            .any(|a| matches!(a, Action::Prune(p) if p.criterion == Criterion::UnitmemExcess))
    }

    /// Does any action need UnitMem / ClassMem / LayerMem?
    pub fn needs(&self) -> (bool, bool, bool) {
        let mut n = (false, false, false);
        for a in &self.policy.actions {
            match a {
                Action::Prune(p)
                    if matches!(p.criterion, Criterion::Unitmem | Criterion::UnitmemExcess) =>
                {
                    n.0 = true
                }
                Action::Prune(p) if p.criterion == Criterion::Classmem => n.1 = true,
                Action::Freeze(s) | Action::Train(s) if s.by.is_some() => n.2 = true,
                _ => {}
            }
        }
        n
    }
}

/// The key an error line starts with (`epochs must be ...` -> `epochs`).
fn first_word(s: &str) -> String {
    s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_string()
}

/// serde_yaml errors may span lines; users get one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Glob match with `*` (any run) and `?` (one character), in O(pattern x name) time at
/// worst and no recursion: on a mismatch only the last `*` is retried one character further
/// (a later `*` subsumes every retry of an earlier one), so a pattern of hundreds of `*`
/// cannot backtrack exponentially.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Errors unless `path` exists; policies name files relative to the working directory.
pub fn check_exists(pf: &PolicyFile, key: &str, path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(pf.error_at(
            None,
            key,
            &format!("{key}: {} does not exist", path.display()),
        ));
    }
    Ok(())
}
