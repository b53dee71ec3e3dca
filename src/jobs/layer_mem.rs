//! The LayerMem job (`measure layer`), and the one LayerMem computation with its control
//! that every caller uses: `measure layer`, `merge`, policies ranking by `layermem` or
//! `dlayermem`, the report and Table 5.
//!
//! LayerMem compares the same layers of f and g; on a ViT those are its attention and MLP
//! sub-layer outputs (and `pool`), not the heads and fc1 taps UnitMem scores, so that
//! dLayerMem steps from one sub-layer to the next. [`load`] loads an encoder that way and
//! [`scores`] refuses one loaded otherwise: every caller ranks the layers `measure layer`
//! shows.

use super::measure::{self, MeasureRequest, Measured, Prepared};
use super::Rendered;
use crate::data::{self, DataOptions, ImageSet, Split};
use crate::measure::{DefaultPoints, ViewSettings};
use crate::metrics::bootstrap::Bootstrap;
use crate::metrics::layer_mem::{Control, LayerMemLayer, LayerScore, Pairing, PointScores};
use crate::metrics::unit_mem::Reduce;
use crate::model::{Encoder, LayerKind, LoadOptions};
use crate::shard::partial::{self, Metric, Run, State};
use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// How an encoder loads for LayerMem: `opts` with a ViT's layers as its attention and MLP
/// sub-layer outputs.
pub fn options(opts: &LoadOptions) -> LoadOptions {
    LoadOptions {
        sub_layers_only: true,
        ..opts.clone()
    }
}

/// Loads the encoder at `path` as LayerMem compares it ([`options`]).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Encoder> {
    Encoder::load(path, &options(opts))
}

/// Refuses an encoder loaded with a ViT's heads and fc1 taps as layers: its dLayerMem
/// would step through layers `measure layer` does not have.
fn check_layers(e: &Encoder) -> Result<()> {
    if let Some(l) = e
        .layers
        .iter()
        .find(|l| matches!(l.kind, LayerKind::AttentionHeads | LayerKind::MlpHidden))
    {
        bail!(
            "{}: LayerMem compares a ViT's attention and MLP sub-layer outputs, not `{}` (load it with jobs::layer_mem::load)",
            e.checkpoint.path.display(),
            l.name
        );
    }
    Ok(())
}

/// The independent points g records (it was trained by memprune on shared + independent),
/// at most `n`, checked to lie inside `train`; `None` when g records none.
pub fn independent_points(
    g: &Encoder,
    reference: &Path,
    train: &ImageSet,
    n: usize,
) -> Result<Option<Vec<usize>>> {
    let Some(ind) = crate::checkpoint::train_meta::independent_points(&g.checkpoint)? else {
        return Ok(None);
    };
    if let Some(bad) = ind.iter().find(|&&i| i >= train.len()) {
        bail!(
            "{}: independent point {bad} is outside {}",
            reference.display(),
            train.source
        );
    }
    Ok(Some(ind[..n.min(ind.len())].to_vec()))
}

/// SSLMem' of every point of `points` at every layer (`what`: the progress bar's label):
/// both encoders see identical views.
#[allow(clippy::too_many_arguments)]
pub fn point_scores(
    f: &Encoder,
    g: &Encoder,
    set: &ImageSet,
    points: &[usize],
    k: usize,
    pairing: Pairing,
    settings: &ViewSettings,
    progress: bool,
    what: &str,
) -> Result<Vec<PointScores>> {
    check_layers(f)?;
    check_layers(g)?;
    let pb = crate::measure::progress_bar(points.len(), progress, what);
    crate::measure::layer_mem_points(f, g, set, points, k, pairing, settings, &pb)
}

/// [`point_scores`] of f's candidates `points` and, when given, of the control's points
/// (with its progress label).
#[allow(clippy::too_many_arguments)]
pub fn scores(
    f: &Encoder,
    g: &Encoder,
    set: &ImageSet,
    points: &[usize],
    control: Option<(&ImageSet, &[usize], &str)>,
    k: usize,
    pairing: Pairing,
    settings: &ViewSettings,
    progress: bool,
) -> Result<(Vec<PointScores>, Option<Vec<PointScores>>)> {
    let cand = point_scores(
        f, g, set, points, k, pairing, settings, progress, "LayerMem",
    )?;
    let ctrl = match control {
        Some((cs, cp, what)) => Some(point_scores(
            f, g, cs, cp, k, pairing, settings, progress, what,
        )?),
        None => None,
    };
    Ok((cand, ctrl))
}

/// LayerMem and dLayerMem per layer with their bootstrap intervals (seeded by `seed`) and,
/// given the control's scores, the corrected LayerMem.
pub fn layers(
    names: &[String],
    points: &[PointScores],
    control: Option<(&[PointScores], Control)>,
    seed: u64,
) -> Vec<LayerMemLayer> {
    let boot = Bootstrap {
        seed,
        ..Default::default()
    };
    crate::metrics::layer_mem::layer_mem(names, points, control, &boot)
}

