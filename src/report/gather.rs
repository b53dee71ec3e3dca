//! The report job: measures everything the HTML report shows (UnitMem with its control on
//! unseen points, LayerMem with the unseen and the symmetric control, SSLMem' of every
//! candidate), with `measure`'s functions and defaults, so the report's numbers are
//! `measure`'s numbers for the same settings.

use crate::data::augment_choice::{self, ChosenAugment, GivenAugment};
use crate::data::{self, ImageSet, Normalization, Split};
use crate::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use crate::metrics::bootstrap::Bootstrap;
use crate::metrics::layer_mem::{self, Control, LayerMemLayer, Pairing, PointScores};
use crate::metrics::unit_mem::{Reduce, UnitMemLayer};
use crate::model::{Encoder, LoadOptions};
use crate::plan::PolicyFile;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::Digest;
use std::path::{Path, PathBuf};

/// What to measure the report on.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub model: PathBuf,
    /// LayerMem's reference g; `None`: the report has no LayerMem sections (and says why).
    pub reference: Option<PathBuf>,
    pub data: PathBuf,
    /// How the data's splits are read (--test-data, --holdout, --resize, --crop).
    pub data_options: crate::data::DataOptions,
    pub load: LoadOptions,
    /// UnitMem's points (default: `measure unit`'s, the encoder's own training points).
    pub unit_points: PointChoice,
    /// LayerMem's points (default: `measure layer`'s, the candidates recorded in f).
    pub candidates: PointChoice,
    pub views: usize,
    pub reduce: Reduce,
    /// The augmentation the user gave; `None`: the checkpoint's recorded one
    /// ([`augment_choice::choose`]).
    pub augment: Option<GivenAugment>,
    pub seed: u64,
    /// Views per forward pass (memory, not results).
    pub batch: usize,
}

impl ReportSettings {
    /// `measure`'s defaults on `model` (the embedded f, g and data when `None`).
    pub fn defaults(model: Option<PathBuf>) -> ReportSettings {
        ReportSettings {
            reference: model.is_none().then(crate::defaults::model_g),
            model: model.unwrap_or_else(crate::defaults::model_f),
            data: crate::defaults::data(),
            data_options: Default::default(),
            load: LoadOptions::default(),
            unit_points: PointChoice::default(),
            candidates: PointChoice::default(),
            views: crate::defaults::VIEWS,
            reduce: Reduce::Mean,
            augment: None,
            seed: crate::defaults::SEED,
            batch: crate::defaults::BATCH,
        }
    }

    /// What a policy's `output.report` shows: the policy's model, reference (the embedded g
    /// for the embedded f), data, points and metric settings.
    pub fn of_policy(pf: &PolicyFile) -> Result<ReportSettings> {
        let p = &pf.policy;
        if p.data.split != Split::Train {
            return Err(pf.error_at(
                None,
                "report",
                "output.report needs data.split: train (its controls are the test split)",
            ));
        }
        let choice = PointChoice {
            points: p.data.points,
            range: p.data.range.clone(),
            indices: p.data.indices.clone(),
        };
        Ok(ReportSettings {
            reference: p
                .reference
                .clone()
                .or_else(|| p.model.is_none().then(crate::defaults::model_g)),
            model: p.model.clone().unwrap_or_else(crate::defaults::model_f),
            data: p.data.path.clone().unwrap_or_else(crate::defaults::data),
            data_options: p.data.options(),
            load: LoadOptions::default(),
            unit_points: choice.clone(),
            candidates: choice,
            views: p.metrics.views,
            reduce: p.metrics.reduce,
            augment: p.metrics.augment.clone().map(|config| GivenAugment {
                config,
                from: format!("{}: metrics.augment", pf.path.display()),
            }),
            seed: p.metrics.seed,
            batch: p.metrics.batch,
        })
    }
}

/// A file the report read, with its SHA-256, so the report can be reproduced.
#[derive(Debug, Clone, Serialize)]
pub struct Digested {
    pub path: PathBuf,
    pub sha256: String,
}

impl Digested {
    pub fn of(path: &Path) -> Result<Digested> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Ok(Digested {
            path: path.to_path_buf(),
            sha256: format!("{:x}", sha2::Sha256::digest(&bytes)),
        })
    }
}

/// LayerMem against g, with both controls.
#[derive(Debug, Clone)]
pub struct LayerPart {
    pub reference: Digested,
    pub candidates: Vec<usize>,
    /// SSLMem' of every candidate at every layer.
    pub per_point: Vec<PointScores>,
    /// Corrected by as many unseen (test-split) points.
    pub unseen_points: Vec<usize>,
    pub layers: Vec<LayerMemLayer>,
    /// Corrected by g's own independent points (the symmetric estimate), when g records them.
    pub independent_points: Option<Vec<usize>>,
    pub symmetric: Option<Vec<LayerMemLayer>>,
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub settings: ReportSettings,
    /// How the views were made (the data set's usual normalisation).
    pub view: ViewSettings,
    /// The augmentation of `view`, with where it came from.
    pub augment: ChosenAugment,
    pub model: Digested,
    pub arch: String,
    /// The training split: where every shown image comes from.
    pub train: ImageSet,
    pub unit_points: Vec<usize>,
    pub unit_unseen_points: Vec<usize>,
    /// UnitMem of every layer with its control (UnitMem-excess per unit).
    pub unit: Vec<UnitMemLayer>,
    /// The layers UnitMem does not score (no known lower bound of act_u).
    pub unit_unscored: Vec<String>,
    /// `None` when no reference was given: [`Gathered::no_layer_reason`] says why.
    pub layer: Option<LayerPart>,
    pub no_layer_reason: Option<String>,
    /// The planted points recorded in f, to mark them in the grids.
    pub planted: Option<Vec<usize>>,
}

