//! A policy's pruning in steps with recovery: step 1 is the plan made on the unpruned model;
//! each later step re-measures the criterion on the model the earlier steps left and plans
//! its share ([`crate::plan::schedule`]); `schedule.recover` distils the model toward the
//! unpruned one between steps, and the policy's `recover` action after the last
//! ([`crate::train::distill`]). Units are tracked by their index in the unpruned model, so
//! the plan reported and recorded (`memprune.pruned`) is in the unpruned model's indices,
//! and each distilled tap of the teacher is mapped through the units the student kept.

use crate::checkpoint::Checkpoint;
use crate::eval::policy_report::{Recovery, StepReport};
use crate::jobs::policy::Planned;
use crate::model::coupling::{coupling_groups, CouplingGroup};
use crate::model::{Encoder, LoadOptions};
use crate::plan::schedule::Step;
use crate::plan::Plan;
use crate::rewrite::{prune_tensors, PruneMode};
use crate::train::distill::{distill, DistillSettings, KeptUnits};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::collections::{BTreeMap, BTreeSet};

/// The result of [`execute`].
pub struct Executed {
    /// Every unit removed by every step, in the unpruned model's indices.
    pub plan: Plan,
    /// The final model's tensors, as stored (names and dtypes of the input).
    pub tensors: BTreeMap<String, Tensor>,
    /// The model after the pruning and before the final recovery, when there is one.
    pub pruned: Option<Encoder>,
    pub recovery: Recovery,
}

