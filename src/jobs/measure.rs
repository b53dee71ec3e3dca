//! What `measure unit`, `measure class` and `measure layer` share: the request (model, data,
//! points, views, normalisation, augmentation, control, shard), its defaults and checks,
//! and the preparation every metric starts from.

use crate::data::augment_choice::{self, GivenAugment};
use crate::data::normalize::Normalization;
use crate::data::{self, DataOptions, ImageSet, Split};
use crate::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use crate::model::{Encoder, LoadOptions};
use crate::shard::partial::{self, Metric, Partial, Run, State};
use crate::shard::Shard;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// One measurement's settings, as `measure` takes them.
#[derive(Debug, Clone)]
pub struct MeasureRequest {
    /// The encoder f.
    pub model: PathBuf,
    pub load: LoadOptions,
    pub data: PathBuf,
    pub split: Split,
    pub read: DataOptions,
    /// Which points (default: the metric's, [`DefaultPoints`]).
    pub points: PointChoice,
    /// K: augmented views per point (LayerMem: K pairs).
    pub views: usize,
    pub seed: u64,
    /// Views per forward pass: memory, not results.
    pub batch: usize,
    /// Overrides of the data set's usual normalisation (`--mean`, `--std`).
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    /// `None`: the augmentation the checkpoint records ([`augment_choice::choose`]).
    pub augment: Option<GivenAugment>,
    /// Measure the control (unseen test points) beside the points.
    pub control: bool,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// The part of the points this run measures (all of them: [`Shard::WHOLE`]).
    pub shard: Shard,
    /// The views will also be written out (`--dump-views`): counted in the memory check.
    pub dump_views: bool,
}

impl MeasureRequest {
    /// `measure`'s defaults: the embedded encoder f and data when `None`.
    pub fn new(model: Option<PathBuf>, data: Option<PathBuf>) -> MeasureRequest {
        MeasureRequest {
            model: model.unwrap_or_else(crate::defaults::model_f),
            load: LoadOptions::default(),
            data: data.unwrap_or_else(crate::defaults::data),
            split: Split::Train,
            read: DataOptions::default(),
            points: PointChoice::default(),
            views: crate::defaults::VIEWS,
            seed: crate::defaults::SEED,
            batch: crate::defaults::BATCH,
            mean: None,
            std: None,
            augment: None,
            control: true,
            device: "cpu".into(),
            shard: Shard::WHOLE,
            dump_views: false,
        }
    }

    /// The user set --mean or --std.
    pub fn custom_normalization(&self) -> bool {
        self.mean.is_some() || self.std.is_some()
    }

    fn split_name(&self) -> String {
        format!("{:?}", self.split).to_lowercase()
    }
}

/// The data set's usual normalisation with the user's `mean` and `std` in place of its own,
/// checked against the images' channels.
pub fn normalization(
    set: &ImageSet,
    mean: Option<&[f32]>,
    std: Option<&[f32]>,
) -> Result<Normalization> {
    use anyhow::Context;
    let mut n = Normalization::default_for(set.kind, set.channels);
    if let Some(m) = mean {
        n.mean = m.to_vec();
    }
    if let Some(s) = std {
        n.std = s.to_vec();
    }
    n.validate(set.channels).context("--mean/--std")?;
    Ok(n)
}

/// A request made ready: the encoder(s), the data, the points and how views are made.
pub struct Prepared {
    pub encoder: Encoder,
    /// LayerMem's g.
    pub reference: Option<Encoder>,
    pub set: ImageSet,
    pub points: Vec<usize>,
    pub settings: ViewSettings,
    pub augment: augment_choice::ChosenAugment,
}

/// Loads and checks what `r` measures. `per_point`: the views a point is measured on (K for
/// UnitMem and ClassMem, 2K + 1 for LayerMem at most), for the memory check; `reference`:
/// LayerMem's g. The augmentation line is the caller's to print
/// ([`Prepared::augment`]), first.
pub fn prepare(
    r: &MeasureRequest,
    default_points: DefaultPoints,
    per_point: usize,
    reference: Option<&Path>,
) -> Result<Prepared> {
    if r.points.points == Some(0) {
        bail!("--points must be at least 1");
    }
    let device = crate::model::device::parse(&r.device)?;
    let encoder = Encoder::load_on(&r.model, &r.load, &device)?;
    let set = data::open::open_with(&r.data, r.split, &r.read.for_encoder(&encoder))?;
    let points =
        measure::choose_points(&r.points, &set, r.split, &encoder, r.seed, default_points)?;
    let normalization = normalization(&set, r.mean.as_deref(), r.std.as_deref())?;
    let reference = reference
        .map(|g| Encoder::load_on(g, &r.load, &encoder.device))
        .transpose()?;
    let augment = augment_choice::choose(
        r.augment.clone(),
        &encoder.checkpoint,
        reference.as_ref().map(|g| &g.checkpoint),
    )?;
    let settings = ViewSettings {
        augment: augment.config.clone(),
        normalization,
        seed: r.seed,
        batch: r.batch,
    };
    crate::data::limits::check_views(
        points.len(),
        per_point,
        r.batch,
        set.channels,
        settings.size(&set),
        r.dump_views,
    )?;
    Ok(Prepared {
        encoder,
        reference,
        set,
        points,
        settings,
        augment,
    })
}

