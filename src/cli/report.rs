//! `memprune report`: one self-contained HTML file.

use super::args::LoadArgs;
use super::command_line;
use anyhow::{bail, Result};
use clap::Args;
use memprune::data;
use memprune::data::augment_choice::GivenAugment;
use memprune::defaults;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// The encoder f (safetensors or .pth). Default: the embedded encoder f.
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// The reference encoder g for LayerMem. Default: the embedded g when the model is the
    /// embedded f; without one, the report has no LayerMem sections.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Data (as `measure --data`): the train split is measured, the test split is the
    /// control. Default: the embedded Fashion-MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    read: data::DataOptions,
    /// UnitMem on N points (as `measure unit --points`; default: the encoder's own training
    /// points, at most 1,000, else 1,000 random points).
    #[arg(long)]
    points: Option<usize>,
    /// LayerMem on the first N candidates recorded in f (as `measure layer --points`;
    /// default 100), else N random points.
    #[arg(long)]
    candidates: Option<usize>,
    /// K: augmented views per point (LayerMem: K pairs).
    #[arg(long, default_value_t = defaults::VIEWS)]
    views: usize,
    /// Seed of the views, the random points and the bootstrap.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Views per forward pass: memory, not results.
    #[arg(long, default_value_t = defaults::BATCH)]
    batch: usize,
    /// Augmentation settings as a YAML file (as `measure --augment`). Default: the one the
    /// checkpoint records.
    #[arg(long)]
    augment: Option<PathBuf>,
    /// The HTML file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ReportArgs, quiet: bool) -> Result<()> {
    use memprune::report::gather::{gather, ReportSettings};
    let mut s = ReportSettings::defaults(a.checkpoint.clone());
    if let Some(r) = a.reference {
        s.reference = Some(r);
    }
    if let Some(d) = a.data {
        s.data = d;
    }
    // Before any work: --out is no input.
    let mut outputs = memprune::output::OutputSet::new();
    outputs.input(&s.model, "the checkpoint");
    if let Some(r) = &s.reference {
        outputs.input(r, "the reference");
    }
    outputs.input(&s.data, "the data");
    if let Some(p) = &a.augment {
        outputs.input(p, "the augment file");
    }
    outputs.output(&a.out, "--out")?;
    for (flag, n) in [("--points", a.points), ("--candidates", a.candidates)] {
        if n == Some(0) {
            bail!("{flag} must be at least 1");
        }
    }
    s.load = a.load.options();
    s.data_options = a.read.clone();
    s.unit_points.points = a.points;
    s.candidates.points = a.candidates;
    s.views = a.views;
    s.seed = a.seed;
    s.batch = a.batch;
    s.augment = GivenAugment::from_flag(a.augment.as_deref())?;
    let t0 = std::time::Instant::now();
    let g = gather(&s, !quiet)?;
    println!("{}", g.augment.line());
    let t1 = std::time::Instant::now();
    let html = memprune::report::html::render(&g, &command_line(), None)?;
    outputs.stage(&a.out, html.as_bytes())?;
    outputs.commit()?;
    let t2 = std::time::Instant::now();
    println!(
        "wrote {} ({} bytes): measured in {:.1} s, HTML written in {:.2} s",
        a.out.display(),
        html.len(),
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    Ok(())
}