/// LayerMem of f's candidates `points` against g, corrected by as many `unseen` test
/// points when given: what policies and Table 5 rank layers by. Views pair as
/// [`Pairing::Views`].
#[allow(clippy::too_many_arguments)]
pub fn with_control(
    f: &Encoder,
    g: &Encoder,
    set: &ImageSet,
    points: &[usize],
    unseen: Option<(&ImageSet, &[usize])>,
    k: usize,
    settings: &ViewSettings,
    progress: bool,
) -> Result<Vec<LayerMemLayer>> {
    let (cand, ctrl) = scores(
        f,
        g,
        set,
        points,
        unseen.map(|(s, v)| (s, v, "LayerMem (control)")),
        k,
        Pairing::Views,
        settings,
        progress,
    )?;
    Ok(layers(
        &crate::measure::layer_names(f),
        &cand,
        ctrl.as_deref().map(|c| (c, Control::Unseen)),
        settings.seed,
    ))
}

/// `measure layer`.
#[derive(Debug, Clone)]
pub struct LayerMemRequest {
    /// The encoder f, its data and points (default: the first
    /// [`crate::defaults::LAYER_CANDIDATES`] candidates f records).
    pub measure: MeasureRequest,
    /// The reference g (default: the embedded g when f is the embedded f).
    pub reference: Option<PathBuf>,
    pub pairing: Pairing,
    pub score: LayerScore,
    /// Keep SSLMem' of every point in the result.
    pub per_point: bool,
    /// The control's points (`measure.control == false` means none).
    pub control: Control,
}

impl LayerMemRequest {
    /// The request with `measure layer`'s defaults on `measure`'s model and data.
    pub fn new(measure: MeasureRequest, reference: Option<PathBuf>) -> LayerMemRequest {
        LayerMemRequest {
            measure,
            reference,
            pairing: Pairing::Views,
            score: LayerScore::Eq2,
            per_point: false,
            control: Control::Unseen,
        }
    }

    /// Loads f and g as LayerMem compares them and the points (up to 2K views and the clean
    /// image of a point count in the memory check).
    pub fn prepare(&self) -> Result<Prepared> {
        let mut r = self.measure.clone();
        r.load = options(&r.load);
        let p = measure::prepare(
            &r,
            DefaultPoints::Candidates(crate::defaults::LAYER_CANDIDATES),
            r.views.saturating_mul(2).saturating_add(1),
            self.reference.as_deref(),
        )?;
        if self.reference.is_none() {
            bail!("measure layer needs --reference: an encoder trained like the model but without the scored points");
        }
        Ok(p)
    }

    /// What `--dump-views` records beside the views, and the JSON's `extra`.
    pub fn meta(&self) -> serde_json::Value {
        serde_json::json!({"metric": "layer", "views": self.measure.views, "pairing": self.pairing, "score": self.score})
    }

    fn control(&self) -> Control {
        if self.measure.control {
            self.control
        } else {
            Control::None
        }
    }

    /// The control's points: unseen test points, or g's own independent points.
    fn control_points(&self, p: &Prepared, g: &Encoder) -> Result<Option<(ImageSet, Vec<usize>)>> {
        let r = &self.measure;
        Ok(match self.control() {
            Control::None => None,
            Control::Unseen => measure::unseen_for(r, p)?,
            Control::Independent => {
                let reference = self.reference.as_deref().unwrap_or(Path::new(""));
                let set = data::open::open_with(
                    &r.data,
                    Split::Train,
                    &DataOptions::for_encoder(&r.read, &p.encoder),
                )?;
                let ind = independent_points(g, reference, &set, p.points.len())?
                    .with_context(|| format!("{}: --control independent needs a reference trained by memprune on shared+independent (it records its independent points)", reference.display()))?;
                Some((set, ind))
            }
        })
    }

    /// Measures the request's shard of `p`'s points (and of the control's).
    pub fn run(&self, mut p: Prepared, progress: bool) -> Result<Measured> {
        let r = &self.measure;
        let g = p.reference.take().expect("prepare loads the reference");
        crate::checkpoint::train_meta::check_reference(&p.encoder.checkpoint, &g.checkpoint)?;
        let control = self.control();
        let ctrl = self.control_points(&p, &g)?;
        let reference = self.reference.clone().unwrap_or_default();
        let run = Run {
            metric: Metric::Layer,
            settings: measure::settings_json(r, &p, self.meta(), ctrl.as_ref()),
            arch: p.encoder.describe(),
            model: p.encoder.checkpoint.path.display().to_string(),
            reference: Some(reference.display().to_string()),
            layers: crate::measure::layer_names(&p.encoder),
            points: p.points.clone(),
            views: r.views,
            seed: r.seed,
            reduce: Reduce::Mean,
            pairing: self.pairing,
            score: self.score,
            control,
            control_data: ctrl.as_ref().map(|(s, _)| s.source.clone()),
            control_points: ctrl.as_ref().map(|(_, v)| v.clone()),
            per_point: self.per_point,
            planted: crate::checkpoint::train_meta::planted_on(&p.encoder.checkpoint, &p.set)?,
            digests: Default::default(),
        };
        let shard = r.shard;
        let mine_ctrl = ctrl.as_ref().map(|(s, v)| (s, shard.take(v)));
        let (points, ctrl_points) = scores(
            &p.encoder,
            &g,
            &p.set,
            &shard.part(&p.points)?,
            mine_ctrl
                .as_ref()
                .map(|(s, v)| (*s, v.as_slice(), "LayerMem (control)")),
            r.views,
            self.pairing,
            &p.settings,
            progress,
        )?;
        let state = State::Layer {
            points: partial::to_bits(&points),
            control: ctrl_points.as_deref().map(partial::to_bits),
        };
        let mut sets = vec![("data", p.set)];
        if let Some((s, _)) = ctrl {
            sets.push(("control data", s));
        }
        Ok(Measured {
            shard,
            run,
            state,
            files: vec![
                ("checkpoint", p.encoder.checkpoint.path.clone()),
                ("reference", g.checkpoint.path.clone()),
            ],
            sets,
        })
    }
}

