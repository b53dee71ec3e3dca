//! `memprune experiment finetune`: the paper's Table 5.

use super::args::LoadArgs;
use super::set_threads;
use anyhow::Result;
use clap::Args;
use memprune::eval::finetune::FinetuneSettings;
use memprune::jobs::finetune::FinetuneRequest;
use memprune::{defaults, report};
use std::path::PathBuf;

#[derive(Args)]
pub struct FinetuneExperimentArgs {
    /// The SSL encoder f. Default: the embedded f.
    checkpoint: Option<PathBuf>,
    /// The reference encoder g for LayerMem. Default: the embedded g (with the embedded f).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The pre-training data: f's candidates (train split), the control (test split).
    /// Default: the embedded data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The downstream task (train and test splits, labelled). Default: the embedded MNIST
    /// subset.
    #[arg(long)]
    downstream: Option<PathBuf>,
    /// LayerMem: at most this many of f's candidates (the control: as many unseen points).
    #[arg(long, default_value_t = defaults::LAYER_CANDIDATES)]
    points: usize,
    /// LayerMem: view pairs per point.
    #[arg(long, default_value_t = defaults::VIEWS)]
    views: usize,
    /// Seed of LayerMem's views and intervals.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// How f and g load.
    #[command(flatten)]
    load: LoadArgs,
    /// LayerMem's augmentation as YAML (as `measure --augment`). Default: the one f and g
    /// record.
    #[arg(long)]
    augment: Option<PathBuf>,
    #[command(flatten)]
    finetune: FinetuneArgs,
    /// CPU threads (default: all).
    #[arg(long)]
    threads: Option<usize>,
    /// Write Table 5 as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How to fine-tune (defaults: the library's `FinetuneSettings`).
#[derive(Args)]
struct FinetuneArgs {
    /// Fine-tuning epochs on the downstream training split.
    #[arg(long, default_value_t = FinetuneSettings::default().epochs)]
    epochs: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = FinetuneSettings::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = FinetuneSettings::default().batch)]
    batch: usize,
    /// One fine-tuning per seed (mean ± std over them), comma separated.
    #[arg(long, default_value_t = Seeds(FinetuneSettings::default().seeds))]
    seeds: Seeds,
}

/// A comma-separated list of seeds, shown as it is typed.
#[derive(Clone)]
struct Seeds(Vec<u64>);

impl std::fmt::Display for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(|s| s.to_string()).collect();
        f.write_str(&s.join(","))
    }
}

impl std::str::FromStr for Seeds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|x| {
                x.trim()
                    .parse::<u64>()
                    .map_err(|e| format!("`{x}` is not a seed: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Seeds)
    }
}

impl FinetuneExperimentArgs {
    fn request(&self) -> FinetuneRequest {
        let f = &self.finetune;
        FinetuneRequest {
            checkpoint: self.checkpoint.clone(),
            reference: self.reference.clone(),
            data: self.data.clone(),
            downstream: self.downstream.clone(),
            points: self.points,
            views: self.views,
            seed: self.seed,
            load: self.load.options(),
            augment: self.augment.clone(),
            settings: FinetuneSettings {
                epochs: f.epochs,
                lr: f.lr,
                batch: f.batch,
                seeds: f.seeds.0.clone(),
                ..FinetuneSettings::default()
            },
        }
    }
}

pub fn run(a: FinetuneExperimentArgs, quiet: bool) -> Result<()> {
    set_threads(a.threads)?;
    let request = a.request();
    let inputs = request.inputs()?;
    let mut outputs = memprune::output::OutputSet::new();
    request.register(&inputs, &mut outputs);
    if let Some(j) = &a.json {
        outputs.output(j, "--json")?;
    }
    let (t, _) = request.run(&inputs, !quiet, |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    if let Some(aug) = &t.augment {
        println!("{}", aug.line());
    }
    let settings = &request.settings;
    println!(
        "Table 5 on {}: fine-tuned on {} ({} training, {} test images), {}, AdamW lr {}, batch {}, seeds {:?}; LayerMem against {}\n",
        inputs.checkpoint.display(),
        inputs.downstream.display(),
        t.train_points,
        t.test_points,
        report::finetune::epochs(settings.epochs),
        settings.lr,
        settings.batch,
        settings.seeds,
        inputs.reference.display()
    );
    print!("{}", report::finetune::table5(&t));
    if let Some(j) = &a.json {
        outputs.stage(j, serde_json::to_string_pretty(&t)?.as_bytes())?;
    }
    outputs.commit()?;
    Ok(())
}
