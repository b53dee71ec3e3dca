//! memprune's main job: a policy file -> measure -> plan -> rewrite -> evaluate.

use crate::checkpoint::keys;
use crate::data::augment_choice::{self, ChosenAugment, GivenAugment};
use crate::data::{self, ImageSet, Split};
use crate::eval::cost::{cost, Cost};
use crate::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use crate::model::coupling::{coupling_groups, CouplingGroup};
use crate::model::{Encoder, LoadOptions};
use crate::output::OutputSet;
use crate::plan::policy::check_exists;
use crate::plan::{make_plan, Plan, PolicyFile, Scores};
use crate::rewrite::{prune_tensors, write_rewritten};
use anyhow::{Context, Result};
use serde::Serialize;
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

/// Measures what the policy ranks by and makes the plan. Writes nothing.
pub fn plan_policy(pf: PolicyFile, progress: bool) -> Result<Planned> {
    let p = &pf.policy;
    if let Some(ft) = &p.evaluation.finetune {
        crate::eval::finetune::settings_from(ft)
            .validate()
            .map_err(|e| pf.error_at(None, "finetune", &format!("evaluation.{e}")))?;
    }
    let model_path = p.model.clone().unwrap_or_else(crate::defaults::model_f);
    check_exists(&pf, "model", &model_path)?;
    let encoder = Encoder::load(&model_path, &load_options(p))?;
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
        Some(Encoder::load(&ref_path, &load_options(p))?)
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
        measure::check_pair(&encoder, g)
            .map_err(|e| pf.error_at(None, "reference", &format!("reference: {e}")))?;
        crate::checkpoint::train_meta::check_reference(&encoder.checkpoint, &g.checkpoint)?;
        // Layers are ranked by the corrected LayerMem (candidates minus unseen points).
        let unseen = unseen_for(layer_points.len())?;
        scores.layer_mem = Some(measure::layer_mem_with_control(
            &encoder,
            g,
            &data,
            &layer_points,
            unseen.as_ref().map(|(t, v)| (t, v.as_slice())),
            k,
            &settings,
            progress,
        )?);
    }
    let plan = make_plan(&pf, &encoder, &groups, &scores)?;
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
}

#[derive(Debug, Clone, Serialize)]
pub struct InexactChange {
    pub groups: Vec<String>,
    pub images: usize,
    /// ||removed - masked|| / ||masked|| of the `pool` features.
    pub relative_l2: f64,
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
    let removed: BTreeMap<&str, &Vec<usize>> = planned
        .plan
        .groups
        .iter()
        .filter(|g| !g.pruned.is_empty())
        .map(|g| (g.group.as_str(), &g.pruned))
        .collect();
    if let Some(mode) = planned.plan.mode {
        m.insert(
            keys::PRUNE_MODE.into(),
            serde_json::to_value(mode)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        m.insert(keys::PRUNED.into(), serde_json::to_string(&removed)?);
    }
    if let Some(t) = &planned.plan.trainable {
        m.insert(keys::TRAINABLE.into(), serde_json::to_string(t)?);
    }
    let gone: Vec<(String, usize)> = match planned.plan.mode {
        Some(crate::rewrite::prune::PruneMode::Remove) => removed
            .iter()
            .map(|(g, units)| (g.to_string(), units.len()))
            .collect(),
        _ => Vec::new(),
    };
    m.extend(planned.encoder.arch.rewrite_metadata(&gone));
    Ok(m)
}

/// Writes the rewritten checkpoint and evaluates the model before and after.
/// The checkpoint is staged in `outputs` (moved into place by its commit, at the end).
pub fn run_policy(planned: &Planned, outputs: &mut OutputSet) -> Result<PolicyReport> {
    let pf = &planned.policy;
    let out = pf.output_checkpoint();
    let staged = outputs.reserve(&out)?;
    let enc = &planned.encoder;
    let tensors = match planned.plan.mode {
        Some(mode) => prune_tensors(
            &enc.checkpoint.stored,
            &planned.groups,
            &planned.plan.cuts(),
            mode,
        )?,
        None => enc.checkpoint.stored.clone(),
    };
    write_rewritten(
        &staged,
        &enc.checkpoint,
        &tensors,
        &rewrite_metadata(planned)?,
    )?;
    // The rewritten file goes back through detection like any other checkpoint.
    let after = Encoder::load(&staged, &LoadOptions::default())
        .with_context(|| format!("{}: the rewritten checkpoint does not load", out.display()))?;
    let size = planned.augment.config.output_size(&planned.data);
    let speed = pf.policy.evaluation.speed;
    let inexact_change = inexact_change(planned, &after)?;
    Ok(PolicyReport {
        inexact_change,
        policy: pf.path.clone(),
        augment: planned.augment.clone(),
        plan: planned.plan.clone(),
        before: Evaluated {
            checkpoint: enc.checkpoint.path.clone(),
            cost: cost(enc, size, speed, 256, 5)?,
            probe_accuracy: None,
            knn: None,
            finetune: None,
        },
        after: Evaluated {
            checkpoint: out.clone(),
            cost: cost(&after, size, speed, 256, 5)?,
            probe_accuracy: None,
            knn: None,
            finetune: None,
        },
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
