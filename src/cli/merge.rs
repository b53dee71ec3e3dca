//! `memprune merge`: the partial results of a run's shards, merged.

use super::measure::{layer_output, unit_output, with_outputs};
use anyhow::Result;
use clap::Args;
use memprune::shard::partial::{self, Metric, Partial};
use std::path::PathBuf;

#[derive(Args)]
pub struct MergeArgs {
    /// Every shard's partial result, once each.
    #[arg(required = true)]
    pub partials: Vec<PathBuf>,
    /// Write everything as JSON (as `measure --json`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write CSV (as `measure --csv`).
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// The partials of one run's shards, checked and merged, printed and
/// written exactly as one run over all points.
pub fn run(a: MergeArgs) -> Result<()> {
    let MergeArgs {
        partials,
        json,
        csv,
    } = a;
    let mut set = memprune::output::OutputSet::new();
    for p in &partials {
        set.input(p, "a partial result");
    }
    if let Some(p) = &csv {
        set.output(p, "--csv")?;
    }
    if let Some(p) = &json {
        set.output(p, "--json")?;
    }
    with_outputs(set, || {
        let parts = partials
            .iter()
            .map(|p| Ok((p.clone(), Partial::read(p)?)))
            .collect::<Result<Vec<_>>>()?;
        let (run, state) = partial::merge(parts)?;
        // The shards' views were made with one augmentation (the same `run`): said first, as
        // one run over all points says it.
        if let Some(a) = memprune::data::augment_choice::ChosenAugment::of_settings(&run.settings) {
            println!("{}", a.line());
        }
        match run.metric {
            Metric::Unit | Metric::Class => unit_output(&run, &state, &csv, &json),
            Metric::Layer => layer_output(&run, &state, &csv, &json),
        }
    })
}