/// The control's unseen points: as many test-split points as `p` measures (none without a
/// control, or when the measured split is not the training split).
pub fn unseen_for(r: &MeasureRequest, p: &Prepared) -> Result<Option<(ImageSet, Vec<usize>)>> {
    if !r.control || r.split != Split::Train {
        return Ok(None);
    }
    let test = data::open::open_with(&r.data, Split::Test, &r.read.for_encoder(&p.encoder))?;
    let pts = measure::unseen_points(&test, p.points.len(), r.seed)?;
    Ok(Some((test, pts)))
}

/// The settings object of the JSON output (`extra`: the metric's own), with the control's
/// point names and data line when there is one.
pub fn settings_json(
    r: &MeasureRequest,
    p: &Prepared,
    extra: serde_json::Value,
    control: Option<&(ImageSet, Vec<usize>)>,
) -> serde_json::Value {
    let custom = r.custom_normalization();
    let mut s = serde_json::json!({
        "memprune_version": env!("CARGO_PKG_VERSION"),
        "model": p.encoder.checkpoint.path.display().to_string(),
        "arch": p.encoder.describe(),
        "data": p.set.source,
        "split": r.split_name(),
        "points": p.points,
        "views": r.views,
        "seed": r.seed,
        "augment": p.settings.augment,
        "augment_source": p.augment.source,
        "normalization": p.settings.normalization,
        "data_options": r.read.to_json(),
        "data_line": data::options::data_line(&p.set, &r.split_name(), &p.settings.normalization, custom),
        "point_names": p.set.names.of(&p.points),
        "extra": extra,
    });
    if let Some((set, pts)) = control {
        s["control_point_names"] = set.names.of(pts).into();
        s["control_data_line"] =
            data::options::data_line(set, "test", &p.settings.normalization, custom).into();
    }
    s
}

/// A measurement done: the run's settings and its accumulators (of one shard, or of all
/// points), with what a partial result records the digests of.
pub struct Measured {
    pub shard: Shard,
    pub run: Run,
    pub state: State,
    /// The files measured (`checkpoint`, `reference`).
    pub files: Vec<(&'static str, PathBuf)>,
    /// The data sets measured (`data`, `control data`).
    pub sets: Vec<(&'static str, ImageSet)>,
}

impl Measured {
    /// The partial result of this shard (with the digests of what it measured) and the line
    /// that says what it holds.
    pub fn partial(mut self, path: &Path) -> Result<(String, String)> {
        for (k, f) in &self.files {
            self.run
                .digests
                .insert(k.to_string(), partial::digest_file(f)?);
        }
        for (k, s) in &self.sets {
            self.run
                .digests
                .insert(k.to_string(), partial::digest_images(s));
        }
        let shard = self.shard;
        let (n, nc) = (
            shard.range(self.run.points.len()).len(),
            self.run.points.len(),
        );
        let ctrl = self
            .run
            .control_points
            .as_ref()
            .map(|c| {
                format!(
                    " and {} of {} control points",
                    shard.range(c.len()).len(),
                    c.len()
                )
            })
            .unwrap_or_default();
        let what = match self.run.metric {
            Metric::Unit => "UnitMem",
            Metric::Class => "ClassMem",
            Metric::Layer => "LayerMem",
        };
        let text = Partial::new(shard, self.run, self.state).to_json()?;
        let line = format!(
            "{what} shard {shard}: {n} of {nc} points{ctrl}; partial result {} (merge all {} with `memprune merge`)",
            path.display(),
            shard.count
        );
        Ok((text, line))
    }

    /// What one whole run prints and writes.
    pub fn render(&self) -> Result<super::Rendered> {
        render(&self.run, &self.state)
    }
}

/// What `measure` prints and writes from a whole run's state (one run, or the merge of its
/// shards).
pub fn render(run: &Run, state: &State) -> Result<super::Rendered> {
    match run.metric {
        Metric::Unit | Metric::Class => super::unit_mem::UnitMemResult::of(run, state)?.render(run),
        Metric::Layer => super::layer_mem::LayerMemResult::of(run, state)?.render(run),
    }
}

/// The names of a run's points and control points (recorded in its settings).
pub fn namer(run: &Run) -> crate::report::point_names::Namer {
    let ctrl = run.control_points.clone().unwrap_or_default();
    crate::report::point_names::Namer::of_settings(&run.settings, &run.points, &ctrl)
}

/// The data lines a run recorded: its points' and its control's.
pub fn data_lines(run: &Run, out: &mut String) {
    for key in ["data_line", "control_data_line"] {
        if let Some(l) = run.settings[key].as_str() {
            out.push_str(if key == "data_line" { "" } else { "control " });
            out.push_str(l);
            out.push('\n');
        }
    }
}
