//! memprune's main job: a policy file -> measure -> plan -> rewrite -> evaluate.

use crate::checkpoint::keys;
use crate::data::augment_choice::{self, ChosenAugment, GivenAugment};
use crate::data::{self, ImageSet, Split};
use crate::eval::cost::{compare_speed, cost};
use crate::eval::policy_report::{Evaluated, InexactChange, PolicyReport};
use crate::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use crate::model::coupling::{coupling_groups, CouplingGroup};
use crate::model::{Encoder, LoadOptions};
use crate::output::OutputSet;
use crate::plan::planner::make_plan_step;
use crate::plan::policy::check_exists;
use crate::plan::{Plan, PolicyFile, Scores};
use crate::rewrite::{prune_tensors, write_rewritten};
use anyhow::{Context, Result};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a policy needs before it writes: the model, its groups, the scores, the plan.
pub struct Planned {
    pub policy: PolicyFile,
    pub encoder: Encoder,
    pub groups: Vec<CouplingGroup>,
    pub scores: Scores,
    pub plan: Plan,
    pub data: ImageSet,
    pub points: Vec<usize>,
    /// The augmentation of the views, with where it came from.
    pub augment: ChosenAugment,
}

/// How the policy's encoders load: its `heads:` for a ViT. (Rewritten files record their
/// heads in their metadata and load with the defaults.)
fn load_options(p: &crate::plan::policy::Policy) -> LoadOptions {
    LoadOptions {
        heads: p.heads,
        ..Default::default()
    }
}

/// Measures what the policy ranks by and makes the plan (of its first step, with a
/// schedule). Writes nothing.
pub fn plan_policy(pf: PolicyFile, progress: bool) -> Result<Planned> {
    let step = crate::plan::schedule::Step {
        index: 1,
        of: pf.steps(),
        original: Vec::new(),
    };
    plan_step(pf, None, &step, progress)
}