/// LayerMem of every layer of a whole run, with its control, its planted points' rows and,
/// with `--per-point`, SSLMem' of every point.
pub struct LayerMemResult {
    pub layers: Vec<LayerMemLayer>,
    pub points: Vec<PointScores>,
    pub control_points: Option<Vec<PointScores>>,
    pub planted: Option<Vec<crate::metrics::layer_mem::GroupDifference>>,
}

impl LayerMemResult {
    pub fn of(run: &Run, state: &State) -> Result<LayerMemResult> {
        let State::Layer { points, control } = state else {
            bail!("not a LayerMem state");
        };
        let mut points = partial::from_bits(points);
        let mut ctrl_points = control.as_deref().map(partial::from_bits);
        if run.score == LayerScore::Range {
            crate::metrics::layer_mem::range_normalise(&mut points, ctrl_points.as_deref_mut());
        }
        let layers = layers(
            &run.layers,
            &points,
            ctrl_points.as_deref().map(|v| (v, run.control)),
            run.seed,
        );
        let boot = Bootstrap {
            seed: run.seed,
            ..Default::default()
        };
        let planted = run.planted.as_ref().and_then(|pl| {
            crate::metrics::layer_mem::group_difference(&run.layers, &points, pl, &boot)
        });
        Ok(LayerMemResult {
            layers,
            points,
            control_points: ctrl_points,
            planted,
        })
    }

    /// The table (after the data lines), the CSV (per layer, or per point with
    /// `--per-point`) and the JSON.
    pub fn render(&self, run: &Run) -> Result<Rendered> {
        use crate::report;
        let control = run.control;
        let names = &run.layers;
        let reference = run.reference.clone().unwrap_or_default();
        let ctrl_set = run.control_data.as_ref().zip(run.control_points.as_ref());
        let point_names = measure::namer(run);
        let mut text = String::new();
        measure::data_lines(run, &mut text);
        writeln!(
            text,
            "LayerMem{} of {} against {} on {} points x {} {}{}\n",
            if run.score == LayerScore::Range {
                " (the authors' range normalisation: (SSL_g - SSL_f) / (max - min) over the points)"
            } else {
                ""
            },
            run.model,
            reference,
            run.points.len(),
            run.views,
            if run.pairing == Pairing::Views {
                "view pairs"
            } else {
                "clean/view pairs"
            },
            match (ctrl_set, control) {
                (Some((s, v)), Control::Unseen) => format!("; control: {} unseen points of {} (test split); corrected = LayerMem - control", v.len(), s),
                (Some((_, v)), Control::Independent) => format!("; control: {} independent points of the reference; corrected = (LayerMem - control) / 2", v.len()),
                _ => "; no control".into(),
            }
        )?;
        text.push_str(&report::layer_mem_table(&self.layers));
        if let Some(rows) = &self.planted {
            writeln!(text, "\nplanted points (recorded in the checkpoint) against the other scored points: SSLMem'")?;
            text.push_str(&report::planted_layer_table(rows));
        }
        if run.per_point {
            writeln!(text, "\nSSLMem' per point")?;
            text.push_str(&report::per_point_csv(names, &self.points, &point_names));
        }
        let csv = if run.per_point {
            report::per_point_sets_csv(
                names,
                &self.points,
                self.control_points.as_deref(),
                &point_names,
            )
        } else {
            report::layer_mem_csv(&self.layers)
        };
        let mut j = run.settings.clone();
        j["metric"] = "layermem".into();
        j["reference"] = reference.clone().into();
        j["control"] = serde_json::json!({
            "kind": control,
            "points": run.control_points,
            "point_names": run.settings["control_point_names"],
            "data": run.control_data,
        });
        j["layers"] = serde_json::to_value(&self.layers)?;
        if let Some(rows) = &self.planted {
            j["planted"] = serde_json::to_value(rows)?;
        }
        if run.per_point {
            j["per_point"] = serde_json::to_value(&self.points)?;
            if let Some(cp) = &self.control_points {
                j["control_per_point"] = serde_json::to_value(cp)?;
            }
        }
        Ok(Rendered {
            text,
            csv,
            json: serde_json::to_string_pretty(&j)?,
        })
    }
}
