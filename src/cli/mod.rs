//! The `memprune` command line: one argument struct per concern shared by every command
//! (`args`), and one file per command with its arguments and its body (parse, call, print).

pub mod args;
pub mod choice;
pub mod embed;
pub mod experiment;
pub mod finetune;
pub mod inspect;
pub mod measure;
pub mod merge;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod report;
pub mod train;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "memprune", version, about = "Find where self-supervised vision encoders memorize: LayerMem, dLayerMem, UnitMem and ClassMem (Wang et al., NeurIPS 2024).", long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Run a policy: measure, plan, rewrite the checkpoint, evaluate before and after.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Print the detected architecture, its layers and units, parameters and MACs.
    Inspect(inspect::InspectArgs),
    /// Measure memorization: `unit` (UnitMem), `class` (ClassMem) or `layer` (LayerMem).
    #[command(subcommand)]
    Measure(measure::Measure),
    /// Reproduce the paper's experiments on the embedded default (or your model).
    #[command(subcommand)]
    Experiment(experiment::Experiment),
    /// Print what a policy would do (units pruned per layer, layers trained), writing nothing.
    Plan(plan::PlanArgs),
    /// Train an encoder (ResNet9, resnet18/34/50 or a ViT; SimCLR, SimSiam, supervised or MAE),
    /// from scratch or from a checkpoint, e.g. LayerMem's f and g.
    Train(Box<train::TrainArgs>),
    /// Linear-probe top-1 accuracy of a frozen encoder (or of raw pixels with --raw).
    Probe(probe::ProbeArgs),
    /// Write the encoder's features of every point of a split (the probe's pooled features,
    /// or a layer's act_u per unit with --layer), with the point indices and labels, as .npy
    /// or safetensors.
    Embed(embed::EmbedArgs),
    /// One self-contained HTML file: LayerMem and UnitMem per layer with their intervals and
    /// controls, and the images each layer and its most memorizing units memorize.
    Report(report::ReportArgs),
    /// Merge the partial results of a run's shards (`measure ... --shard I/N --partial F`):
    /// prints and writes exactly what one run over all points does.
    Merge(merge::MergeArgs),
}

/// The command line as typed, for the report's settings.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be > 0");
        }
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    Ok(())
}