/// [`plan_policy`] for step `step` of the policy's schedule, on `current` (the model the
/// earlier steps left) instead of the policy's model when given.
pub fn plan_step(
    pf: PolicyFile,
    current: Option<Encoder>,
    step: &crate::plan::schedule::Step,
    progress: bool,
) -> Result<Planned> {
    let p = &pf.policy;
    if let Some(ft) = &p.evaluation.finetune {
        crate::eval::finetune::settings_from(ft)
            .validate()
            .map_err(|e| pf.error_at(None, "finetune", &format!("evaluation.{e}")))?;
    }
    let model_path = p.model.clone().unwrap_or_else(crate::defaults::model_f);
    check_exists(&pf, "model", &model_path)?;
    let encoder = match current {
        Some(e) => e,
        None => Encoder::load(&model_path, &load_options(p))?,
    };
    let groups = coupling_groups(&encoder);
    let data_path = p.data.path.clone().unwrap_or_else(crate::defaults::data);
    check_exists(&pf, "path", &data_path)?;
    let read = p.data.options().for_encoder(&encoder);
    let data = data::open::open_with(&data_path, p.data.split, &read)?;
    let (need_unit, need_class, need_layer) = pf.needs();
    let choice = PointChoice {
        points: p.data.points,
        range: p.data.range.clone(),
        indices: p.data.indices.clone(),
    };
    let default = if need_layer && !need_unit && !need_class {
        DefaultPoints::Candidates(crate::defaults::LAYER_CANDIDATES)
    } else {
        DefaultPoints::Training(crate::defaults::UNIT_POINTS)
    };
    let points = measure::choose_points(
        &choice,
        &data,
        p.data.split,
        &encoder,
        p.metrics.seed,
        default,
    )
    .with_context(|| pf.path.display().to_string())?;
    // LayerMem scores f's candidates whatever UnitMem measures on (the policy's points
    // when it names them).
    let layer_points = if need_layer && (need_unit || need_class) {
        measure::choose_points(
            &choice,
            &data,
            p.data.split,
            &encoder,
            p.metrics.seed,
            DefaultPoints::Candidates(crate::defaults::LAYER_CANDIDATES),
        )
        .with_context(|| pf.path.display().to_string())?
    } else {
        points.clone()
    };
    // The control: test-split points neither encoder saw, as many as measured.
    let unseen_for = |n: usize| -> Result<Option<(ImageSet, Vec<usize>)>> {
        if p.data.split != data::Split::Train {
            return Ok(None);
        }
        let test = data::open::open_with(&data_path, data::Split::Test, &read)?;
        let pts = measure::unseen_points(&test, n, p.metrics.seed)?;
        Ok(Some((test, pts)))
    };
    let reference = if need_layer {
        let ref_path = match &p.reference {
            Some(r) => r.clone(),
            None if p.model.is_none() => crate::defaults::model_g(),
            None => return Err(pf.error_at(None, "actions", "ranking layers by layermem or dlayermem needs `reference`: an encoder trained without the scored points")),
        };
        check_exists(&pf, "reference", &ref_path)?;
        Some(crate::jobs::layer_mem::load(&ref_path, &load_options(p))?)
    } else {
        None
    };
    let given = p.metrics.augment.clone().map(|config| GivenAugment {
        config,
        from: format!("{}: metrics.augment", pf.path.display()),
    });
    let augment = augment_choice::choose(
        given,
        &encoder.checkpoint,
        reference.as_ref().map(|g| &g.checkpoint),
    )?;
    let settings = ViewSettings {
        augment: augment.config.clone(),
        normalization: data::Normalization::default_for(data.kind, data.channels),
        seed: p.metrics.seed,
        batch: p.metrics.batch,
    };
    let k = p.metrics.views;
    let mut scores = Scores::default();
    if need_unit {
        let unseen = if pf.needs_unit_control() {
            let u = unseen_for(points.len())?;
            if u.is_none() {
                return Err(pf.error_at(None, "data", "criterion unitmem-excess needs the train split (its control is the test split)"));
            }
            u
        } else {
            None
        };
        scores.unit_mem = Some(measure::unit_scores_with_control(
            &encoder,
            &data,
            &points,
            unseen.as_ref().map(|(s, v)| (s, v.as_slice())),
            k,
            p.metrics.reduce,
            false,
            &settings,
            progress,
        )?);
    }
    if need_class {
        let pb = measure::progress_bar(points.len(), progress, "ClassMem");
        scores.class_mem = Some(measure::class_mem(
            &encoder, &data, &points, k, &settings, &pb,
        )?);
    }
    if let Some(g) = &reference {
        // f as LayerMem compares it (a ViT's sub-layers): the layers `measure layer` shows.
        let f = crate::jobs::layer_mem::load(&model_path, &load_options(p))?;
        measure::check_pair(&f, g)
            .map_err(|e| pf.error_at(None, "reference", &format!("reference: {e}")))?;
        crate::checkpoint::train_meta::check_reference(&f.checkpoint, &g.checkpoint)?;
        // Layers are ranked by the corrected LayerMem (candidates minus unseen points).
        let unseen = unseen_for(layer_points.len())?;
        scores.layer_mem = Some(crate::jobs::layer_mem::with_control(
            &f,
            g,
            &data,
            &layer_points,
            unseen.as_ref().map(|(t, v)| (t, v.as_slice())),
            k,
            &settings,
            progress,
        )?);
    }
    taylor_gradients(
        &pf,
        &encoder,
        &groups,
        &data,
        &points,
        &settings,
        &mut scores,
    )?;
    let mut plan = make_plan_step(&pf, &encoder, &groups, &scores, step)?;
    if step.of > 1 && step.index == 1 {
        plan.notes.push(format!(
            "schedule: this is step 1 of {}; the policy run plans each later step on the model the earlier ones left",
            step.of
        ));
    }
    Ok(Planned {
        policy: pf,
        encoder,
        groups,
        scores,
        plan,
        data,
        points,
        augment,
    })
}

/// The gradients of every loss the policy's `taylor` actions rank by (on the policy's points,
/// views from its augmentation and seed).
fn taylor_gradients(
    pf: &PolicyFile,
    encoder: &Encoder,
    groups: &[CouplingGroup],
    data: &ImageSet,
    points: &[usize],
    settings: &ViewSettings,
    scores: &mut Scores,
) -> Result<()> {
    use crate::plan::criteria::taylor;
    for (i, a) in pf.policy.actions.iter().enumerate() {
        let crate::plan::policy::Action::Prune(a) = a else {
            continue;
        };
        if a.criterion != crate::plan::policy::Criterion::Taylor {
            continue;
        }
        let loss = crate::plan::planner::taylor_loss(pf, i, a, encoder)?;
        if scores.gradients.contains_key(&loss) {
            continue;
        }
        let d = taylor::LossData {
            set: data,
            points,
            augment: &settings.augment,
            normalization: &settings.normalization,
            seed: settings.seed,
        };
        let grads =
            taylor::loss_gradients(encoder, loss, &d, &taylor::producer_tensors(groups.iter()))
                .map_err(|e| {
                    pf.error_at(Some(i), "criterion", &format!("actions[{i}].prune: {e}"))
                })?;
        scores.gradients.insert(loss, grads);
    }
    Ok(())
}

