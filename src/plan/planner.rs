//! The planner: scores + policy -> which channels to remove or mask, which layers to train.
//!
//! A channel's score under `unitmem` (or `classmem`) is the mean of its UnitMem over the
//! taps of its coupling group: for ResNet9's `res2` group, channel c scores the mean of
//! UnitMem of unit c in block2, block4 and res2. `l1-norm` sums the L1 norms of the
//! channel's producing filters. Ties are broken by layer order, then channel index, so a plan
//! is reproducible.
//!
//! `scope: global` with `l1-norm` first divides each group's scores by their mean within the
//! group (Torch-Pruning's default group normaliser, `normalizer='mean'`): raw L1 sums grow
//! with a layer's fan-in, so a global ranking of raw sums would take the layers with the
//! smallest fan-in down to `min_keep`. UnitMem and ClassMem lie in [0, 1] on every layer
//! and are ranked as they are; the checkpoint criteria (bn-scale, taylor, fpgm, lamp) are
//! in [`crate::plan::criteria`], each with the normalisation of its paper
//! ([`criteria::global_normaliser`]). A fraction that rounds to 0 units in a layer is said in
//! the plan's notes; `round_to` then rounds every pruned group's kept count down to a
//! multiple ([`rounded_keep`]).

use crate::data::rng::Rng;
use crate::metrics::layer_mem::LayerMemLayer;
use crate::metrics::unit_mem::UnitMemLayer;
use crate::model::coupling::CouplingGroup;
use crate::model::family::LayerKind;
use crate::model::Encoder;
use crate::plan::criteria;
use crate::plan::policy::{
    glob_match, round_to_value, Action, Criterion, End, LayerSelect, PolicyFile, PruneAction, Rank,
    Scope, TaylorLoss, UnitKind,
};
use crate::plan::schedule::Step;
use crate::rewrite::{GroupCut, PruneMode};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The measurements a plan may rank by.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub unit_mem: Option<Vec<UnitMemLayer>>,
    pub class_mem: Option<Vec<UnitMemLayer>>,
    pub layer_mem: Option<Vec<LayerMemLayer>>,
    /// dL/dw of each label-free loss a `taylor` action ranks by, per producing tensor.
    pub gradients: BTreeMap<TaylorLoss, BTreeMap<String, candle_core::Tensor>>,
}

/// The loss a `taylor` action differentiates: its `loss`, else the framework the checkpoint
/// records; refused when neither says (a guess would change the ranking).
pub fn taylor_loss(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    enc: &Encoder,
) -> Result<TaylorLoss> {
    if let Some(l) = a.loss {
        return Ok(l);
    }
    criteria::taylor::recorded_loss(&enc.checkpoint).ok_or_else(|| {
        pf.error_at(
            Some(i),
            "criterion",
            &format!(
                "actions[{i}].prune: criterion taylor needs `loss` (simclr, simsiam or mae: the label-free loss {} was trained with); it records none",
                enc.checkpoint.path.display()
            ),
        )
    })
}

/// What a policy does to one coupling group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPlan {
    pub group: String,
    pub channels: usize,
    pub pruned: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `None` when the policy prunes nothing.
    pub mode: Option<PruneMode>,
    pub groups: Vec<GroupPlan>,
    /// Layers marked trainable (the rest frozen), when the policy has freeze/train actions.
    pub trainable: Option<Vec<String>>,
    /// Things the user should know (a floor that limited a layer, ...).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn cuts(&self) -> Vec<GroupCut> {
        self.groups
            .iter()
            .filter(|g| !g.pruned.is_empty())
            .map(|g| GroupCut {
                group: g.group.clone(),
                channels: g.pruned.clone(),
            })
            .collect()
    }

    pub fn units_pruned(&self) -> usize {
        self.groups.iter().map(|g| g.pruned.len()).sum()
    }
}

