//! The UnitMem and ClassMem job (`measure unit`, `measure class`): the request, the
//! measurement (whole, or one shard's part) and the result the table, CSV and JSON show.

use super::measure::{self, MeasureRequest, Measured, Prepared};
use super::Rendered;
use crate::measure::DefaultPoints;
use crate::metrics::layer_mem::{Control, Pairing};
use crate::metrics::unit_mem::{Reduce, UnitMemLayer};
use crate::shard::partial::{Metric, Run, State};
use anyhow::Result;
use std::fmt::Write;

/// `measure unit` (`class: false`) or `measure class`.
#[derive(Debug, Clone)]
pub struct UnitMemRequest {
    pub measure: MeasureRequest,
    /// How mu_-max is taken over the other points (UnitMem only).
    pub reduce: Reduce,
    pub class: bool,
}

impl UnitMemRequest {
    /// Loads what the request measures (default points: the encoder's own training
    /// points, at most [`crate::defaults::UNIT_POINTS`]).
    pub fn prepare(&self) -> Result<Prepared> {
        measure::prepare(
            &self.measure,
            DefaultPoints::Training(crate::defaults::UNIT_POINTS),
            self.measure.views,
            None,
        )
    }

    /// What `--dump-views` records beside the views, and the JSON's `extra`.
    pub fn meta(&self) -> serde_json::Value {
        if self.class {
            serde_json::json!({"metric": "class", "views": self.measure.views})
        } else {
            serde_json::json!({"metric": "unit", "views": self.measure.views, "reduce": self.reduce, "pairing": null})
        }
    }

    /// Measures the request's shard of `p`'s points (and of the control's).
    pub fn run(&self, p: Prepared, progress: bool) -> Result<Measured> {
        let r = &self.measure;
        let unseen = measure::unseen_for(r, &p)?;
        let unseen_ref = unseen.as_ref().map(|(s, v)| (s, v.as_slice()));
        crate::measure::check_control_size(&p.points, unseen_ref)?;
        let run = Run {
            metric: if self.class {
                Metric::Class
            } else {
                Metric::Unit
            },
            settings: measure::settings_json(r, &p, self.meta(), unseen.as_ref()),
            arch: p.encoder.describe(),
            model: p.encoder.checkpoint.path.display().to_string(),
            reference: None,
            layers: crate::measure::layer_names(&p.encoder),
            points: p.points.clone(),
            views: r.views,
            seed: r.seed,
            reduce: self.reduce,
            pairing: Pairing::Views,
            score: Default::default(),
            control: if unseen.is_some() {
                Control::Unseen
            } else {
                Control::None
            },
            control_data: unseen.as_ref().map(|(s, _)| s.source.clone()),
            control_points: unseen.as_ref().map(|(_, v)| v.clone()),
            per_point: false,
            planted: crate::checkpoint::train_meta::planted_on(&p.encoder.checkpoint, &p.set)?,
            digests: Default::default(),
        };
        let shard = r.shard;
        let mine = shard.part(&p.points)?;
        let mine_unseen = unseen.as_ref().map(|(s, v)| (s, shard.take(v)));
        let state = crate::measure::unit_state(
            &p.encoder,
            &p.set,
            &mine,
            mine_unseen.as_ref().map(|(s, v)| (*s, v.as_slice())),
            r.views,
            self.reduce,
            self.class,
            &p.settings,
            progress,
        )?;
        let mut sets = vec![("data", p.set)];
        if let Some((s, _)) = unseen {
            sets.push(("control data", s));
        }
        Ok(Measured {
            shard,
            run,
            state,
            files: vec![("checkpoint", p.encoder.checkpoint.path.clone())],
            sets,
        })
    }
}

/// UnitMem (or ClassMem) of every layer of a whole run, with its control.
pub struct UnitMemResult {
    pub layers: Vec<UnitMemLayer>,
    /// The layers not scored (no known lower bound of act_u).
    pub unscored: Vec<String>,
}

impl UnitMemResult {
    pub fn of(run: &Run, state: &State) -> Result<UnitMemResult> {
        Ok(UnitMemResult {
            layers: crate::measure::unit_layers(state, &run.layers, run.seed)?,
            unscored: crate::measure::unscored_layers(state, &run.layers),
        })
    }

    /// The table (after the data lines), the CSV (one line per unit) and the JSON.
    pub fn render(&self, run: &Run) -> Result<Rendered> {
        use crate::report;
        let class = run.metric == Metric::Class;
        let (what, metric, argmax) = if class {
            ("ClassMem", "classmem", "argmax_class")
        } else {
            ("UnitMem", "unitmem", "argmax_point")
        };
        let layers = &self.layers;
        let control = run.control_data.as_ref().zip(run.control_points.as_ref());
        let names = measure::namer(run);
        let mut text = String::new();
        measure::data_lines(run, &mut text);
        writeln!(
            text,
            "{what} of {} on {} points x {} views{}{}\n",
            run.arch,
            run.points.len(),
            run.views,
            if class {
                String::new()
            } else {
                format!(
                    " ({} reduction)",
                    format!("{:?}", run.reduce).to_lowercase()
                )
            },
            match control {
                Some((s, v)) =>
                    format!("; control: {} unseen points of {} (test split)", v.len(), s),
                None => "; no control".into(),
            }
        )?;
        text.push_str(&report::unit_mem_table(layers, what));
        if let Some(note) = report::unscored_note(&self.unscored) {
            writeln!(text, "{note}")?;
        }
        if let (false, Some(pl), Some(_)) = (class, &run.planted, control) {
            writeln!(text, "\nplanted points ({} recorded in the checkpoint): argmax of the 10 units of highest UnitMem-excess per layer", pl.len())?;
            text.push_str(&report::planted_argmax_table(
                layers,
                pl,
                &run.points,
                10,
                &names,
            ));
        }
        let csv_names = (!class).then_some(&names);
        let csv = report::unit_mem_csv(layers, argmax, csv_names);
        let mut j = run.settings.clone();
        j["metric"] = metric.into();
        if let Some((s, v)) = control {
            j["control"] = serde_json::json!({"data": s, "split": "test", "points": v, "point_names": run.settings["control_point_names"]});
        }
        j["layers"] = serde_json::to_value(layers)?;
        if !class {
            names.name_argmax(&mut j["layers"]);
        }
        j["unscored_layers"] = serde_json::to_value(&self.unscored)?;
        Ok(Rendered {
            text,
            csv,
            json: serde_json::to_string_pretty(&j)?,
        })
    }
}
