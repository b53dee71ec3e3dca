//! `memprune experiment prune`: the paper's Table 6. Prune the units with the highest
//! UnitMem, random units (several draws) or the lowest, per layer at 10 % and 20 % and over
//! the whole network at 10 %, and compare linear-probe accuracy.

use crate::checkpoint::Checkpoint;
use crate::data::ImageSet;
use crate::eval::probe::{self, ProbeSettings};
use crate::metrics::unit_mem::UnitMemLayer;
use crate::model::coupling::{coupling_groups, CouplingGroup};
use crate::model::{Encoder, LoadOptions};
use crate::plan::policy::{Action, Criterion, End, Policy, PruneAction, Scope};
use crate::plan::{make_plan, PolicyFile, Scores};
use crate::rewrite::{prune_tensors, PruneMode};
use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

/// One row of Table 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub scope: Scope,
    pub fraction_pct: u32,
}

/// The paper's three settings.
pub const SETTINGS: [Setting; 3] = [
    Setting {
        scope: Scope::PerLayer,
        fraction_pct: 10,
    },
    Setting {
        scope: Scope::PerLayer,
        fraction_pct: 20,
    },
    Setting {
        scope: Scope::Global,
        fraction_pct: 10,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Top,
    Random,
    Low,
    /// The highest UnitMem-excess (memprune's control-corrected score; not in the paper).
    TopExcess,
    LowExcess,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setting: Setting,
    pub strategy: Strategy,
    pub mode: PruneMode,
    /// One accuracy per draw (one for top and low).
    pub accuracies: Vec<f64>,
    pub units_pruned: usize,
    pub params_after: usize,
}

impl Row {
    pub fn mean(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len().max(1) as f64
    }

    /// Sample standard deviation (n - 1), 0 for one draw.
    pub fn std(&self) -> f64 {
        let n = self.accuracies.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.accuracies.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Table6 {
    pub baseline: f64,
    pub total_units: usize,
    pub rows: Vec<Row>,
    /// UnitMem's augmentation, with where it came from (set by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<crate::data::augment_choice::ChosenAugment>,
}

/// A policy with one prune action, as the planner takes it.
fn one_action(
    criterion: Criterion,
    end: End,
    s: Setting,
    mode: PruneMode,
    seed: u64,
    units: Option<crate::plan::policy::UnitKind>,
) -> PolicyFile {
    let action = PruneAction {
        criterion,
        end,
        fraction: Some(s.fraction_pct as f64 / 100.0),
        count: None,
        scope: s.scope,
        layers: vec!["*".into()],
        exclude: vec![],
        mode,
        min_keep: 1,
        seed,
        units,
        allow_inexact: false,
        round_to: None,
        loss: None,
    };
    let policy = Policy {
        model: None,
        reference: None,
        heads: None,
        data: Default::default(),
        metrics: Default::default(),
        actions: vec![Action::Prune(action)],
        schedule: None,
        evaluation: Default::default(),
        output: Default::default(),
    };
    let text = serde_yaml::to_string(&policy).unwrap_or_default();
    PolicyFile {
        path: "experiment".into(),
        text,
        policy,
    }
}

/// Runs every (setting, strategy, draw, mode) and probes each pruned encoder, two probes at a
/// time (the probe's small matrix products leave a core idle). `progress`: one bar over all
/// probes (the unpruned one first). `load`: how the pruned encoders load (a ViT's heads,
/// pool and tokens; their tensors are already named as the family expects).
#[allow(clippy::too_many_arguments)]
pub fn table6(
    enc: &Encoder,
    unit_mem: &[UnitMemLayer],
    train: &ImageSet,
    test: &ImageSet,
    settings: &ProbeSettings,
    draws: usize,
    modes: &[PruneMode],
    load: &LoadOptions,
    progress: bool,
) -> Result<Table6> {
    use rayon::prelude::*;
    let groups: Vec<CouplingGroup> = coupling_groups(enc);
    // A ViT's Table 6 prunes its MLP neurons (heads and the residual stream are other
    // experiments); a ResNet's, every channel.
    use crate::plan::policy::UnitKind;
    let units = groups
        .iter()
        .any(|g| crate::plan::planner::unit_kind(enc, g) == UnitKind::Mlp)
        .then_some(UnitKind::Mlp);
    let scores = Scores {
        unit_mem: Some(unit_mem.to_vec()),
        ..Default::default()
    };
    let mut jobs = Vec::new();
    for &s in &SETTINGS {
        for &mode in modes {
            let with_excess = unit_mem.iter().all(|l| l.control.is_some());
            let mut strategies = vec![Strategy::Top, Strategy::Random, Strategy::Low];
            if with_excess {
                strategies.extend([Strategy::TopExcess, Strategy::LowExcess]);
            }
            for strategy in strategies {
                let n = if strategy == Strategy::Random {
                    draws
                } else {
                    1
                };
                jobs.extend((0..n).map(|draw| (s, mode, strategy, draw)));
            }
        }
    }
    let pb = crate::progress::bar(jobs.len() + 1, progress, "Table 6 probes", "probes");
    let baseline = probe::probe_accuracy(enc, train, test, settings)?.test_accuracy;
    pb.inc(1);
    let load = LoadOptions {
        prefix: None,
        key: None,
        ..load.clone()
    };
    let results: Vec<(f64, usize, usize)> = jobs
        .par_iter()
        .with_max_len(1)
        .map(|&(s, mode, strategy, draw)| {
            let pf = match strategy {
                Strategy::Top => one_action(Criterion::Unitmem, End::Top, s, mode, 0, units),
                Strategy::Low => one_action(Criterion::Unitmem, End::Low, s, mode, 0, units),
                Strategy::TopExcess => {
                    one_action(Criterion::UnitmemExcess, End::Top, s, mode, 0, units)
                }
                Strategy::LowExcess => {
                    one_action(Criterion::UnitmemExcess, End::Low, s, mode, 0, units)
                }
                Strategy::Random => {
                    one_action(Criterion::Random, End::Top, s, mode, draw as u64, units)
                }
            };
            let plan = make_plan(&pf, enc, &groups, &scores)?;
            let tensors = prune_tensors(&enc.checkpoint.stored, &groups, &plan.cuts(), mode)?;
            let pruned = in_memory_encoder(enc, tensors, &load)?;
            let acc = probe::probe_accuracy(&pruned, train, test, settings)?.test_accuracy;
            pb.inc(1);
            Ok((acc, plan.units_pruned(), pruned.params()))
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    let mut rows: Vec<Row> = Vec::new();
    for (&(setting, mode, strategy, _), &(acc, units_pruned, params_after)) in
        jobs.iter().zip(&results)
    {
        match rows
            .last_mut()
            .filter(|r| r.setting == setting && r.mode == mode && r.strategy == strategy)
        {
            Some(r) => r.accuracies.push(acc),
            None => rows.push(Row {
                setting,
                strategy,
                mode,
                accuracies: vec![acc],
                units_pruned,
                params_after,
            }),
        }
    }
    Ok(Table6 {
        baseline,
        total_units: groups
            .iter()
            .filter(|g| {
                g.inexact.is_none()
                    && units.is_none_or(|u| crate::plan::planner::unit_kind(enc, g) == u)
            })
            .map(|g| g.channels)
            .sum(),
        rows,
        augment: None,
    })
}

fn in_memory_encoder(
    enc: &Encoder,
    tensors: std::collections::BTreeMap<String, Tensor>,
    load: &LoadOptions,
) -> Result<Encoder> {
    let ckpt = Checkpoint::from_tensors(
        &enc.checkpoint.path,
        tensors,
        enc.checkpoint.metadata.clone(),
    );
    Encoder::from_checkpoint(ckpt, load)
}