/// Layers that own parameters, in forward order, with the conv weights they own: what
/// freeze/train select and rank.
pub fn parameter_layers(enc: &Encoder) -> Vec<(String, Vec<String>)> {
    enc.trainable_groups()
}

pub fn make_plan(
    pf: &PolicyFile,
    enc: &Encoder,
    groups: &[CouplingGroup],
    scores: &Scores,
) -> Result<Plan> {
    make_plan_step(pf, enc, groups, scores, &Step::one())
}

/// The plan of step `step` of the policy's schedule (each prune action removes its share of
/// the step, [`Step::share`]), on the model that the earlier steps left.
pub fn make_plan_step(
    pf: &PolicyFile,
    enc: &Encoder,
    groups: &[CouplingGroup],
    scores: &Scores,
    step: &Step,
) -> Result<Plan> {
    let mut pruned: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); groups.len()];
    let mut notes = Vec::new();
    let mut mode = None;
    let params = parameter_layers(enc);
    let mut trainable: Option<Vec<bool>> = None;
    for (i, action) in pf.policy.actions.iter().enumerate() {
        match action {
            Action::Prune(a) => {
                mode = Some(a.mode);
                let selected = select_groups(pf, i, a, enc, groups)?;
                let channel_scores: Vec<Vec<f64>> = selected
                    .iter()
                    .map(|&g| channel_scores(pf, i, a, enc, &groups[g], g, scores))
                    .collect::<Result<_>>()?;
                let picks = match a.scope {
                    Scope::PerLayer => per_layer(
                        pf,
                        i,
                        a,
                        groups,
                        &selected,
                        &channel_scores,
                        &mut notes,
                        step,
                    )?,
                    Scope::Global => {
                        same_floor(pf, i, a, groups, &selected, scores)?;
                        let normalised = match criteria::global_normaliser(a.criterion) {
                            criteria::Normaliser::Mean => channel_scores
                                .iter()
                                .map(|s| criteria::mean_normalised(s))
                                .collect(),
                            criteria::Normaliser::None => channel_scores.clone(),
                        };
                        global(pf, i, a, groups, &selected, &normalised, &mut notes, step)?
                    }
                };
                if a.criterion == Criterion::Taylor {
                    let loss = taylor_loss(pf, i, a, enc)?;
                    let from = if a.loss.is_some() {
                        "the policy's `loss`".to_string()
                    } else {
                        format!(
                            "recorded in {} (memprune.framework)",
                            enc.checkpoint.path.display()
                        )
                    };
                    notes.push(format!(
                        "actions[{i}]: taylor on the {} loss ({from})",
                        serde_json::to_value(loss)?.as_str().unwrap_or_default()
                    ));
                }
                let picks = match &a.round_to {
                    Some(v) => {
                        let n = round_to_value(v).map_err(|e| {
                            pf.error_at(
                                Some(i),
                                "round_to",
                                &format!("actions[{i}].prune.round_to: {e}"),
                            )
                        })?;
                        round_widths(
                            pf,
                            i,
                            a,
                            n,
                            groups,
                            &selected,
                            &channel_scores,
                            &pruned,
                            picks,
                            &mut notes,
                        )?
                    }
                    None => picks,
                };
                let again = picks.iter().filter(|(g, c)| pruned[*g].contains(c)).count();
                if again > 0 {
                    notes.push(format!("actions[{i}] chose {again} units that an earlier prune action already prunes: prune actions combine as a union (each amount is of the whole layer), so those units are removed once"));
                }
                for (g, c) in picks {
                    pruned[g].insert(c);
                }
                // A layer this plan leaves whole is never below the floor (min_keep may be
                // larger than a small layer: that layer is then not pruned at all).
                for (g, set) in pruned.iter().enumerate() {
                    if !set.is_empty() && groups[g].channels - set.len() < a.min_keep {
                        return Err(pf.error_at(Some(i), "prune", &format!("the prune actions together would leave `{}` with fewer than min_keep = {} units", groups[g].name, a.min_keep)));
                    }
                }
            }
            // Runs after the pruning (src/pipeline.rs); it plans nothing.
            Action::Recover(_) => {}
            Action::Freeze(s) | Action::Train(s) => {
                let on = matches!(action, Action::Train(_));
                let chosen = select_layers(pf, i, s, &params, scores)?;
                let t = trainable.get_or_insert_with(|| vec![true; params.len()]);
                for k in chosen {
                    t[k] = on;
                }
            }
        }
    }
    Ok(Plan {
        mode,
        groups: groups
            .iter()
            .zip(pruned)
            .map(|(g, p)| GroupPlan {
                group: g.name.clone(),
                channels: g.channels,
                pruned: p.into_iter().collect(),
            })
            .collect(),
        trainable: trainable.map(|t| {
            params
                .iter()
                .zip(t)
                .filter(|(_, on)| *on)
                .map(|((n, _), _)| n.clone())
                .collect()
        }),
        notes,
    })
}