/// Removing a residual-stream channel is not zeroing it: LayerNorm then normalises over
/// fewer channels. Compares the removed model with the masked one on up to 64 images.
fn inexact_change(planned: &Planned, removed: &Encoder) -> Result<Option<InexactChange>> {
    if planned.plan.mode != Some(crate::rewrite::PruneMode::Remove) {
        return Ok(None);
    }
    let cuts = planned.plan.cuts();
    let groups: Vec<String> = cuts
        .iter()
        .filter(|c| {
            planned
                .groups
                .iter()
                .any(|g| g.name == c.group && g.inexact.is_some())
        })
        .map(|c| c.group.clone())
        .collect();
    if groups.is_empty() {
        return Ok(None);
    }
    let enc = &planned.encoder;
    let masked = prune_tensors(
        &enc.checkpoint.stored,
        &planned.groups,
        &cuts,
        crate::rewrite::PruneMode::Mask,
    )?;
    let masked = Encoder::from_checkpoint(
        crate::checkpoint::Checkpoint::from_tensors(
            &enc.checkpoint.path,
            masked,
            enc.checkpoint.metadata.clone(),
        ),
        &load_options(&planned.policy.policy),
    )?;
    let points: Vec<usize> = (0..planned.data.len().min(64)).collect();
    let x = crate::train::clean_tensor(
        &crate::data::AugmentConfig::identity(),
        &data::Normalization::default_for(planned.data.kind, planned.data.channels),
        &planned.data,
        &points,
    )?;
    let (a, mut b) = (removed.features(&x)?, masked.features(&x)?);
    // Compared on the channels both have: removing stream channels removes them from the
    // representation too.
    if let Some(stream) = cuts.iter().find(|c| {
        planned.groups.iter().any(|g| {
            g.name == c.group && g.inexact.is_some() && g.channels == b.dim(1).unwrap_or(0)
        })
    }) {
        let kept: Vec<u32> = (0..b.dim(1)? as u32)
            .filter(|c| !stream.channels.contains(&(*c as usize)))
            .collect();
        let idx = candle_core::Tensor::from_vec(kept.clone(), kept.len(), b.device())?;
        b = b.contiguous()?.index_select(&idx, 1)?;
    }
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let norm = b.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok(Some(InexactChange {
        groups,
        images: points.len(),
        relative_l2: (diff / norm.max(f64::MIN_POSITIVE)).sqrt(),
    }))
}

/// The metadata memprune adds to a rewritten checkpoint.
pub fn rewrite_metadata(planned: &Planned) -> Result<BTreeMap<String, String>> {
    rewrite_metadata_of(planned, &planned.plan)
}