/// The model of `stored` tensors with `metadata` (a ViT's head counts after removals).
fn rebuild(
    like: &Encoder,
    stored: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<Encoder> {
    Encoder::from_checkpoint(
        Checkpoint::from_tensors(&like.checkpoint.path, stored.clone(), metadata.clone()),
        &LoadOptions::default(),
    )
}

/// Per tap of every pruned group, the unpruned model's units it kept.
fn kept_units(groups: &[CouplingGroup], kept: &[Vec<usize>]) -> KeptUnits {
    let mut m = KeptUnits::new();
    for (g, k) in groups.iter().zip(kept) {
        if k.len() < g.channels {
            for t in &g.taps {
                m.insert(t.clone(), k.clone());
            }
        }
    }
    m
}

/// `stored` with the distilled tensors written in (in each stored tensor's dtype).
fn merge(stored: &mut BTreeMap<String, Tensor>, trained: BTreeMap<String, Tensor>) -> Result<()> {
    for (k, t) in trained {
        let old = stored
            .get(&k)
            .with_context(|| format!("the distilled tensor `{k}` is not in the checkpoint"))?;
        if old.dims() != t.dims() {
            bail!(
                "the distilled tensor `{k}` has shape {:?}, the checkpoint's {:?}",
                t.dims(),
                old.dims()
            );
        }
        let t = t.to_dtype(old.dtype())?;
        stored.insert(k, t);
    }
    Ok(())
}

/// Runs the steps and recoveries of `planned`'s policy; `None` when it has neither (one
/// step, no `recover`: the plan is applied as it is).
pub fn execute(planned: &Planned, progress: bool) -> Result<Option<Executed>> {
    let pf = &planned.policy;
    let steps = pf.steps();
    let last_recover = pf.recover_action();
    if steps == 1 && last_recover.is_none() {
        return Ok(None);
    }
    if planned.plan.mode == Some(PruneMode::Mask) {
        bail!(
            "{}: recover and schedule need `mode: remove`",
            pf.path.display()
        );
    }
    let between = pf.policy.schedule.as_ref().and_then(|s| s.recover.as_ref());
    let teacher = &planned.encoder;
    let groups = &planned.groups;
    // The taps are checked before any work.
    for (key, r) in [
        ("schedule.recover", between),
        ("recover", last_recover.map(|r| r.1)),
    ] {
        if let Some(r) = r {
            for t in &r.taps {
                if !teacher.layers.iter().any(|l| &l.name == t) {
                    let names: Vec<&str> = teacher.layers.iter().map(|l| l.name.as_str()).collect();
                    return Err(pf.error_at(
                        last_recover.filter(|_| key == "recover").map(|r| r.0),
                        "taps",
                        &format!(
                            "{key}.taps: `{t}` is not a layer of this {} (layers: {})",
                            teacher.describe(),
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let widths: Vec<usize> = groups.iter().map(|g| g.channels).collect();
    let mut kept: Vec<Vec<usize>> = widths.iter().map(|&n| (0..n).collect()).collect();
    let mut stored = teacher.checkpoint.stored.clone();
    let mut metadata = teacher.checkpoint.metadata.clone();
    let mut current = teacher.clone();
    let mut plan = planned.plan.clone();
    let mut reports = Vec::new();
    let mut notes = planned.plan.notes.clone();
    let run_distill = |student: &Encoder,
                       kept: &[Vec<usize>],
                       r: &DistillSettings,
                       what: &str|
     -> Result<crate::train::distill::Distilled> {
        if progress {
            eprintln!(
                "{what}: distilling toward the unpruned encoder ({} epochs)",
                r.epochs
            );
        }
        distill(
            student,
            teacher,
            &kept_units(groups, kept),
            &planned.data,
            r,
            &planned.augment.config,
            planned.plan.trainable.clone(),
        )
        .map_err(|e| pf.error_at(None, "recover", &format!("{what}: {e:#}")))
    };
    for s in 1..=steps {
        if s > 1 {
            let step = Step {
                index: s,
                of: steps,
                original: widths.clone(),
            };
            let again =
                crate::jobs::policy::plan_step(pf.clone(), Some(current.clone()), &step, false)?;
            plan = again.plan;
            notes.extend(plan.notes.iter().map(|n| format!("step {s}: {n}")));
        }
        let now = coupling_groups(&current);
        let cuts = plan.cuts();
        stored = prune_tensors(&stored, &now, &cuts, PruneMode::Remove)?;
        let gone: Vec<(String, usize)> = cuts
            .iter()
            .map(|c| (c.group.clone(), c.channels.len()))
            .collect();
        metadata.extend(current.arch.rewrite_metadata(&gone));
        for c in &cuts {
            let g = groups
                .iter()
                .position(|g| g.name == c.group)
                .with_context(|| {
                    format!(
                        "step {s} pruned `{}`, a group the unpruned model does not have",
                        c.group
                    )
                })?;
            let drop: BTreeSet<usize> = c.channels.iter().copied().collect();
            kept[g] = kept[g]
                .iter()
                .enumerate()
                .filter(|(j, _)| !drop.contains(j))
                .map(|(_, &o)| o)
                .collect();
        }
        current = rebuild(teacher, &stored, &metadata)?;
        let mut report = StepReport {
            step: s,
            units_pruned: cuts.iter().map(|c| c.channels.len()).sum(),
            units_left: kept.iter().map(|k| k.len()).sum(),
            recover: None,
        };
        if let (Some(r), true) = (between, s < steps) {
            let d = run_distill(
                &current,
                &kept,
                r,
                &format!("schedule.recover after step {s}"),
            )?;
            merge(&mut stored, d.tensors)?;
            current = rebuild(teacher, &stored, &metadata)?;
            report.recover = Some(d.report);
        }
        reports.push(report);
    }
    let mut pruned = None;
    let mut last = None;
    if let Some((i, r)) = last_recover {
        let d = run_distill(&current, &kept, r, &format!("actions[{i}].recover"))?;
        pruned = Some(current.clone());
        merge(&mut stored, d.tensors)?;
        last = Some(d.report);
    }
    // The plan of all steps, in the unpruned model's indices.
    let mut all = planned.plan.clone();
    for (gp, k) in all.groups.iter_mut().zip(&kept) {
        let keep: BTreeSet<usize> = k.iter().copied().collect();
        gp.pruned = (0..gp.channels).filter(|c| !keep.contains(c)).collect();
    }
    if steps > 1 {
        let per: Vec<String> = reports.iter().map(|r| r.units_pruned.to_string()).collect();
        notes.push(format!(
            "schedule: {steps} steps, re-measured on the pruned model before each, removed {} units",
            per.join(" + ")
        ));
    }
    all.notes = notes;
    Ok(Some(Executed {
        plan: all,
        tensors: stored,
        pruned,
        recovery: Recovery {
            steps: reports,
            recover: last,
            pruned_probe_accuracy: None,
            pruned_knn: None,
        },
    }))
}