fn matches(pattern: &str, g: &CouplingGroup) -> bool {
    glob_match(pattern, &g.name) || g.taps.iter().any(|t| glob_match(pattern, t))
}

/// The kind of unit a group holds, from its first measured layer.
pub fn unit_kind(enc: &Encoder, g: &CouplingGroup) -> UnitKind {
    let kind = g
        .taps
        .first()
        .and_then(|t| enc.layers.iter().find(|l| &l.name == t))
        .map(|l| l.kind);
    match kind {
        Some(LayerKind::MlpHidden) => UnitKind::Mlp,
        Some(LayerKind::AttentionHeads) => UnitKind::Heads,
        _ => UnitKind::Channels,
    }
}

fn select_groups(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    enc: &Encoder,
    groups: &[CouplingGroup],
) -> Result<Vec<usize>> {
    if let Some(u) = a.units {
        if !groups.iter().any(|g| unit_kind(enc, g) == u) {
            let what = match u {
                UnitKind::Mlp => "MLP neurons",
                UnitKind::Heads => "attention heads",
                UnitKind::Channels => "channels",
            };
            return Err(pf.error_at(
                Some(i),
                "units",
                &format!("actions[{i}].prune.units: {} has no {what}", enc.describe()),
            ));
        }
    }
    // Named exactly, an inexact group needs `allow_inexact`; a glob passes over it.
    if !a.allow_inexact {
        for g in groups {
            if let (Some(why), true) = (&g.inexact, a.layers.iter().any(|p| p == &g.name)) {
                return Err(pf.error_at(
                    Some(i),
                    "layers",
                    &format!(
                        "actions[{i}].prune: removing units of `{}` is not exact ({why}); set `allow_inexact: true` to do it anyway",
                        g.name
                    ),
                ));
            }
        }
    }
    let names = || {
        groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (key, pats) in [("layers", &a.layers), ("exclude", &a.exclude)] {
        for p in pats {
            if !groups.iter().any(|g| matches(p, g)) {
                return Err(pf.error_at(
                    Some(i),
                    key,
                    &format!(
                        "actions[{i}].prune.{key}: `{p}` matches no layer (layers: {})",
                        names()
                    ),
                ));
            }
        }
    }
    let sel: Vec<usize> = (0..groups.len())
        .filter(|&g| {
            a.layers.iter().any(|p| matches(p, &groups[g]))
                && !a.exclude.iter().any(|p| matches(p, &groups[g]))
                && (a.allow_inexact || groups[g].inexact.is_none())
                && a.units.is_none_or(|u| unit_kind(enc, &groups[g]) == u)
        })
        .collect();
    if sel
        .iter()
        .any(|&g| unit_kind(enc, &groups[g]) == UnitKind::Heads)
    {
        if let Some(line) = enc.arch.heads_guessed("pruning attention heads") {
            return Err(pf.error_at(None, "heads", &format!("actions[{i}].prune: {line}")));
        }
    }
    if sel.is_empty() {
        // Name the filter that emptied the selection, in the order they apply.
        let named: Vec<usize> = (0..groups.len())
            .filter(|&g| a.layers.iter().any(|p| matches(p, &groups[g])))
            .filter(|&g| !a.exclude.iter().any(|p| matches(p, &groups[g])))
            .collect();
        let exact = named
            .iter()
            .any(|&g| a.allow_inexact || groups[g].inexact.is_none());
        let (key, why) = if named.is_empty() {
            ("exclude", "`exclude` leaves no layer to prune".to_string())
        } else if !exact {
            (
                "units",
                "every layer selected removes its units inexactly (see `memprune plan`); set `allow_inexact: true` to prune them anyway".to_string(),
            )
        } else {
            (
                "units",
                "no exactly removable layer selected has these units (set `allow_inexact: true` to include the inexact ones)".to_string(),
            )
        };
        return Err(pf.error_at(Some(i), key, &format!("actions[{i}].prune: {why}")));
    }
    Ok(sel)
}

fn channel_scores(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    enc: &Encoder,
    g: &CouplingGroup,
    gi: usize,
    scores: &Scores,
) -> Result<Vec<f64>> {
    let from_units =
        |layers: &Option<Vec<UnitMemLayer>>, what: &str, excess: bool| -> Result<Vec<f64>> {
            let layers = layers
                .as_ref()
                .ok_or_else(|| anyhow!("{what} scores were not measured"))?;
            let taps: Vec<&UnitMemLayer> = g
                .taps
                .iter()
                .filter_map(|t| layers.iter().find(|l| &l.name == t))
                .collect();
            if taps.is_empty() {
                return Err(pf.error_at(
                    Some(i),
                    "criterion",
                    &format!("no {what} for layer `{}`", g.name),
                ));
            }
            let unit = |l: &UnitMemLayer, c: usize| -> Result<f64> {
                if !excess {
                    return Ok(l.units[c].score);
                }
                l.control
                    .as_ref()
                    .and_then(|k| k.excess.get(c).copied())
                    .ok_or_else(|| anyhow!("UnitMem-excess of layer `{}` was not measured", l.name))
            };
            (0..g.channels)
                .map(|c| {
                    let mut s = 0.0;
                    for l in &taps {
                        s += unit(l, c)?;
                    }
                    Ok(s / taps.len() as f64)
                })
                .collect()
        };
    match a.criterion {
        Criterion::Unitmem => from_units(&scores.unit_mem, "UnitMem", false),
        Criterion::UnitmemExcess => from_units(&scores.unit_mem, "UnitMem", true),
        Criterion::Classmem => from_units(&scores.class_mem, "ClassMem", false),
        Criterion::Random => Ok((0..g.channels)
            .map(|c| Rng::from_key(&[a.seed, gi as u64, c as u64]).next_f64())
            .collect()),
        Criterion::L1Norm => {
            let mut s = vec![0f64; g.channels];
            for p in g.producer_weights(&enc.checkpoint) {
                let w = p.unit_l1(enc.checkpoint.get(&p.tensor)?, g.channels)?;
                s.iter_mut().zip(w).for_each(|(a, b)| *a += b);
            }
            Ok(s)
        }
        Criterion::BnScale => criteria::bn_scale::scores(g, &enc.checkpoint)
            .map_err(|e| pf.error_at(Some(i), "criterion", &format!("actions[{i}].prune: {e}"))),
        Criterion::Fpgm => criteria::fpgm::scores(g, &enc.checkpoint),
        Criterion::Lamp => criteria::lamp::scores(g, &enc.checkpoint),
        Criterion::Taylor => {
            let loss = taylor_loss(pf, i, a, enc)?;
            let grads = scores
                .gradients
                .get(&loss)
                .ok_or_else(|| anyhow!("the gradients of the taylor loss were not measured"))?;
            criteria::taylor::scores(g, &enc.checkpoint, grads)
        }
    }
}

/// The width one unit of `g` takes in its tensors (a head's `head_dim` rows, else 1).
fn unit_width(g: &CouplingGroup) -> usize {
    g.producers.first().map(|p| p.unit_len.max(1)).unwrap_or(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The units a group may keep under `round_to: n`: a multiple of `n / gcd(n, unit width)`
/// (so that the kept tensor width, units x unit width, is a multiple of n).
pub fn unit_multiple(n: usize, unit_width: usize) -> usize {
    n / gcd(n, unit_width.max(1))
}

/// Torch-Pruning's rounding (`BasePruner._round_to`): the kept count rounded down to a
/// multiple of `m`, so that at least as many units go as asked; never below `min_keep`
/// (then the smallest multiple of `m` not below it); a group the action prunes nothing
/// of is left as it is; a group whose rounded count would keep it whole is not pruned.
pub fn rounded_keep(channels: usize, kept: usize, m: usize, min_keep: usize) -> usize {
    let down = kept - kept % m;
    if down >= min_keep.max(1) {
        down
    } else {
        let up = min_keep.max(1).div_ceil(m) * m;
        up.min(channels)
    }
}

/// Applies `round_to: n` to the picks of action `i`: in every selected group it prunes,
/// the lowest-ranked units (by the action's own order) up to the rounded count.
#[allow(clippy::too_many_arguments)]
fn round_widths(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    n: usize,
    groups: &[CouplingGroup],
    sel: &[usize],
    scores: &[Vec<f64>],
    already: &[BTreeSet<usize>],
    picks: Vec<(usize, usize)>,
    notes: &mut Vec<String>,
) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for (&g, s) in sel.iter().zip(scores) {
        let width = groups[g].channels * unit_width(&groups[g]);
        if n > width {
            return Err(pf.error_at(
                Some(i),
                "round_to",
                &format!(
                    "actions[{i}].prune.round_to: {n} is larger than `{}` ({width} wide)",
                    groups[g].name
                ),
            ));
        }
        let asked: BTreeSet<usize> = picks
            .iter()
            .filter(|(pg, _)| *pg == g)
            .map(|&(_, c)| c)
            .collect();
        if asked.is_empty() {
            continue;
        }
        let m = unit_multiple(n, unit_width(&groups[g]));
        let channels = groups[g].channels;
        // Units earlier actions removed stay removed; the rounding counts what remains.
        let gone = &already[g];
        let kept = channels - gone.len() - asked.iter().filter(|c| !gone.contains(c)).count();
        let keep = rounded_keep(channels - gone.len(), kept, m, a.min_keep);
        let prune = channels - gone.len() - keep;
        if keep != kept {
            notes.push(format!(
                "{}: round_to = {n} keeps {keep} of {channels} units ({kept} before rounding)",
                groups[g].name
            ));
        }
        out.extend(
            order(s, a.end)
                .into_iter()
                .filter(|c| !gone.contains(c))
                .take(prune)
                .map(|c| (g, c)),
        );
    }
    Ok(out)
}

/// The note for a fraction that rounds to no unit of `what` (`n` units).
fn rounds_to_zero(a: &PruneAction, what: &str, n: usize) -> Option<String> {
    match a.fraction {
        Some(f) if f > 0.0 && (f * n as f64).round() == 0.0 => Some(format!(
            "{what}: fraction {f:?} of {n} units rounds to 0: nothing pruned there"
        )),
        _ => None,
    }
}

/// A global ranking by UnitMem or ClassMem compares scores across layers: refused when the
/// layers' act_u is measured from different floors (a ViT's GELU neurons against its heads:
/// docs/METRICS.md, "Signed layers"), whose scores are not on one scale.
fn same_floor(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    groups: &[CouplingGroup],
    sel: &[usize],
    scores: &Scores,
) -> Result<()> {
    let layers = match a.criterion {
        Criterion::Unitmem | Criterion::UnitmemExcess => &scores.unit_mem,
        Criterion::Classmem => &scores.class_mem,
        _ => return Ok(()),
    };
    let Some(layers) = layers else {
        return Ok(());
    };
    let mut seen: Vec<(&str, f64)> = Vec::new();
    for &g in sel {
        let floor = groups[g]
            .taps
            .iter()
            .find_map(|t| layers.iter().find(|l| &l.name == t))
            .map(|l| l.act_floor);
        if let Some(f) = floor {
            if !seen.iter().any(|s| s.1 == f) {
                seen.push((groups[g].name.as_str(), f));
            }
        }
    }
    if seen.len() > 1 {
        let shown: Vec<String> = seen
            .iter()
            .map(|(n, f)| format!("`{n}` from {f}"))
            .collect();
        return Err(pf.error_at(
            Some(i),
            "scope",
            &format!(
                "actions[{i}].prune: scope: global would rank scores of layers whose act_u is measured from different floors ({}; docs/METRICS.md, \"Signed layers\"), which are not comparable; set `units: mlp` or `units: heads` (one kind at a time), `layers`, or `scope: per-layer`",
                shown.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Channels in pruning order: highest score first for `top`, lowest first for `low`.
fn order(scores: &[f64], end: End) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&x, &y| {
        let o = scores[x].total_cmp(&scores[y]);
        (if end == End::Top { o.reverse() } else { o }).then(x.cmp(&y))
    });
    idx
}

fn amount(a: &PruneAction, total: usize) -> usize {
    match (a.fraction, a.count) {
        (Some(f), _) => (f * total as f64).round() as usize,
        (None, Some(c)) => c,
        (None, None) => 0,
    }
}

/// The policy key that set the amount, for error lines.
fn amount_key(a: &PruneAction) -> &'static str {
    if a.count.is_some() {
        "count"
    } else {
        "fraction"
    }
}

#[allow(clippy::too_many_arguments)]
fn per_layer(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    groups: &[CouplingGroup],
    sel: &[usize],
    scores: &[Vec<f64>],
    notes: &mut Vec<String>,
    step: &Step,
) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut floored = false;
    for (&g, s) in sel.iter().zip(scores) {
        let n = groups[g].channels;
        let mut k = step.share(amount(a, step.original_width(g, n)));
        notes.extend(rounds_to_zero(a, &groups[g].name, n));
        if k >= n {
            let key = amount_key(a);
            return Err(pf.error_at(
                Some(i),
                key,
                &format!(
                    "actions[{i}].prune would empty layer `{}` ({k} of {n} units)",
                    groups[g].name
                ),
            ));
        }
        // `n - k` and `n - min_keep` without underflow: min_keep may exceed the layer.
        if n - k < a.min_keep {
            floored = true;
            k = n.saturating_sub(a.min_keep);
            notes.push(format!(
                "{}: min_keep = {} limits pruning to {k} of {n} units",
                groups[g].name, a.min_keep,
            ));
        }
        out.extend(order(s, a.end).into_iter().take(k).map(|c| (g, c)));
    }
    if out.is_empty() && floored {
        return Err(min_keep_prunes_nothing(pf, i, a));
    }
    Ok(out)
}

fn min_keep_prunes_nothing(pf: &PolicyFile, i: usize, a: &PruneAction) -> anyhow::Error {
    pf.error_at(
        Some(i),
        "min_keep",
        &format!(
            "actions[{i}].prune.min_keep = {} leaves no unit to prune in any selected layer",
            a.min_keep
        ),
    )
}

#[allow(clippy::too_many_arguments)]
fn global(
    pf: &PolicyFile,
    i: usize,
    a: &PruneAction,
    groups: &[CouplingGroup],
    sel: &[usize],
    scores: &[Vec<f64>],
    notes: &mut Vec<String>,
    step: &Step,
) -> Result<Vec<(usize, usize)>> {
    let mut all: Vec<(usize, usize, f64)> = Vec::new();
    for (&g, s) in sel.iter().zip(scores) {
        all.extend(s.iter().enumerate().map(|(c, &v)| (g, c, v)));
    }
    let total = all.len();
    let original: usize = sel
        .iter()
        .map(|&g| step.original_width(g, groups[g].channels))
        .sum();
    let k = step.share(amount(a, original));
    notes.extend(rounds_to_zero(a, "the selected layers together", total));
    if k >= total {
        let key = amount_key(a);
        return Err(pf.error_at(
            Some(i),
            key,
            &format!("actions[{i}].prune would empty the network ({k} of {total} units)"),
        ));
    }
    all.sort_by(|x, y| {
        let o = x.2.total_cmp(&y.2);
        (if a.end == End::Top { o.reverse() } else { o })
            .then(x.0.cmp(&y.0))
            .then(x.1.cmp(&y.1))
    });
    let mut left: BTreeMap<usize, usize> = sel.iter().map(|&g| (g, groups[g].channels)).collect();
    let mut out = Vec::new();
    for (g, c, _) in all {
        if out.len() == k {
            break;
        }
        if left[&g] > a.min_keep {
            *left.get_mut(&g).expect("selected") -= 1;
            out.push((g, c));
        }
    }
    if out.is_empty() && k > 0 {
        return Err(min_keep_prunes_nothing(pf, i, a));
    }
    if out.len() < k {
        notes.push(format!(
            "min_keep = {} limits global pruning to {} of the {k} units asked for",
            a.min_keep,
            out.len()
        ));
    }
    Ok(out)
}

fn select_layers(
    pf: &PolicyFile,
    i: usize,
    s: &LayerSelect,
    params: &[(String, Vec<String>)],
    scores: &Scores,
) -> Result<Vec<usize>> {
    let verb = || format!("actions[{i}]");
    if let Some(pats) = &s.layers {
        let mut out = BTreeSet::new();
        for p in pats {
            let m: Vec<usize> = (0..params.len())
                .filter(|&k| glob_match(p, &params[k].0))
                .collect();
            if m.is_empty() {
                let names: Vec<&str> = params.iter().map(|p| p.0.as_str()).collect();
                return Err(pf.error_at(
                    Some(i),
                    "layers",
                    &format!(
                        "{}: `{p}` matches no layer with parameters ({})",
                        verb(),
                        names.join(", ")
                    ),
                ));
            }
            out.extend(m);
        }
        return Ok(out.into_iter().collect());
    }
    if let Some(last) = s.last {
        return Ok((params.len().saturating_sub(last)..params.len()).collect());
    }
    let (by, top) = (s.by.expect("validated"), s.top.expect("validated"));
    let lm = scores
        .layer_mem
        .as_ref()
        .ok_or_else(|| anyhow!("LayerMem was not measured"))?;
    Ok(rank_layers(params, lm, by)
        .into_iter()
        .take(top)
        .map(|(k, _)| k)
        .collect())
}

/// The layers of `params` that LayerMem measured, highest `by` first (ties: forward order),
/// with their scores: the corrected LayerMem where a control was measured (see
/// [`LayerMemLayer::score`]). The first layer has no dLayerMem: its increase over the input
/// is its LayerMem.
pub fn rank_layers(
    params: &[(String, Vec<String>)],
    lm: &[LayerMemLayer],
    by: Rank,
) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = params
        .iter()
        .enumerate()
        .filter_map(|(k, (name, _))| {
            let l = lm.iter().find(|l| &l.name == name)?;
            let v = match by {
                Rank::Layermem => l.score(),
                Rank::Dlayermem => l.dscore().unwrap_or(l.score()),
            };
            Some((k, v))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}
