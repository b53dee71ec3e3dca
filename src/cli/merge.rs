//! `memprune merge`: the partial results of a run's shards, merged.

use super::measure::write_rendered;
use anyhow::Result;
use clap::Args;
use memprune::jobs::merge::MergeRequest;
use memprune::output::OutputSet;
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

/// The partials of one run's shards, checked and merged, printed and written exactly as one
/// run over all points.
pub fn run(a: MergeArgs) -> Result<()> {
    let mut set = OutputSet::new();
    for p in &a.partials {
        set.input(p, "a partial result");
    }
    if let Some(p) = &a.csv {
        set.output(p, "--csv")?;
    }
    if let Some(p) = &a.json {
        set.output(p, "--json")?;
    }
    let merged = MergeRequest {
        partials: a.partials,
    }
    .run()?;
    // The shards' views were made with one augmentation: said first, as one run over all
    // points says it.
    if let Some(aug) = &merged.augment {
        println!("{}", aug.line());
    }
    write_rendered(&merged.render()?, &a.csv, &a.json, &mut set)?;
    set.commit()?;
    Ok(())
}