/// Measures what the report shows. Writes nothing.
pub fn gather(s: &ReportSettings, progress: bool) -> Result<Gathered> {
    if s.views == 0 {
        bail!("--views must be at least 1");
    }
    if s.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let f = Encoder::load(&s.model, &s.load)?;
    // A ViT's LayerMem layers are its attention and MLP sub-layer outputs, as in `measure layer`.
    let sub_layers = LoadOptions {
        sub_layers_only: true,
        ..s.load.clone()
    };
    let g = s
        .reference
        .as_ref()
        .map(|r| Encoder::load(r, &sub_layers))
        .transpose()?;
    let augment = augment_choice::choose(
        s.augment.clone(),
        &f.checkpoint,
        g.as_ref().map(|g| &g.checkpoint),
    )?;
    let read = s.data_options.for_encoder(&f);
    let train = data::open::open_with(&s.data, Split::Train, &read)?;
    let view = ViewSettings {
        augment: augment.config.clone(),
        normalization: Normalization::default_for(train.kind, train.channels),
        seed: s.seed,
        batch: s.batch,
    };
    let test = data::open::open_with(&s.data, Split::Test, &read)?;
    if test.is_empty() {
        bail!(
            "{}: the test split is empty: the report's controls need points the encoder never saw",
            test.source
        );
    }
    let unit_points = measure::choose_points(
        &s.unit_points,
        &train,
        Split::Train,
        &f,
        view.seed,
        DefaultPoints::Training(crate::defaults::UNIT_POINTS),
    )?;
    crate::data::limits::check_views(
        unit_points.len(),
        s.views.saturating_mul(2).saturating_add(1),
        view.batch,
        train.channels,
        view.size(&train),
        false,
    )?;
    let unit_unseen_points = measure::unseen_points(&test, unit_points.len(), view.seed)?;
    let unit = measure::unit_scores_with_control(
        &f,
        &train,
        &unit_points,
        Some((&test, &unit_unseen_points)),
        s.views,
        s.reduce,
        false,
        &view,
        progress,
    )?;
    let (layer, no_layer_reason) = match (&s.reference, &g) {
        (Some(r), Some(g)) => (
            Some(layer_part(s, &view, r, g, &train, &test, progress)?),
            None,
        ),
        _ => (
            None,
            Some(format!(
                "no reference encoder: LayerMem compares {} with an encoder trained without the scored points (--reference)",
                s.model.display()
            )),
        ),
    };
    Ok(Gathered {
        settings: s.clone(),
        view,
        augment,
        model: Digested::of(&s.model)?,
        arch: f.describe(),
        planted: crate::checkpoint::train_meta::planted_on(&f.checkpoint, &train)?,
        train,
        unit_points,
        unit_unseen_points,
        unit,
        unit_unscored: crate::metrics::unit_mem::unscored(
            &measure::layer_floors(&f),
            &measure::layer_names(&f),
        ),
        layer,
        no_layer_reason,
    })
}

/// LayerMem of f against the reference on the candidates, corrected by unseen points and,
/// when g records its independent points, by those (the symmetric estimate).
fn layer_part(
    s: &ReportSettings,
    view: &ViewSettings,
    reference: &Path,
    g: &Encoder,
    train: &ImageSet,
    test: &ImageSet,
    progress: bool,
) -> Result<LayerPart> {
    let opts = LoadOptions {
        sub_layers_only: true,
        ..s.load.clone()
    };
    let f = Encoder::load(&s.model, &opts)?;
    crate::checkpoint::train_meta::check_reference(&f.checkpoint, &g.checkpoint)?;
    let candidates = measure::choose_points(
        &s.candidates,
        train,
        Split::Train,
        &f,
        view.seed,
        DefaultPoints::Candidates(crate::defaults::LAYER_CANDIDATES),
    )?;
    let scores = |set: &ImageSet, pts: &[usize], what: &str| -> Result<Vec<PointScores>> {
        let pb = measure::progress_bar(pts.len(), progress, what);
        measure::layer_mem_points(&f, g, set, pts, s.views, Pairing::Views, view, &pb)
    };
    let per_point = scores(train, &candidates, "LayerMem")?;
    let unseen_points = measure::unseen_points(test, candidates.len(), view.seed)?;
    let unseen = scores(test, &unseen_points, "LayerMem (unseen control)")?;
    let independent_points = match crate::checkpoint::train_meta::independent_points(&g.checkpoint)?
    {
        Some(ind) => {
            if let Some(bad) = ind.iter().find(|&&i| i >= train.len()) {
                bail!(
                    "{}: independent point {bad} is outside {}",
                    reference.display(),
                    train.source
                );
            }
            Some(ind[..candidates.len().min(ind.len())].to_vec())
        }
        None => None,
    };
    let independent = match &independent_points {
        Some(v) => Some(scores(train, v, "LayerMem (symmetric control)")?),
        None => None,
    };
    let boot = Bootstrap {
        seed: view.seed,
        ..Default::default()
    };
    let names = measure::layer_names(&f);
    let layers = layer_mem::layer_mem(&names, &per_point, Some((&unseen, Control::Unseen)), &boot);
    let symmetric = independent
        .as_deref()
        .map(|v| layer_mem::layer_mem(&names, &per_point, Some((v, Control::Independent)), &boot));
    Ok(LayerPart {
        reference: Digested::of(reference)?,
        candidates,
        per_point,
        unseen_points,
        layers,
        independent_points,
        symmetric,
    })
}