/// [`rewrite_metadata`] for `plan`, the units a schedule removed over all its steps.
pub fn rewrite_metadata_of(planned: &Planned, plan: &Plan) -> Result<BTreeMap<String, String>> {
    let pf = &planned.policy;
    let mut m = BTreeMap::new();
    m.insert(keys::POLICY.into(), pf.text.clone());
    m.insert(
        keys::POLICY_SHA256.into(),
        format!("{:x}", sha2::Sha256::digest(pf.text.as_bytes())),
    );
    m.insert(
        keys::SOURCE.into(),
        planned.encoder.checkpoint.path.display().to_string(),
    );
    let removed: BTreeMap<&str, &Vec<usize>> = plan
        .groups
        .iter()
        .filter(|g| !g.pruned.is_empty())
        .map(|g| (g.group.as_str(), &g.pruned))
        .collect();
    if let Some(mode) = plan.mode {
        m.insert(
            keys::PRUNE_MODE.into(),
            serde_json::to_value(mode)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        m.insert(keys::PRUNED.into(), serde_json::to_string(&removed)?);
    }
    if let Some(t) = &plan.trainable {
        m.insert(keys::TRAINABLE.into(), serde_json::to_string(t)?);
    }
    let gone: Vec<(String, usize)> = match plan.mode {
        Some(crate::rewrite::prune::PruneMode::Remove) => removed
            .iter()
            .map(|(g, units)| (g.to_string(), units.len()))
            .collect(),
        _ => Vec::new(),
    };
    m.extend(planned.encoder.arch.rewrite_metadata(&gone));
    Ok(m)
}

/// The forward-speed row: batches of this many images, before and after timed alternately
/// this many rounds (the ratio's median and range are printed).
pub const SPEED_BATCH: usize = 256;
pub const SPEED_ROUNDS: usize = 7;

/// Writes the rewritten checkpoint and evaluates the model before and after.
/// The checkpoint is staged in `outputs` (moved into place by its commit, at the end).
pub fn run_policy(planned: &Planned, outputs: &mut OutputSet) -> Result<PolicyReport> {
    let pf = &planned.policy;
    let out = pf.output_checkpoint();
    let staged = outputs.reserve(&out)?;
    let enc = &planned.encoder;
    let executed = crate::jobs::policy_steps::execute(planned, false)?;
    let tensors = match (&executed, planned.plan.mode) {
        (Some(e), _) => e.tensors.clone(),
        (None, Some(mode)) => prune_tensors(
            &enc.checkpoint.stored,
            &planned.groups,
            &planned.plan.cuts(),
            mode,
        )?,
        (None, None) => enc.checkpoint.stored.clone(),
    };
    let plan = executed.as_ref().map(|e| &e.plan).unwrap_or(&planned.plan);
    write_rewritten(
        &staged,
        &enc.checkpoint,
        &tensors,
        &rewrite_metadata_of(planned, plan)?,
    )?;
    // The rewritten file goes back through detection like any other checkpoint.
    let after = Encoder::load(&staged, &LoadOptions::default())
        .with_context(|| format!("{}: the rewritten checkpoint does not load", out.display()))?;
    let size = planned.augment.config.output_size(&planned.data);
    let speed = pf.policy.evaluation.speed;
    // A schedule's or a recovery's model is not the plan's masked model plus a removal.
    let inexact_change = match &executed {
        Some(_) => None,
        None => inexact_change(planned, &after)?,
    };
    let (mut cost_before, mut cost_after) = (
        cost(enc, size, false, 0, 0)?,
        cost(&after, size, false, 0, 0)?,
    );
    let speed = if speed {
        let s = compare_speed(enc, &after, size, SPEED_BATCH, SPEED_ROUNDS)?;
        cost_before.images_per_s = Some(s.before_images_per_s);
        cost_after.images_per_s = Some(s.after_images_per_s);
        Some(s)
    } else {
        None
    };
    Ok(PolicyReport {
        inexact_change,
        speed,
        policy: pf.path.clone(),
        augment: planned.augment.clone(),
        plan: plan.clone(),
        before: Evaluated {
            checkpoint: enc.checkpoint.path.clone(),
            cost: cost_before,
            probe_accuracy: None,
            knn: None,
            finetune: None,
        },
        after: Evaluated {
            checkpoint: out.clone(),
            cost: cost_after,
            probe_accuracy: None,
            knn: None,
            finetune: None,
        },
        recovery: executed.as_ref().map(|e| e.recovery.clone()),
        pruned: executed.and_then(|e| e.pruned),
    })
}

/// The probe's default data: the policy's data path, train and test splits.
pub fn probe_sets(planned: &Planned) -> Result<(ImageSet, ImageSet)> {
    let e = &planned.policy.policy.evaluation;
    let base = planned
        .policy
        .policy
        .data
        .path
        .clone()
        .unwrap_or_else(crate::defaults::data);
    let read = planned
        .policy
        .policy
        .data
        .options()
        .for_encoder(&planned.encoder);
    let train_path = e.train.as_ref().unwrap_or(&base);
    let train = data::open::open_with(train_path, Split::Train, &read)?;
    let test = match &e.test {
        // An explicit test path is the unseen data, whatever its layout.
        Some(t) => data::open::open_with(
            train_path,
            Split::Test,
            &crate::data::DataOptions {
                test_data: Some(t.clone()),
                holdout: None,
                ..read
            },
        )?,
        None => data::open::open_with(train_path, Split::Test, &read)?,
    };
    Ok((train, test))
}

/// Linear-probe accuracy (and kNN, when asked) of the model before (features cached under
/// `out/cache`) and after, on the same data and settings; `None` when the policy turns the
/// probe off.
pub fn probe_before_after(
    planned: &Planned,
    report: &mut PolicyReport,
    outputs: &OutputSet,
) -> Result<Option<(f64, f64)>> {
    use crate::eval::probe::{fit, ProbeSettings};
    let e = &planned.policy.policy.evaluation;
    if !e.probe && !e.knn {
        return Ok(None);
    }
    let (train, test) = probe_sets(planned)?;
    let labels = |s: &ImageSet| {
        s.labels
            .clone()
            .with_context(|| format!("{}: the linear probe needs labels", s.source))
    };
    let (ytr, yte) = (labels(&train)?, labels(&test)?);
    let settings = ProbeSettings::default();
    let cache = PathBuf::from("out").join("cache");
    let before = &planned.encoder;
    let after = Encoder::load(
        &outputs.current(&report.after.checkpoint),
        &LoadOptions::default(),
    )?;
    let knn_settings = crate::eval::knn::KnnSettings::default();
    let want_knn = planned.policy.policy.evaluation.knn;
    let want_probe = planned.policy.policy.evaluation.probe;
    type Scores = (Option<f64>, Option<crate::eval::knn::KnnResult>);
    let acc = |e: &Encoder, cached: bool| -> Result<Scores> {
        let (ftr, fte) = if cached {
            (
                crate::eval::feature_cache::features(e, &train, &settings, &cache)?,
                crate::eval::feature_cache::features(e, &test, &settings, &cache)?,
            )
        } else {
            (
                crate::eval::probe::encoder_features(e, &train, &settings)?,
                crate::eval::probe::encoder_features(e, &test, &settings)?,
            )
        };
        let knn = if want_knn {
            Some(crate::eval::knn::knn(
                &ftr,
                &ytr,
                &fte,
                &yte,
                &knn_settings,
            )?)
        } else {
            None
        };
        let probe = if want_probe {
            Some(fit(&ftr, &ytr, &fte, &yte, &settings)?.test_accuracy)
        } else {
            None
        };
        Ok((probe, knn))
    };
    let ((b, kb), (a, ka)) = (acc(before, true)?, acc(&after, false)?);
    if let (Some(p), Some(rec)) = (&report.pruned, report.recovery.as_mut()) {
        (rec.pruned_probe_accuracy, rec.pruned_knn) = acc(p, false)?;
    }
    report.before.probe_accuracy = b;
    report.after.probe_accuracy = a;
    report.before.knn = kb;
    report.after.knn = ka;
    Ok(b.zip(a))
}

/// `evaluation.finetune`: the head only on the model before, and the layers the plan marked
/// trainable on the model after, fine-tuned on the downstream task for every seed.
pub fn finetune_before_after(
    planned: &Planned,
    report: &mut PolicyReport,
    outputs: &OutputSet,
    mut progress: impl FnMut(&str),
) -> Result<
    Option<(
        crate::eval::finetune::FinetuneResult,
        crate::eval::finetune::FinetuneResult,
    )>,
> {
    let Some(ft) = &planned.policy.policy.evaluation.finetune else {
        return Ok(None);
    };
    let layers = planned.plan.trainable.clone().unwrap_or_default();
    let path = ft.data_path();
    let train = data::open(&path, Split::Train)?;
    let test = data::open(&path, Split::Test)?;
    let settings = crate::eval::finetune::settings_from(ft);
    let after = Encoder::load(
        &outputs.current(&report.after.checkpoint),
        &LoadOptions::default(),
    )?;
    progress(&format!(
        "fine-tuning on {}: the head only, then {}",
        path.display(),
        if layers.is_empty() {
            "-".to_string()
        } else {
            layers.join(",")
        }
    ));
    let b = crate::eval::finetune::finetune(&planned.encoder, &[], &train, &test, &settings)?;
    let a = crate::eval::finetune::finetune(&after, &layers, &train, &test, &settings)?;
    report.before.finetune = Some(b.clone());
    report.after.finetune = Some(a.clone());
    Ok(Some((b, a)))
}
