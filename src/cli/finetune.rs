//! `memprune experiment finetune`: the paper's Table 5.

use super::set_threads;
use anyhow::{bail, Result};
use clap::Args;
use memprune::data::augment_choice::GivenAugment;
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
    /// ViT: attention heads per block of f and g (as `inspect --heads`).
    #[arg(long)]
    heads: Option<usize>,
    /// LayerMem's augmentation as YAML (as `measure --augment`). Default: the one f and g
    /// record.
    #[arg(long)]
    augment: Option<PathBuf>,
    #[command(flatten)]
    finetune: FinetuneArgs,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How to fine-tune (defaults: the library's `FinetuneSettings`).
#[derive(Args)]
struct FinetuneArgs {
    /// Fine-tuning epochs on the downstream training split.
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate (AdamW).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    batch: Option<usize>,
    /// One fine-tuning per seed (mean ± std over them).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
}

impl FinetuneArgs {
    fn settings(&self) -> memprune::eval::finetune::FinetuneSettings {
        memprune::eval::finetune::settings_from(&memprune::plan::policy::FinetuneEval {
            epochs: self.epochs,
            lr: self.lr,
            batch: self.batch,
            seeds: self.seeds.clone(),
            ..Default::default()
        })
    }
}

pub fn run(a: FinetuneExperimentArgs, quiet: bool) -> Result<()> {
    use memprune::eval::finetune_experiment::{run, Table5Inputs};
    set_threads(a.threads)?;
    let checkpoint = a.checkpoint.clone().unwrap_or_else(defaults::model_f);
    let reference = match (&a.reference, &a.checkpoint) {
        (Some(r), _) => r.clone(),
        (None, None) => defaults::model_g(),
        (None, Some(_)) => bail!(
            "--reference: LayerMem needs the reference encoder g, trained without f's candidates"
        ),
    };
    let inputs = Table5Inputs {
        checkpoint,
        reference,
        data: a.data.clone().unwrap_or_else(defaults::data),
        downstream: a.downstream.clone().unwrap_or_else(defaults::downstream),
        points: a.points,
        views: a.views,
        seed: a.seed,
        heads: a.heads,
        augment: GivenAugment::from_flag(a.augment.as_deref())?,
    };
    let mut outputs = memprune::output::OutputSet::new();
    outputs.input(&inputs.checkpoint, "the checkpoint");
    outputs.input(&inputs.reference, "--reference");
    outputs.input(&inputs.data, "the data");
    outputs.input(&inputs.downstream, "--downstream");
    if let Some(p) = &a.augment {
        outputs.input(p, "the augment file");
    }
    if let Some(j) = &a.json {
        outputs.output(j, "--json")?;
    }
    let settings = a.finetune.settings();
    let (t, _) = run(&inputs, &settings, !quiet, |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    if let Some(aug) = &t.augment {
        println!("{}", aug.line());
    }
    println!(
        "Table 5 on {}: fine-tuned on {} ({} training, {} test images), {} epochs, AdamW lr {}, batch {}, seeds {:?}; LayerMem against {}\n",
        inputs.checkpoint.display(),
        inputs.downstream.display(),
        t.train_points,
        t.test_points,
        settings.epochs,
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
