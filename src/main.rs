//! The `memprune` command: a thin layer over the library (parse, call, print).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use memprune::data::augment::AugmentConfig;
use memprune::data::augment_choice::GivenAugment;
use memprune::data::normalize::Normalization;
use memprune::data::{self, ImageSet, Split};
use memprune::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use memprune::metrics::layer_mem::{Control, LayerScore, Pairing};
use memprune::metrics::unit_mem::Reduce;
use memprune::model::options::Tokens;
use memprune::model::resnet::Stem;
use memprune::model::{Encoder, LoadOptions};
use memprune::plan::PolicyFile;
use memprune::rewrite::PruneMode;
use memprune::shard::partial::{self, Metric, Partial, Run, State};
use memprune::shard::Shard;
use memprune::{defaults, pipeline, report};
use std::path::{Path, PathBuf};

/// Plain system allocation until `train` turns the block cache on.
#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

#[derive(Parser)]
#[command(name = "memprune", version, about = "Find where self-supervised vision encoders memorize: LayerMem, dLayerMem, UnitMem and ClassMem (Wang et al., NeurIPS 2024).", long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run a policy: measure, plan, rewrite the checkpoint, evaluate before and after.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print the detected architecture, its layers and units, parameters and MACs.
    Inspect {
        /// Checkpoint (safetensors or PyTorch .pth). Default: the embedded encoder f.
        checkpoint: Option<PathBuf>,
        /// Input side for the MAC count (default: the size the checkpoint implies: a ViT's
        /// position-embedding grid x patch, 224 for a ResNet's ImageNet stem, ...).
        #[arg(long)]
        size: Option<usize>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Measure memorization: `unit` (UnitMem), `class` (ClassMem) or `layer` (LayerMem).
    #[command(subcommand)]
    Measure(Measure),
    /// Reproduce the paper's experiments on the embedded default (or your model).
    #[command(subcommand)]
    Experiment(Experiment),
    /// Print what a policy would do (units pruned per layer, layers trained), writing nothing.
    Plan {
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Train a ResNet9 encoder (SimCLR, SimSiam or supervised), e.g. LayerMem's f and g.
    Train(Box<TrainArgs>),
    /// Linear-probe top-1 accuracy of a frozen encoder (or of raw pixels with --raw).
    Probe(ProbeArgs),
    /// Write the encoder's features of every point of a split (the probe's pooled features,
    /// or a layer's act_u per unit with --layer), with the point indices and labels, as .npy
    /// or safetensors.
    Embed(EmbedArgs),
    /// One self-contained HTML file: LayerMem and UnitMem per layer with their intervals and
    /// controls, and the images each layer and its most memorizing units memorize.
    Report(ReportArgs),
    /// Merge the partial results of a run's shards (`measure ... --shard I/N --partial F`):
    /// prints and writes exactly what one run over all points does.
    Merge {
        /// Every shard's partial result, once each.
        #[arg(required = true)]
        partials: Vec<PathBuf>,
        /// Write everything as JSON (as `measure --json`).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write CSV (as `measure --csv`).
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ReportArgs {
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

/// Where docs/METRICS.md leaves a choice, memprune makes this one: the list between the
/// `help:choices` markers of docs/METRICS.md (its one source), for `measure ... --help`.
fn choices() -> &'static str {
    const DOC: &str = include_str!("../docs/METRICS.md");
    let list = DOC
        .split("<!-- help:choices -->\n```text\n")
        .nth(1)
        .expect("docs/METRICS.md has the choices between its help:choices markers");
    list.split("```").next().unwrap_or_default().trim_end()
}

#[derive(Subcommand)]
enum Measure {
    /// UnitMem of every unit of every layer (docs/METRICS.md Eq. 5-8).
    #[command(after_long_help = choices())]
    Unit {
        #[command(flatten)]
        common: MeasureArgs,
        /// How mu_-max is taken over the other points: `mean` (the paper's Eq. 7, streaming,
        /// O(units) memory) or `median` (the paper's appendix and the authors' script).
        #[arg(long, value_enum, default_value_t = Reduce::Mean)]
        reduce: Reduce,
    },
    /// ClassMem, the supervised counterpart of UnitMem (needs labels).
    #[command(after_long_help = choices())]
    Class {
        #[command(flatten)]
        common: MeasureArgs,
    },
    /// LayerMem and dLayerMem of every layer (Eq. 1-4), against a reference encoder.
    #[command(after_long_help = choices())]
    Layer {
        #[command(flatten)]
        common: MeasureArgs,
        /// The reference encoder g, trained without the scored points. Default: the
        /// embedded g when the model is the embedded f.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// `views`: K pairs of augmented views (the paper); `clean`: the clean image against
        /// each of K views (the authors' script).
        #[arg(long, value_enum, default_value_t = Pairing::Views)]
        pairing: Pairing,
        /// Each point's score: `eq2` (the paper's SSLMem', Eq. 2) or `range` (the authors'
        /// LayerMem script: SSL_g - SSL_f divided by its max - min over the scored points, per
        /// layer; to compare with their published numbers).
        #[arg(long, value_enum, default_value_t = LayerScore::Eq2)]
        score: LayerScore,
        /// Also print (and put in --json) SSLMem' of every point at every layer.
        #[arg(long)]
        per_point: bool,
        /// The control points: `unseen` (test-split points neither encoder saw), or
        /// `independent` (g's own training points, the symmetric estimate), or `none`.
        #[arg(long, value_enum, default_value_t = Control::Unseen)]
        control: Control,
    },
}

#[derive(Subcommand)]
enum Experiment {
    /// Table 6: prune the highest-UnitMem, random and lowest-UnitMem units (per layer 10 % and
    /// 20 %, whole network 10 %) and compare linear-probe accuracy.
    Prune {
        /// The SSL encoder. Default: the embedded f.
        checkpoint: Option<PathBuf>,
        /// Data (train split for UnitMem and the probe, test split for the probe).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Training points UnitMem is measured on (the paper: 5000), at most the encoder's own
        /// training points when its metadata records them; the control uses as many test points.
        #[arg(long, default_value_t = 5000)]
        points: usize,
        #[arg(long, default_value_t = 10)]
        views: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Random draws for the random strategy (the paper: 10).
        #[arg(long, default_value_t = 10)]
        draws: usize,
        /// ViT: attention heads per block (as `inspect --heads`).
        #[arg(long)]
        heads: Option<usize>,
        /// `mask` (zeroed, as the paper), `remove` (shapes shrink), or both.
        #[arg(long, value_delimiter = ',', default_value = "mask,remove")]
        modes: Vec<String>,
        #[arg(long)]
        json: Option<PathBuf>,
        /// Accuracy against units pruned, as SVG.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// UnitMem's augmentation as YAML (as `measure --augment`). Default: the one the
        /// encoder records.
        #[arg(long)]
        augment: Option<PathBuf>,
    },
    /// Table 5: fine-tune on a downstream task the head only, the layers of highest
    /// dLayerMem, the last layers, or random ones (k = 1..3), each over several seeds.
    Finetune(Box<FinetuneExperimentArgs>),
}

#[derive(Args)]
struct FinetuneExperimentArgs {
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

fn finetune_experiment_cmd(a: FinetuneExperimentArgs, quiet: bool) -> Result<()> {
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

#[derive(Args, Clone)]
struct LoadArgs {
    /// Strip exactly this prefix from tensor names (default: module., backbone., encoder.,
    /// model., repeatedly).
    #[arg(long)]
    prefix: Option<String>,
    /// Override the ResNet stem detection (by conv1's kernel size).
    #[arg(long, value_enum)]
    stem: Option<Stem>,
    /// Which state dict of a checkpoint holding several: a top-level key of the file
    /// (`state_dict`, `student`, ...), else a name prefix inside the dict chosen (DINOv2's
    /// `student`). Default: the top level when it holds tensors, else the only dict of
    /// tensors one level down, else `teacher`; several others are listed.
    #[arg(long)]
    key: Option<String>,
    /// ViT: attention heads per block (default: memprune's metadata, else the table of
    /// published ViTs; else guessed as width / 64, which scoring or pruning heads refuses).
    #[arg(long)]
    heads: Option<usize>,
    /// ViT: the tokens of each sub-layer output that LayerMem compares: `all` (every token
    /// flattened, the authors' LayerMem script) or `cls` (the class token).
    #[arg(long, value_enum, default_value_t = Tokens::All)]
    tokens: Tokens,
    /// ViT: the representation (`pool`): `cls` (the class token after `norm`) or `avg` (the
    /// mean of the patch tokens after `norm`, then `fc_norm` if present). Default: `avg` when
    /// the checkpoint has `fc_norm` (timm's global_pool='avg'), else `cls`.
    #[arg(long, value_enum)]
    pool: Option<memprune::model::options::VitPool>,
    /// Set by `measure layer`: a ViT's layers are its attention and MLP sub-layer outputs.
    #[arg(skip)]
    sub_layers_only: bool,
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            prefix: self.prefix.clone(),
            key: self.key.clone(),
            stem: self.stem,
            heads: self.heads,
            tokens: self.tokens,
            sub_layers_only: self.sub_layers_only,
            pool: self.pool,
        }
    }
}

#[derive(Args)]
struct MeasureArgs {
    /// The encoder f (safetensors or .pth). Default: the embedded encoder f.
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Data: an IDX folder (MNIST, Fashion-MNIST), CIFAR-10/100 binary folder, or image
    /// folder. Default: the embedded Fashion-MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which split of --data to read.
    #[arg(long, value_enum, default_value_t = Split::Train)]
    split: Split,
    #[command(flatten)]
    read: data::DataOptions,
    /// Measure on N points drawn at random (seeded by --seed) from the split; for `layer`, the
    /// first N of the candidate points recorded in f (default 100) when f records them.
    #[arg(long, conflicts_with_all = ["range", "indices"])]
    points: Option<usize>,
    /// Measure on the points START..END (global indices, END excluded).
    #[arg(long, value_name = "START..END", conflicts_with = "indices")]
    range: Option<String>,
    /// Measure on the point indices listed in a file (one per line, or a JSON array).
    #[arg(long)]
    indices: Option<PathBuf>,
    /// K: augmented views per point (LayerMem: K pairs).
    #[arg(long, default_value_t = defaults::VIEWS)]
    views: usize,
    /// Seed of the views (and of --points).
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Views per forward pass: memory, not results.
    #[arg(long, default_value_t = defaults::BATCH)]
    batch: usize,
    /// Per-channel normalisation mean, comma separated (default: the data set's usual one).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel normalisation std, comma separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    std: Option<Vec<f32>>,
    /// Augmentation settings as a YAML file (keys: size, crop_scale, crop_ratio, flip_p,
    /// jitter_p, brightness, contrast, saturation, hue, grayscale_p). Default: the one the
    /// checkpoint records (`memprune.augment`; f and g must agree), else docs/METRICS.md's.
    #[arg(long)]
    augment: Option<PathBuf>,
    /// Write everything (settings, per layer, per unit or per point) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write CSV: one line per unit (unit, class; with the control's UnitMem-excess), per
    /// layer (layer: intervals, control, corrected), or per point (layer --per-point:
    /// candidates and control points, SSLMem' per layer).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the exact view tensors used (.npy) and the point indices to this folder.
    #[arg(long)]
    dump_views: Option<PathBuf>,
    /// Skip the control on unseen points (faster; the scores then cannot be told from
    /// selectivity or a fixed f-g difference).
    #[arg(long)]
    no_control: bool,
    /// Measure only shard I of N (0 <= I < N): disjoint, deterministic parts of the points
    /// (and of the control's points), written with --partial for `memprune merge`. `auto`:
    /// from a Slurm job array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of
    /// SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX of
    /// --shard-count, else $MEMPRUNE_SHARD_COUNT).
    #[arg(long, value_name = "I/N|auto", requires = "partial")]
    shard: Option<String>,
    /// With `--shard auto`: the number of shards (a Kubernetes Indexed Job's completions).
    #[arg(long, value_name = "N", requires = "shard")]
    shard_count: Option<usize>,
    /// Where the forward passes run: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda`
    /// feature (candle's CUDA backend; memprune's CPU-only kernels fall back to candle's ops).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    device: String,
    /// Write the partial result (accumulator state, settings, digests of the checkpoint and
    /// data) of this shard (or of all points without --shard) instead of the scores.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "csv", "dump_views"])]
    partial: Option<PathBuf>,
}

fn main() {
    memprune::interrupt::install();
    // Rust ignores SIGPIPE, so printing into a closed pipe would panic; restore the default.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = parse_args();
    memprune::block_cache::enable_from_env();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", report::error_line::error_line(&e));
        std::process::exit(1);
    }
}

/// Every option that takes a value reads a leading `-` followed by a number as that number
/// (clap would take `--lr -1` for two flags), so the value's own check refuses it clearly.
fn negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if !a.is_positional() && a.get_action().takes_values() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
    .mut_subcommands(negative_numbers)
}

/// The command line, parsed; a parse error is one line (clap's own spans several, with a
/// usage block), exit code 1. `--help` and `--version` print as clap prints them.
fn parse_args() -> Cli {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};
    let parsed = negative_numbers(Cli::command())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let e = match parsed {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let text = e.to_string();
    // The command the error is about, from clap's usage line (`Usage: memprune measure unit
    // [OPTIONS] ...`), for the pointer to its --help.
    let usage = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| {
            u.split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']) && !w.contains('|'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "memprune".into());
    let first = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        format!("`{usage}` needs a subcommand")
    } else {
        // The first paragraph (a list of missing arguments continues on its own lines).
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_string()
    };
    eprintln!("error: {first} (see `{usage} --help`)");
    std::process::exit(1);
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    let Some(command) = cli.command else {
        return match cli.policy {
            Some(p) => policy_cmd(&p, quiet),
            None => {
                use clap::CommandFactory;
                Cli::command().print_help()?;
                Ok(())
            }
        };
    };
    match command {
        Command::Plan { policy } => {
            let planned = pipeline::plan_policy(PolicyFile::load(&policy)?, !quiet)?;
            println!(
                "{}: plan for {} ({} units of {} pruned)\n",
                policy.display(),
                planned.encoder.checkpoint.path.display(),
                planned.plan.units_pruned(),
                planned.groups.iter().map(|g| g.channels).sum::<usize>()
            );
            print!("{}", report::plan_table(&planned.plan));
            println!(
                "\nwould write {}",
                planned.policy.output_checkpoint().display()
            );
            Ok(())
        }
        Command::Inspect {
            checkpoint,
            size,
            load,
        } => {
            if size == Some(0) {
                bail!("--size 0: images need a side of at least 1 pixel");
            }
            let path = checkpoint.unwrap_or_else(defaults::model_f);
            let enc = Encoder::load(&path, &load.options())?;
            if let Some(size) = size {
                enc.check_input_size(size)
                    .with_context(|| format!("--size {size}"))?;
            }
            print!("{}", report::inspect(&enc, size));
            Ok(())
        }
        Command::Measure(m) => measure_cmd(m, quiet),
        Command::Experiment(e) => experiment_cmd(e, quiet),
        Command::Train(a) => train_cmd(*a, quiet),
        Command::Probe(a) => probe_cmd(a),
        Command::Embed(a) => embed_cmd(a),
        Command::Report(a) => report_cmd(a, quiet),
        Command::Merge {
            partials,
            json,
            csv,
        } => merge_cmd(partials, json, csv),
    }
}

/// The command line as typed, for the report's settings.
fn command_line() -> String {
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

fn report_cmd(a: ReportArgs, quiet: bool) -> Result<()> {
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

fn experiment_cmd(e: Experiment, quiet: bool) -> Result<()> {
    let (checkpoint, data_path, points, views, seed, draws, modes, json, chart, heads, augment) =
        match e {
            Experiment::Finetune(a) => return finetune_experiment_cmd(*a, quiet),
            Experiment::Prune {
                checkpoint,
                data,
                points,
                views,
                seed,
                draws,
                modes,
                json,
                chart,
                heads,
                augment,
            } => (
                checkpoint, data, points, views, seed, draws, modes, json, chart, heads, augment,
            ),
        };
    let modes: Vec<PruneMode> = modes
        .iter()
        .map(|m| match m.as_str() {
            "mask" => Ok(PruneMode::Mask),
            "remove" => Ok(PruneMode::Remove),
            other => bail!("--modes: `{other}` is neither mask nor remove"),
        })
        .collect::<Result<_>>()?;
    if points == 0 {
        bail!("--points must be at least 1");
    }
    let path = checkpoint.unwrap_or_else(defaults::model_f);
    let data_path = data_path.unwrap_or_else(defaults::data);
    // Before any work: the outputs are neither an input nor each other; they appear only
    // once everything has succeeded.
    let mut outputs = memprune::output::OutputSet::new();
    outputs.input(&path, "the checkpoint");
    outputs.input(&data_path, "the data");
    if let Some(a) = &augment {
        outputs.input(a, "the augment file");
    }
    if let Some(j) = &json {
        outputs.output(j, "--json")?;
    }
    if let Some(c) = &chart {
        outputs.output(c, "--chart")?;
    }
    if views == 0 {
        bail!("--views must be at least 1");
    }
    if draws == 0 {
        bail!("--draws must be at least 1");
    }
    let enc = Encoder::load(
        &path,
        &LoadOptions {
            heads,
            ..Default::default()
        },
    )?;
    let train = data::open(&data_path, Split::Train)?;
    let test = data::open(&data_path, Split::Test)?;
    // UnitMem on the encoder's own training points (when it records them), with its control
    // on as many test points, for the UnitMem-excess rows.
    let pts = measure::default_unit_points(&enc, &train, Split::Train, points, seed)?;
    let unseen = measure::unseen_points(&test, pts.len(), seed)?;
    let augment = memprune::data::augment_choice::choose(
        GivenAugment::from_flag(augment.as_deref())?,
        &enc.checkpoint,
        None,
    )?;
    println!("{}", augment.line());
    let settings = ViewSettings {
        augment: augment.config.clone(),
        normalization: Normalization::default_for(train.kind, train.channels),
        seed,
        batch: 250,
    };
    let control = (unseen.len() == pts.len()).then_some((&test, unseen.as_slice()));
    let unit = measure::unit_scores_with_control(
        &enc,
        &train,
        &pts,
        control,
        views,
        Reduce::Mean,
        false,
        &settings,
        !quiet,
    )?;
    let probe = memprune::eval::probe::ProbeSettings::default();
    let mut t = memprune::eval::experiment::table6(
        &enc,
        &unit,
        &train,
        &test,
        &probe,
        draws,
        &modes,
        |line| {
            if !quiet {
                eprintln!("{line}");
            }
        },
    )?;
    t.augment = Some(augment);
    println!("Table 6 on {} ({} units), UnitMem on {} training points x {views} views; linear-probe top-1 on the {} test images of {}\n", path.display(), t.total_units, pts.len(), test.len(), test.source);
    print!("{}", report::table6(&t));
    if let Some(j) = &json {
        outputs.stage(j, serde_json::to_string_pretty(&t)?.as_bytes())?;
    }
    if let Some(c) = &chart {
        outputs.stage(c, report::table6_chart(&t)?.as_bytes())?;
    }
    outputs.commit()?;
    Ok(())
}

fn policy_cmd(path: &Path, quiet: bool) -> Result<()> {
    let pf = PolicyFile::load(path)?;
    // Every output checked against every input and each other before any work.
    let mut outputs = pf.outputs()?;
    let report_settings = match &pf.policy.output.report {
        Some(_) => Some(memprune::report::gather::ReportSettings::of_policy(&pf)?),
        None => None,
    };
    let planned = pipeline::plan_policy(pf, !quiet)?;
    println!("{}", planned.augment.line());
    println!(
        "{}: {} ({} units of {} pruned)\n",
        path.display(),
        planned.encoder.checkpoint.path.display(),
        planned.plan.units_pruned(),
        planned.groups.iter().map(|g| g.channels).sum::<usize>()
    );
    print!("{}", report::plan_table(&planned.plan));
    let mut r = pipeline::run_policy(&planned, &mut outputs)?;
    let probe = pipeline::probe_before_after(&planned, &mut r, &outputs)?;
    let finetune = pipeline::finetune_before_after(&planned, &mut r, &outputs, |l| {
        if !quiet {
            eprintln!("{l}");
        }
    })?;
    let out = &planned.policy.policy.output;
    if let Some(j) = &out.json {
        outputs.stage(j, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    if let (Some(c), Some(u)) = (&out.chart, &planned.scores.unit_mem) {
        outputs.stage(c, report::unit_mem_chart(u)?.as_bytes())?;
    }
    if let (Some(h), Some(s)) = (&out.report, &report_settings) {
        let g = memprune::report::gather::gather(s, !quiet)?;
        let part = memprune::report::html::PolicyPart {
            report: &r,
            probe,
            text: &planned.policy.text,
        };
        let html = memprune::report::html::render(&g, &command_line(), Some(&part))?;
        outputs.stage(h, html.as_bytes())?;
    }
    // Everything validated and computed: only now do the files appear.
    outputs.commit()?;
    println!("\nwrote {}\n", r.after.checkpoint.display());
    print!("{}", report::before_after_table(&r, probe));
    if let Some((b, a)) = &finetune {
        let ft = planned
            .policy
            .policy
            .evaluation
            .finetune
            .clone()
            .unwrap_or_default();
        println!(
            "\nfine-tuned on {} ({} epochs, seeds {:?}):\n",
            ft.data_path().display(),
            memprune::eval::finetune::settings_from(&ft).epochs,
            memprune::eval::finetune::settings_from(&ft).seeds
        );
        print!("{}", report::finetune::before_after(b, a));
    }
    Ok(())
}

struct Prepared {
    encoder: Encoder,
    /// LayerMem's g.
    reference: Option<Encoder>,
    set: ImageSet,
    points: Vec<usize>,
    settings: ViewSettings,
    augment_source: String,
}

/// `per_point`: the views a point is measured on (K for UnitMem and ClassMem, 2K + 1 for
/// LayerMem at most), for the memory check. `reference`: LayerMem's g.
fn prepare(
    c: &MeasureArgs,
    default_points: DefaultPoints,
    per_point: usize,
    reference: Option<&Path>,
) -> Result<Prepared> {
    if c.points == Some(0) {
        bail!("--points must be at least 1");
    }
    let path = c.checkpoint.clone().unwrap_or_else(defaults::model_f);
    let device = memprune::model::device::parse(&c.device)?;
    let encoder = Encoder::load_on(&path, &c.load.options(), &device)?;
    let data_path = c.data.clone().unwrap_or_else(defaults::data);
    let set = data::open::open_with(&data_path, c.split, &c.read.for_encoder(&encoder))?;
    let choice = PointChoice {
        points: c.points,
        range: c.range.clone(),
        indices: c.indices.clone(),
    };
    let points = measure::choose_points(&choice, &set, c.split, &encoder, c.seed, default_points)?;
    let mut normalization = Normalization::default_for(set.kind, set.channels);
    if let Some(m) = &c.mean {
        normalization.mean = m.clone();
    }
    if let Some(s) = &c.std {
        normalization.std = s.clone();
    }
    normalization
        .validate(set.channels)
        .context("--mean/--std")?;
    let reference = reference
        .map(|r| Encoder::load_on(r, &c.load.options(), &encoder.device))
        .transpose()?;
    let augment = memprune::data::augment_choice::choose(
        GivenAugment::from_flag(c.augment.as_deref())?,
        &encoder.checkpoint,
        reference.as_ref().map(|g| &g.checkpoint),
    )?;
    println!("{}", augment.line());
    let settings = ViewSettings {
        augment: augment.config,
        normalization,
        seed: c.seed,
        batch: c.batch,
    };
    memprune::data::limits::check_views(
        points.len(),
        per_point,
        c.batch,
        set.channels,
        settings.size(&set),
        c.dump_views.is_some(),
    )?;
    Ok(Prepared {
        encoder,
        reference,
        set,
        points,
        settings,
        augment_source: augment.source,
    })
}

fn settings_json(c: &MeasureArgs, p: &Prepared, extra: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "memprune_version": env!("CARGO_PKG_VERSION"),
        "model": p.encoder.checkpoint.path.display().to_string(),
        "arch": p.encoder.describe(),
        "data": p.set.source,
        "split": format!("{:?}", c.split).to_lowercase(),
        "points": p.points,
        "views": c.views,
        "seed": c.seed,
        "augment": p.settings.augment,
        "augment_source": p.augment_source,
        "normalization": p.settings.normalization,
        "data_options": c.read.to_json(),
        "data_line": data::options::data_line(&p.set, &format!("{:?}", c.split).to_lowercase(), &p.settings.normalization, c.mean.is_some() || c.std.is_some()),
        "point_names": p.set.names.of(&p.points),
        "extra": extra,
    })
}

fn write_out(path: &Option<PathBuf>, text: &str, inputs: &[&Path]) -> Result<()> {
    if let Some(p) = path {
        let staged = OUTPUTS.with(|o| {
            o.borrow_mut()
                .as_mut()
                .map(|set| set.stage(p, text.as_bytes()))
        });
        match staged {
            Some(r) => r?,
            None => memprune::checkpoint::write_file_atomic(p, text.as_bytes(), inputs)?,
        }
    }
    Ok(())
}

thread_local! {
    /// The output set of the running `measure` (see memprune::output): `write_out` and
    /// `dump_dir` stage into it, and `measure_cmd` commits it once the command has succeeded.
    static OUTPUTS: std::cell::RefCell<Option<memprune::output::OutputSet>> = Default::default();
}

const DUMP_FILES: [&str; 4] = ["points.npy", "views.npy", "clean.npy", "meta.json"];

/// Where `--dump-views DIR` writes: a staged folder moved into DIR at the end.
fn dump_dir(dir: &Path) -> Result<PathBuf> {
    OUTPUTS.with(|o| match o.borrow_mut().as_mut() {
        Some(set) => set.reserve_dir(dir, &DUMP_FILES),
        None => Ok(dir.to_path_buf()),
    })
}

/// Every file `measure` reads and writes, checked against each other before any work.
fn measure_outputs(m: &Measure) -> Result<memprune::output::OutputSet> {
    let (c, reference) = match m {
        Measure::Unit { common, .. } | Measure::Class { common } => (common, None),
        Measure::Layer {
            common, reference, ..
        } => (
            common,
            Some(reference.clone().unwrap_or_else(defaults::model_g)),
        ),
    };
    let mut set = memprune::output::OutputSet::new();
    set.input(
        &c.checkpoint.clone().unwrap_or_else(defaults::model_f),
        "the checkpoint",
    );
    if let Some(r) = &reference {
        set.input(r, "the reference");
    }
    set.input(&c.data.clone().unwrap_or_else(defaults::data), "the data");
    if let Some(i) = &c.indices {
        set.input(i, "the indices file");
    }
    if let Some(a) = &c.augment {
        set.input(a, "the augment file");
    }
    if let Some(p) = &c.csv {
        set.output(p, "--csv")?;
    }
    if let Some(p) = &c.json {
        set.output(p, "--json")?;
    }
    if let Some(d) = &c.dump_views {
        set.output_dir(d, &DUMP_FILES, "--dump-views")?;
    }
    if let Some(p) = &c.partial {
        set.output(p, "--partial")?;
    }
    Ok(set)
}

fn measure_cmd(m: Measure, quiet: bool) -> Result<()> {
    let set = measure_outputs(&m)?;
    with_outputs(set, || measure_run(m, quiet))
}

/// Runs `f` with `set` as the output set `write_out` stages into; commits it only when `f`
/// succeeded.
fn with_outputs(set: memprune::output::OutputSet, f: impl FnOnce() -> Result<()>) -> Result<()> {
    OUTPUTS.with(|o| *o.borrow_mut() = Some(set));
    let r = f();
    // On failure the set is dropped: its staged files and the folders it made go with it.
    let set = OUTPUTS.with(|o| o.borrow_mut().take());
    r?;
    if let Some(set) = set {
        set.commit()?;
    }
    Ok(())
}

/// The unseen points of a control: as many test-split points as `p` measures.
fn unseen_for(c: &MeasureArgs, p: &Prepared) -> Result<Option<(ImageSet, Vec<usize>)>> {
    if c.no_control || c.split != Split::Train {
        return Ok(None);
    }
    let data_path = c.data.clone().unwrap_or_else(defaults::data);
    let test = data::open::open_with(&data_path, Split::Test, &c.read.for_encoder(&p.encoder))?;
    let pts = measure::unseen_points(&test, p.points.len(), c.seed)?;
    Ok(Some((test, pts)))
}

/// The shard of `--shard` (all points without it).
fn shard_of(c: &MeasureArgs) -> Result<Shard> {
    match &c.shard {
        None => Ok(Shard::WHOLE),
        Some(spec) => Shard::parse(spec, c.shard_count, &|k| std::env::var(k).ok()),
    }
}

/// Writes a shard's partial result (with the digests of what it measured) to `path`.
fn write_partial(
    path: &Path,
    shard: Shard,
    mut run: Run,
    state: State,
    files: &[(&str, &Path)],
    sets: &[(&str, &ImageSet)],
) -> Result<()> {
    for (k, f) in files {
        run.digests.insert(k.to_string(), partial::digest_file(f)?);
    }
    for (k, s) in sets {
        run.digests.insert(k.to_string(), partial::digest_images(s));
    }
    let (n, nc) = (shard.range(run.points.len()).len(), run.points.len());
    let ctrl = run
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
    let what = match run.metric {
        Metric::Unit => "UnitMem",
        Metric::Class => "ClassMem",
        Metric::Layer => "LayerMem",
    };
    let text = Partial::new(shard, run, state).to_json()?;
    write_out(&Some(path.to_path_buf()), &text, &[])?;
    println!(
        "{what} shard {shard}: {n} of {nc} points{ctrl}; partial result {} (merge all {} with `memprune merge`)",
        path.display(),
        shard.count
    );
    Ok(())
}

fn unit_or_class_cmd(c: MeasureArgs, reduce: Reduce, class: bool, quiet: bool) -> Result<()> {
    let shard = shard_of(&c)?;
    let p = prepare(
        &c,
        DefaultPoints::Training(defaults::UNIT_POINTS),
        c.views,
        None,
    )?;
    let meta = if class {
        serde_json::json!({"metric": "class", "views": c.views})
    } else {
        serde_json::json!({"metric": "unit", "views": c.views, "reduce": reduce, "pairing": null})
    };
    let unseen = unseen_for(&c, &p)?;
    let unseen_ref = unseen.as_ref().map(|(s, v)| (s, v.as_slice()));
    measure::check_control_size(&p.points, unseen_ref)?;
    if let Some(dir) = &c.dump_views {
        measure::dump_views(
            &dump_dir(dir)?,
            &p.set,
            &p.points,
            c.views,
            false,
            &p.settings,
            &meta,
        )?;
    }
    let custom = c.mean.is_some() || c.std.is_some();
    let run = Run {
        metric: if class { Metric::Class } else { Metric::Unit },
        settings: with_control(
            settings_json(&c, &p, meta),
            unseen.as_ref(),
            &p.settings.normalization,
            custom,
        ),
        arch: p.encoder.describe(),
        model: p.encoder.checkpoint.path.display().to_string(),
        reference: None,
        layers: measure::layer_names(&p.encoder),
        points: p.points.clone(),
        views: c.views,
        seed: c.seed,
        reduce,
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
        planted: memprune::train_meta::planted_on(&p.encoder.checkpoint, &p.set)?,
        digests: Default::default(),
    };
    let mine = shard.part(&p.points)?;
    let mine_unseen = unseen.as_ref().map(|(s, v)| (s, shard.take(v)));
    let state = measure::unit_state(
        &p.encoder,
        &p.set,
        &mine,
        mine_unseen.as_ref().map(|(s, v)| (*s, v.as_slice())),
        c.views,
        reduce,
        class,
        &p.settings,
        !quiet,
    )?;
    if let Some(path) = &c.partial {
        let mut sets = vec![("data", &p.set)];
        if let Some((s, _)) = &unseen {
            sets.push(("control data", s));
        }
        let files = [("checkpoint", p.encoder.checkpoint.path.as_path())];
        return write_partial(path, shard, run, state, &files, &sets);
    }
    unit_output(&run, &state, &c.csv, &c.json)
}

/// What `measure unit|class` prints and writes, from a whole run's state (one run, or the
/// merge of its shards).
fn unit_output(
    run: &Run,
    state: &State,
    csv: &Option<PathBuf>,
    json: &Option<PathBuf>,
) -> Result<()> {
    let class = run.metric == Metric::Class;
    let (what, metric, argmax) = if class {
        ("ClassMem", "classmem", "argmax_class")
    } else {
        ("UnitMem", "unitmem", "argmax_point")
    };
    let layers = measure::unit_layers(state, &run.layers, run.seed)?;
    let control = run.control_data.as_ref().zip(run.control_points.as_ref());
    let names = namer(run);
    print_data_lines(run);
    println!(
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
            Some((s, v)) => format!("; control: {} unseen points of {} (test split)", v.len(), s),
            None => "; no control".into(),
        }
    );
    print!("{}", report::unit_mem_table(&layers, what));
    let unscored = measure::unscored_layers(state, &run.layers);
    if let Some(note) = report::unscored_note(&unscored) {
        println!("{note}");
    }
    if let (false, Some(pl), Some(_)) = (class, &run.planted, control) {
        println!("\nplanted points ({} recorded in the checkpoint): argmax of the 10 units of highest UnitMem-excess per layer", pl.len());
        print!(
            "{}",
            report::planted_argmax_table(&layers, pl, &run.points, 10, &names)
        );
    }
    let inputs = [Path::new(&run.model)];
    let csv_names = (!class).then_some(&names);
    write_out(
        csv,
        &report::unit_mem_csv(&layers, argmax, csv_names),
        &inputs,
    )?;
    let mut j = run.settings.clone();
    j["metric"] = metric.into();
    if let Some((s, v)) = control {
        j["control"] = serde_json::json!({"data": s, "split": "test", "points": v, "point_names": run.settings["control_point_names"]});
    }
    j["layers"] = serde_json::to_value(&layers)?;
    if !class {
        names.name_argmax(&mut j["layers"]);
    }
    j["unscored_layers"] = serde_json::to_value(&unscored)?;
    write_out(json, &serde_json::to_string_pretty(&j)?, &inputs)
}

/// The names of a run's points and control points (recorded in its settings).
fn namer(run: &Run) -> report::point_names::Namer {
    let ctrl = run.control_points.clone().unwrap_or_default();
    report::point_names::Namer::of_settings(&run.settings, &run.points, &ctrl)
}

/// The data lines a run recorded: its points' and its control's.
fn print_data_lines(run: &Run) {
    for key in ["data_line", "control_data_line"] {
        if let Some(l) = run.settings[key].as_str() {
            println!("{}{l}", if key == "data_line" { "" } else { "control " });
        }
    }
}

/// `settings` with the control's point names and data line.
fn with_control(
    mut settings: serde_json::Value,
    control: Option<&(ImageSet, Vec<usize>)>,
    normalization: &Normalization,
    custom: bool,
) -> serde_json::Value {
    if let Some((set, pts)) = control {
        settings["control_point_names"] = set.names.of(pts).into();
        settings["control_data_line"] =
            data::options::data_line(set, "test", normalization, custom).into();
    }
    settings
}

fn measure_run(m: Measure, quiet: bool) -> Result<()> {
    match m {
        Measure::Unit { common: c, reduce } => unit_or_class_cmd(c, reduce, false, quiet),
        Measure::Class { common: c } => unit_or_class_cmd(c, Reduce::Mean, true, quiet),
        Measure::Layer {
            common: mut c,
            reference,
            pairing,
            score,
            per_point,
            control,
        } => {
            c.load.sub_layers_only = true;
            let shard = shard_of(&c)?;
            let ref_path = reference.or_else(|| c.checkpoint.is_none().then(defaults::model_g));
            // LayerMem: up to 2K views and the clean image of a point.
            let mut p = prepare(
                &c,
                DefaultPoints::Candidates(defaults::LAYER_CANDIDATES),
                c.views.saturating_mul(2).saturating_add(1),
                ref_path.as_deref(),
            )?;
            let Some(ref_path) = ref_path else {
                bail!("measure layer needs --reference: an encoder trained like the model but without the scored points");
            };
            let g = p.reference.take().expect("prepare loads the reference");
            memprune::train_meta::check_reference(&p.encoder.checkpoint, &g.checkpoint)?;
            let control = if c.no_control { Control::None } else { control };
            // The control points: unseen test points, or g's own points.
            let ctrl: Option<(ImageSet, Vec<usize>)> = match control {
                Control::None => None,
                Control::Unseen => unseen_for(&c, &p)?,
                Control::Independent => {
                    let ind = memprune::train_meta::independent_points(&g.checkpoint)?
                        .with_context(|| format!("{}: --control independent needs a reference trained by memprune on shared+independent (it records its independent points)", ref_path.display()))?;
                    let data_path = c.data.clone().unwrap_or_else(defaults::data);
                    let set = data::open::open_with(
                        &data_path,
                        Split::Train,
                        &c.read.for_encoder(&p.encoder),
                    )?;
                    if let Some(bad) = ind.iter().find(|&&i| i >= set.len()) {
                        bail!(
                            "{}: independent point {bad} is outside {}",
                            ref_path.display(),
                            set.source
                        );
                    }
                    let n = p.points.len().min(ind.len());
                    Some((set, ind[..n].to_vec()))
                }
            };
            let meta = serde_json::json!({"metric": "layer", "views": c.views, "pairing": pairing, "score": score});
            if let Some(dir) = &c.dump_views {
                let v = measure::layer_mem_views(pairing, c.views);
                measure::dump_views(
                    &dump_dir(dir)?,
                    &p.set,
                    &p.points,
                    v,
                    pairing == Pairing::Clean,
                    &p.settings,
                    &meta,
                )?;
            }
            let custom = c.mean.is_some() || c.std.is_some();
            let run = Run {
                metric: Metric::Layer,
                settings: with_control(
                    settings_json(&c, &p, meta),
                    ctrl.as_ref(),
                    &p.settings.normalization,
                    custom,
                ),
                arch: p.encoder.describe(),
                model: p.encoder.checkpoint.path.display().to_string(),
                reference: Some(ref_path.display().to_string()),
                layers: measure::layer_names(&p.encoder),
                points: p.points.clone(),
                views: c.views,
                seed: c.seed,
                reduce: Reduce::Mean,
                pairing,
                score,
                control,
                control_data: ctrl.as_ref().map(|(s, _)| s.source.clone()),
                control_points: ctrl.as_ref().map(|(_, v)| v.clone()),
                per_point,
                planted: memprune::train_meta::planted_on(&p.encoder.checkpoint, &p.set)?,
                digests: Default::default(),
            };
            let pb = measure::progress_bar(p.points.len(), !quiet, "LayerMem");
            let points = measure::layer_mem_points(
                &p.encoder,
                &g,
                &p.set,
                &shard.part(&p.points)?,
                c.views,
                pairing,
                &p.settings,
                &pb,
            )?;
            let ctrl_points = match &ctrl {
                Some((set, v)) => {
                    let pb = measure::progress_bar(v.len(), !quiet, "LayerMem (control)");
                    Some(measure::layer_mem_points(
                        &p.encoder,
                        &g,
                        set,
                        &shard.take(v),
                        c.views,
                        pairing,
                        &p.settings,
                        &pb,
                    )?)
                }
                None => None,
            };
            let state = State::Layer {
                points: partial::to_bits(&points),
                control: ctrl_points.as_deref().map(partial::to_bits),
            };
            if let Some(path) = &c.partial {
                let mut sets = vec![("data", &p.set)];
                if let Some((s, _)) = &ctrl {
                    sets.push(("control data", s));
                }
                let files = [
                    ("checkpoint", p.encoder.checkpoint.path.as_path()),
                    ("reference", g.checkpoint.path.as_path()),
                ];
                return write_partial(path, shard, run, state, &files, &sets);
            }
            layer_output(&run, &state, &c.csv, &c.json)
        }
    }
}

/// What `measure layer` prints and writes, from a whole run's state (one run, or the merge
/// of its shards).
fn layer_output(
    run: &Run,
    state: &State,
    csv: &Option<PathBuf>,
    json: &Option<PathBuf>,
) -> Result<()> {
    let State::Layer {
        points,
        control: ctrl,
    } = state
    else {
        bail!("not a LayerMem state");
    };
    let mut points = partial::from_bits(points);
    let mut ctrl_points = ctrl.as_deref().map(partial::from_bits);
    if run.score == LayerScore::Range {
        memprune::metrics::layer_mem::range_normalise(&mut points, ctrl_points.as_deref_mut());
    }
    let control = run.control;
    let boot = memprune::metrics::bootstrap::Bootstrap {
        seed: run.seed,
        ..Default::default()
    };
    let names = &run.layers;
    let layers = memprune::metrics::layer_mem::layer_mem(
        names,
        &points,
        ctrl_points.as_deref().map(|v| (v, control)),
        &boot,
    );
    let reference = run.reference.clone().unwrap_or_default();
    let ctrl_set = run.control_data.as_ref().zip(run.control_points.as_ref());
    let point_names = namer(run);
    print_data_lines(run);
    println!(
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
    );
    print!("{}", report::layer_mem_table(&layers));
    let planted_rows = run
        .planted
        .as_ref()
        .and_then(|pl| memprune::metrics::layer_mem::group_difference(names, &points, pl, &boot));
    if let Some(rows) = &planted_rows {
        println!("\nplanted points (recorded in the checkpoint) against the other scored points: SSLMem'");
        print!("{}", report::planted_layer_table(rows));
    }
    if run.per_point {
        println!("\nSSLMem' per point");
        print!("{}", report::per_point_csv(names, &points, &point_names));
    }
    let inputs = [Path::new(&run.model), Path::new(&reference)];
    let csv_text = if run.per_point {
        report::per_point_sets_csv(names, &points, ctrl_points.as_deref(), &point_names)
    } else {
        report::layer_mem_csv(&layers)
    };
    write_out(csv, &csv_text, &inputs)?;
    let mut j = run.settings.clone();
    j["metric"] = "layermem".into();
    j["reference"] = reference.clone().into();
    j["control"] = serde_json::json!({
        "kind": control,
        "points": run.control_points,
        "point_names": run.settings["control_point_names"],
        "data": run.control_data,
    });
    j["layers"] = serde_json::to_value(&layers)?;
    if let Some(rows) = &planted_rows {
        j["planted"] = serde_json::to_value(rows)?;
    }
    if run.per_point {
        j["per_point"] = serde_json::to_value(&points)?;
        if let Some(cp) = &ctrl_points {
            j["control_per_point"] = serde_json::to_value(cp)?;
        }
    }
    write_out(json, &serde_json::to_string_pretty(&j)?, &inputs)
}

/// `memprune merge`: the partials of one run's shards, checked and merged, printed and
/// written exactly as one run over all points.
fn merge_cmd(partials: Vec<PathBuf>, json: Option<PathBuf>, csv: Option<PathBuf>) -> Result<()> {
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
        let (run, state) = memprune::shard::merge(parts)?;
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

// ---- memprune train / memprune probe ----

#[derive(Args)]
struct TrainArgs {
    #[arg(long, value_enum)]
    framework: memprune::train::Framework,
    /// Architecture: the paper's ResNet9, or torchvision's resnet18/34/50 (CIFAR stem for
    /// images of 64 pixels or less, else the ImageNet stem).
    #[arg(long, value_enum, default_value_t = memprune::train::init::TrainArch::Resnet9)]
    arch: memprune::train::init::TrainArch,
    /// ResNet9: the 8 block widths (blocks 2 and 4, 6 and 8 must match; default the paper's
    /// 32,64,64,64,128,256,256,256). ResNets: the 4 stage widths (default 64,128,256,512).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// ViT: transformer blocks (default 6).
    #[arg(long)]
    depth: Option<usize>,
    /// ViT: model width (default 128).
    #[arg(long)]
    width: Option<usize>,
    /// ViT: attention heads (default 4).
    #[arg(long)]
    heads: Option<usize>,
    /// ViT: MLP hidden width (default 4 x width).
    #[arg(long)]
    mlp: Option<usize>,
    /// ViT: patch side in pixels (default 4: a 7x7 grid on 28x28 images).
    #[arg(long)]
    patch: Option<usize>,
    /// MAE decoder: blocks (default 2), width (default 64), heads (default 4).
    #[arg(long)]
    decoder_depth: Option<usize>,
    #[arg(long)]
    decoder_width: Option<usize>,
    #[arg(long)]
    decoder_heads: Option<usize>,
    /// Training data (the train split is read). Default: the embedded Fashion-MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per step (SSL: 2 views each).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Peak learning rate. Default: simclr 0.3 (LARS) or 0.5 (sgd) or 1e-3 (adamw);
    /// simsiam 0.05; supervised 0.1 (sgd) or 1e-3 (adamw); each times batch/256 except adamw;
    /// mae 1e-3 (adamw).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay (on conv and linear weights only). Default: ViTs 0.05; simclr 1e-6,
    /// else 5e-4.
    #[arg(long)]
    wd: Option<f64>,
    /// Default: adamw for ViTs (betas 0.9/0.95 for MAE), lars for simclr, sgd otherwise.
    #[arg(long, value_enum)]
    optimizer: Option<memprune::train::optim::OptimizerKind>,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long)]
    nesterov: bool,
    /// LARS trust coefficient.
    #[arg(long, default_value_t = 0.02)]
    lars_eta: f64,
    /// Linear warm-up (epochs, may be fractional), then cosine decay to 0.
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    /// NT-Xent temperature (SimCLR).
    #[arg(long, default_value_t = 0.5)]
    temperature: f64,
    /// Seed of the initialisation, views and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// all, shared+candidates (LayerMem's f) or shared+independent (LayerMem's g).
    #[arg(long, value_enum, default_value_t = memprune::train::split::SplitKind::All)]
    split: memprune::train::split::SplitKind,
    /// Seed of the 80/10/10 split (f and g must share it).
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Augmentation settings as YAML (as `measure --augment`). Default: docs/METRICS.md's SSL
    /// augmentation; supervised: crop scale 0.5..1 and flips only.
    #[arg(long)]
    augment: Option<PathBuf>,
    /// Checkpoint to write (a resume state `<out>.state.safetensors` is written beside it).
    #[arg(long)]
    out: PathBuf,
    /// Continue from this checkpoint (or its resume state) up to --epochs.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Fine-tune: start the encoder from this checkpoint (its architecture and widths,
    /// so --arch and --widths are ignored) with fresh heads.
    #[arg(long)]
    init: Option<PathBuf>,
    /// With --init: the layers to train, comma separated, as `memprune inspect` names them;
    /// the others are frozen (folded BatchNorm, weights unchanged). Default: the layers the
    /// checkpoint's policy marked trainable (`memprune.trainable`), else all.
    #[arg(long, value_delimiter = ',', requires = "init")]
    trainable: Option<Vec<String>>,
    /// A file of point indices (as `measure --indices`) known to be atypical, planted in the
    /// data to check localization against a known answer; recorded in `memprune.planted`.
    #[arg(long)]
    planted: Option<PathBuf>,
    /// Store the weights as f16 (half the size; the resume state stays f32).
    #[arg(long)]
    f16: bool,
    /// Where the model trains: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda`
    /// feature (views are made on the CPU and copied over; memprune's CPU-only kernels fall
    /// back to candle's ops there; checkpoints are written from a CPU copy).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    device: String,
    /// CPU threads (default: all).
    #[arg(long)]
    threads: Option<usize>,
}

fn set_threads(threads: Option<usize>) -> Result<()> {
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

fn train_cmd(a: TrainArgs, quiet: bool) -> Result<()> {
    use memprune::train::{Framework, TrainConfig, Trainer};
    set_threads(a.threads)?;
    let device = memprune::model::device::parse(&a.device)?;
    {
        // Before any work: --out and its resume state are neither the data, --init nor
        // --augment (--resume continues in place, so --out may be the resumed checkpoint).
        let mut set = memprune::output::OutputSet::new();
        set.input(&a.data.clone().unwrap_or_else(defaults::data), "the data");
        if let Some(init) = &a.init {
            set.input(init, "--init");
        }
        if let Some(p) = &a.augment {
            set.input(p, "the augment file");
        }
        set.output(&a.out, "--out")?;
        memprune::output::parent_exists(&a.out, "--out")?;
        set.output(&memprune::train::state_path(&a.out), "--out's resume state")?;
    }
    let data_path = a.data.clone().unwrap_or_else(defaults::data);
    let set = data::open(&data_path, Split::Train)?;
    let init_is_vit = match &a.init {
        Some(p) => Encoder::load(p, &LoadOptions::default())?.arch.arch_id() == "vit",
        None => false,
    };
    let vit = a.arch == memprune::train::init::TrainArch::Vit
        || a.framework == Framework::Mae
        || init_is_vit;
    let kind = a
        .optimizer
        .unwrap_or_else(|| a.framework.default_optimizer(vit));
    let lr =
        a.lr.unwrap_or_else(|| a.framework.default_lr(kind, a.batch));
    let wd =
        a.wd.unwrap_or_else(|| a.framework.default_weight_decay(vit));
    let mut optimizer = a.framework.optimizer_config(kind, wd);
    let d = memprune::train::vit_init::VitShape::default();
    let width = a.width.unwrap_or(d.width);
    let vit_shape = memprune::train::vit_init::VitShape {
        depth: a.depth.unwrap_or(d.depth),
        width,
        heads: a.heads.unwrap_or(d.heads),
        mlp: a.mlp.unwrap_or(4 * width),
        patch: a.patch.unwrap_or(d.patch),
        decoder_depth: a.decoder_depth.unwrap_or(d.decoder_depth),
        decoder_width: a.decoder_width.unwrap_or(d.decoder_width),
        decoder_heads: a.decoder_heads.unwrap_or(d.decoder_heads),
    };
    optimizer.momentum = a.momentum;
    optimizer.nesterov = a.nesterov;
    optimizer.eta = a.lars_eta;
    let augment = match &a.augment {
        Some(p) => AugmentConfig::load(p)?,
        None => a.framework.default_augment(),
    };
    let widths = if a.arch == memprune::train::init::TrainArch::Vit {
        if a.widths.is_some() {
            bail!("--widths sizes ResNets; a ViT takes --depth, --width, --heads, --mlp, --patch");
        }
        vit_shape.check_sizes()?;
        vit_shape.widths()
    } else {
        a.widths.clone().unwrap_or_else(|| a.arch.default_widths())
    };
    if a.init.is_none() {
        a.arch.check_widths(&widths)?;
    }
    let cfg = TrainConfig {
        framework: a.framework,
        arch: a.arch,
        widths: widths.clone(),
        epochs: a.epochs,
        batch: a.batch,
        lr,
        optimizer,
        warmup_epochs: a.warmup_epochs,
        seed: a.seed,
        split: a.split,
        split_seed: a.split_seed,
        temperature: a.temperature,
        augment,
        normalization: Normalization::default_for(set.kind, set.channels),
        save_dtype: if a.f16 {
            candle_core::DType::F16
        } else {
            candle_core::DType::F32
        },
        init_from: a.init.clone(),
        trainable: a.trainable.clone(),
        planted: match &a.planted {
            Some(p) => Some(memprune::data::subset::Subset::from_file(p, set.len())?.indices),
            None => None,
        },
        vit: vit_shape,
        device,
    };
    let label = data_path.display().to_string();
    let mut trainer = Trainer::new(cfg, &set, &label, a.resume.as_deref())?;
    if !quiet {
        eprintln!(
            "training {} {} {:?} on {} of {} points of {} ({}), {} epochs x {} steps of {}, {} lr {} wd {}{}",
            a.framework.name(),
            match &trainer.cfg.init_from {
                Some(p) => format!("from {}", p.display()),
                None => a.arch.name().to_string(),
            },
            trainer.cfg.widths,
            trainer.points.len(),
            set.len(),
            label,
            a.split.name(),
            a.epochs,
            trainer.steps_per_epoch(),
            trainer.batch_size(),
            kind.name(),
            lr,
            wd,
            if trainer.epochs_done > 0 { format!(", resuming after epoch {}", trainer.epochs_done) } else { String::new() }
        );
    }
    if let (false, Some(t)) = (quiet, &trainer.cfg.trainable) {
        eprintln!("training {}; every other layer frozen", t.join(", "));
    }
    use std::io::IsTerminal;
    let s = trainer.run(&a.out, std::io::stderr().is_terminal(), quiet)?;
    println!(
        "trained {} epochs in {:.1} s ({:.1} s/epoch), final loss {:.4}: {}",
        s.epochs,
        s.seconds,
        if s.epoch_seconds.is_empty() {
            0.0
        } else {
            s.epoch_seconds.iter().sum::<f64>() / s.epoch_seconds.len() as f64
        },
        s.final_loss,
        a.out.display()
    );
    Ok(())
}

#[derive(Args)]
struct ProbeArgs {
    /// Encoder checkpoint. Default: the embedded encoder f.
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Labelled data with train and test splits. Default: the embedded Fashion-MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    read: data::DataOptions,
    /// Probe the raw pixels instead of an encoder (the floor).
    #[arg(long)]
    raw: bool,
    /// Probe a freshly initialised ResNet9 with these widths (seeded by --init-seed) instead
    /// of a checkpoint: the random-init baseline.
    #[arg(long, value_delimiter = ',', conflicts_with = "raw")]
    random_init: Option<Vec<usize>>,
    /// Probe a fresh initialisation of CKPT's architecture and sizes (a ResNet9 or a ViT;
    /// seeded by --init-seed, as `memprune train` initialises): the random-init baseline of
    /// a trained model.
    #[arg(long, value_name = "CKPT", conflicts_with_all = ["raw", "random_init"])]
    random_like: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    init_seed: u64,
    /// Full-batch Adam steps of the logistic regression.
    #[arg(long, default_value_t = memprune::eval::probe::ProbeSettings::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = memprune::eval::probe::ProbeSettings::default().lr)]
    lr: f64,
    /// L2 penalty on the probe's weights.
    #[arg(long, default_value_t = memprune::eval::probe::ProbeSettings::default().l2)]
    l2: f64,
    /// Also the weighted kNN classifier of DINO on the same features: cosine similarity of
    /// L2-normalised features, the k nearest training points vote with weight exp(s / T);
    /// top-1 and top-5.
    #[arg(long)]
    knn: bool,
    #[arg(long, default_value_t = memprune::eval::knn::KnnSettings::default().k, requires = "knn")]
    knn_k: usize,
    #[arg(long, default_value_t = memprune::eval::knn::KnnSettings::default().temperature, requires = "knn")]
    knn_temperature: f64,
    #[arg(long)]
    threads: Option<usize>,
    /// Where the encoder's forward passes run: `cpu`, or `cuda` / `cuda:N` in a build with
    /// the `cuda` feature (the features come back to the CPU, where the probe is fitted).
    /// A checkpoint's encoder only: the raw-pixel and random-init baselines run on the CPU.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    device: String,
    /// Write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn probe_cmd(a: ProbeArgs) -> Result<()> {
    use memprune::eval::probe::{encoder_features, fit, labels_of, pixel_features, ProbeSettings};
    set_threads(a.threads)?;
    let mut outputs = memprune::output::OutputSet::new();
    outputs.input(&a.data.clone().unwrap_or_else(defaults::data), "the data");
    if let Some(like) = &a.random_like {
        outputs.input(like, "--random-like");
    } else if !a.raw && a.random_init.is_none() {
        outputs.input(
            &a.checkpoint.clone().unwrap_or_else(defaults::model_f),
            "the checkpoint",
        );
    }
    if let Some(p) = &a.json {
        outputs.output(p, "--json")?;
    }
    let settings = ProbeSettings {
        steps: a.steps,
        lr: a.lr,
        l2: a.l2,
        ..ProbeSettings::default()
    };
    settings.validate()?;
    let device = memprune::model::device::parse(&a.device)?;
    if !device.is_cpu() && (a.raw || a.random_init.is_some() || a.random_like.is_some()) {
        bail!("--device {}: only a checkpoint's encoder runs on another device; the raw-pixel and random-init baselines run on the CPU", a.device);
    }
    let data_path = a.data.clone().unwrap_or_else(defaults::data);
    // A checkpoint's encoder first: its input size is the default of mixed-size folders.
    let loaded = match (&a.random_like, a.raw || a.random_init.is_some()) {
        (Some(like), _) => Some(memprune::train::init::random_like(
            like,
            &a.load.options(),
            a.init_seed,
        )?),
        (None, true) => None,
        (None, false) => {
            let path = a.checkpoint.clone().unwrap_or_else(defaults::model_f);
            Some(Encoder::load_on(&path, &a.load.options(), &device)?)
        }
    };
    let read = match &loaded {
        Some(e) => a.read.for_encoder(e),
        None => a.read.clone(),
    };
    let train = data::open::open_with(&data_path, Split::Train, &read)?;
    let test = data::open::open_with(&data_path, Split::Test, &read)?;
    let norm = settings
        .normalization
        .clone()
        .unwrap_or_else(|| Normalization::default_for(train.kind, train.channels));
    for (set, split) in [(&train, "train"), (&test, "test")] {
        println!("{}", data::options::data_line(set, split, &norm, false));
    }
    let knn_settings = memprune::eval::knn::KnnSettings {
        k: a.knn_k,
        temperature: a.knn_temperature,
        ..Default::default()
    };
    knn_settings.validate()?;
    let (what, ftr, fte) = if a.raw {
        (
            "raw pixels".to_string(),
            pixel_features(&train, &settings)?,
            pixel_features(&test, &settings)?,
        )
    } else {
        let enc = if let Some(e) = loaded {
            e
        } else if let Some(w) = &a.random_init {
            let t = memprune::train::init::resnet9(train.channels, w, a.init_seed)?;
            let name = PathBuf::from(format!("<random-init resnet9 {w:?}, seed {}>", a.init_seed));
            let ckpt = memprune::checkpoint::Checkpoint::from_tensors(&name, t, Default::default());
            Encoder::from_checkpoint(ckpt, &LoadOptions::default())?
        } else {
            bail!("no encoder to probe");
        };
        (
            enc.checkpoint.path.display().to_string(),
            encoder_features(&enc, &train, &settings)?,
            encoder_features(&enc, &test, &settings)?,
        )
    };
    let (ytr, yte) = (labels_of(&train)?, labels_of(&test)?);
    let r = fit(&ftr, &ytr, &fte, &yte, &settings)?;
    let knn = if a.knn {
        Some(memprune::eval::knn::knn(
            &ftr,
            &ytr,
            &fte,
            &yte,
            &knn_settings,
        )?)
    } else {
        None
    };
    println!(
        "linear probe of {what} on {}: top-1 {:.2} % on {} test images (train {:.2} %, {} images, {} features, {} classes)",
        data_path.display(),
        100.0 * r.test_accuracy,
        r.test_points,
        100.0 * r.train_accuracy,
        r.train_points,
        r.features,
        r.classes
    );
    if let Some(k) = &knn {
        println!(
            "kNN (k = {}, T = {}) of {what} on {}: top-1 {:.2} %, top-5 {:.2} % on {} test images",
            k.k,
            k.temperature,
            data_path.display(),
            100.0 * k.top1,
            100.0 * k.top5,
            k.test_points
        );
    }
    if let Some(p) = &a.json {
        let j = serde_json::json!({"model": what, "data": data_path.display().to_string(), "data_options": read.to_json(), "train_points": train.len(), "test_points": test.len(), "settings": settings, "result": r, "knn": knn});
        outputs.stage(p, serde_json::to_string_pretty(&j)?.as_bytes())?;
    }
    outputs.commit()?;
    Ok(())
}

#[derive(Args)]
struct EmbedArgs {
    /// Encoder checkpoint. Default: the embedded encoder f.
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Data: an IDX folder, CIFAR binary folder or image folder. Default: the embedded
    /// Fashion-MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which split of --data: every one of its points is embedded, in order.
    #[arg(long, value_enum, default_value_t = Split::Train)]
    split: Split,
    #[command(flatten)]
    read: data::DataOptions,
    /// FILE.safetensors (tensors `features`, `indices`, `labels`) or FILE.npy (the features;
    /// FILE-stem.indices.npy and FILE-stem.labels.npy beside it).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A layer's act_u per unit (the spatial mean of each channel; a ViT's units as
    /// `inspect` lists them) instead of the pooled representation (`pool`, the probe's).
    #[arg(long, value_name = "NAME")]
    layer: Option<String>,
    /// Images per forward pass (memory only).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Per-channel normalisation mean, comma separated (default: the data set's usual one).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel normalisation std, comma separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    std: Option<Vec<f32>>,
    #[arg(long)]
    threads: Option<usize>,
}

fn embed_cmd(a: EmbedArgs) -> Result<()> {
    use memprune::eval::embed;
    set_threads(a.threads)?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let path = a.checkpoint.clone().unwrap_or_else(defaults::model_f);
    let data_path = a.data.clone().unwrap_or_else(defaults::data);
    let mut outputs = memprune::output::OutputSet::new();
    outputs.input(&path, "the checkpoint");
    outputs.input(&data_path, "the data");
    let files = embed::output_files(&a.out)?;
    for f in &files {
        outputs.output(f, "--out")?;
    }
    let enc = Encoder::load(&path, &a.load.options())?;
    let set = data::open::open_with(&data_path, a.split, &a.read.for_encoder(&enc))?;
    let mut normalization = Normalization::default_for(set.kind, set.channels);
    if let Some(m) = &a.mean {
        normalization.mean = m.clone();
    }
    if let Some(s) = &a.std {
        normalization.std = s.clone();
    }
    normalization
        .validate(set.channels)
        .context("--mean/--std")?;
    let settings = memprune::eval::probe::ProbeSettings {
        batch: a.batch,
        normalization: Some(normalization),
        ..Default::default()
    };
    let e = embed::embed(&enc, &set, a.layer.as_deref(), &settings)?;
    let split = format!("{:?}", a.split).to_lowercase();
    let custom = a.mean.is_some() || a.std.is_some();
    if let Some(n) = &settings.normalization {
        println!("{}", data::options::data_line(&set, &split, n, custom));
    }
    let meta = std::collections::BTreeMap::from([
        (
            "memprune.checkpoint".to_string(),
            path.display().to_string(),
        ),
        ("memprune.data".to_string(), data_path.display().to_string()),
        (
            "memprune.data_options".to_string(),
            a.read.to_json().to_string(),
        ),
        ("memprune.split".to_string(), split.clone()),
        (
            "memprune.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    let encoded = embed::encode(&e, &a.out, &meta)?;
    for (f, bytes) in &encoded {
        outputs.stage(f, bytes)?;
    }
    outputs.commit()?;
    let dims = e.features.dims();
    println!(
        "{}: `{}` of {} {split} points of {} ({} values each){}",
        path.display(),
        e.layer,
        dims[0],
        data_path.display(),
        dims[1..].iter().product::<usize>(),
        if e.labels.is_none() {
            ", no labels in the data"
        } else {
            ""
        }
    );
    for (f, _) in &encoded {
        println!("wrote {}", f.display());
    }
    Ok(())
}
