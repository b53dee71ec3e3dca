//! The `memprune` command: a thin layer over the library (parse, call, print).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use memprune::data::augment::AugmentConfig;
use memprune::data::normalize::Normalization;
use memprune::data::{self, ImageSet, Split};
use memprune::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use memprune::metrics::layer_mem::Pairing;
use memprune::metrics::unit_mem::Reduce;
use memprune::model::resnet::Stem;
use memprune::model::{Encoder, LoadOptions};
use memprune::plan::PolicyFile;
use memprune::{defaults, pipeline, report};
use std::path::{Path, PathBuf};

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
        /// Input side for the MAC count.
        #[arg(long, default_value_t = 28)]
        size: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Measure memorization: `unit` (UnitMem), `class` (ClassMem) or `layer` (LayerMem).
    #[command(subcommand)]
    Measure(Measure),
    /// Print what a policy would do (units pruned per layer, layers trained), writing nothing.
    Plan {
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
}

/// Where METRICS.md leaves a choice, memprune makes this one (also in the README).
const CHOICES: &str = "Choices where the paper is silent:
  act_u       the spatial mean of a channel of the layer's output as the network passes it
              on: after BatchNorm and ReLU, and after the max-pool of ResNet9 blocks 2, 5, 6
  dead unit   mu_max <= 0: UnitMem 0, counted as dead
  signed      a layer with negative activations is flagged `(signed)`; its ratio is reported
              as computed (0 when the denominator is 0)
  ties        the maximum goes to the smallest point index (shard merging stays exact)
  median      numpy's (mean of the two middle values)
  LayerMem    reps are layer outputs flattened and scaled to unit L2 norm (a zero output stays
              zero); pair j = views 2j and 2j+1; SSL_f + SSL_g = 0 scores 0; the top/bottom
              halves are ranked once, by SSLMem' of the last layer
  views       view v of point i is a pure function of (seed, i, v): RandomResizedCrop as
              torchvision (bilinear, no antialias), flip, colour jitter in random order,
              grayscale; results do not depend on --batch or the thread count";

#[derive(Subcommand)]
enum Measure {
    /// UnitMem of every unit of every layer (METRICS.md Eq. 5-8).
    #[command(after_long_help = CHOICES)]
    Unit {
        #[command(flatten)]
        common: MeasureArgs,
        /// How mu_-max is taken over the other points: `mean` (the paper's Eq. 7, streaming,
        /// O(units) memory) or `median` (the paper's appendix and the authors' script).
        #[arg(long, value_enum, default_value_t = Reduce::Mean)]
        reduce: Reduce,
    },
    /// ClassMem, the supervised counterpart of UnitMem (needs labels).
    #[command(after_long_help = CHOICES)]
    Class {
        #[command(flatten)]
        common: MeasureArgs,
    },
    /// LayerMem and dLayerMem of every layer (Eq. 1-4), against a reference encoder.
    #[command(after_long_help = CHOICES)]
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
        /// Also print (and put in --json) SSLMem' of every point at every layer.
        #[arg(long)]
        per_point: bool,
    },
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
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            prefix: self.prefix.clone(),
            stem: self.stem,
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
    /// Measure on N points drawn at random (seeded by --seed) from the split.
    #[arg(long, conflicts_with_all = ["range", "indices"])]
    points: Option<usize>,
    /// Measure on the points START..END (global indices, END excluded).
    #[arg(long, value_name = "START..END", conflicts_with = "indices")]
    range: Option<String>,
    /// Measure on the point indices listed in a file (one per line, or a JSON array).
    #[arg(long)]
    indices: Option<PathBuf>,
    /// K: augmented views per point (LayerMem: K pairs).
    #[arg(long, default_value_t = 10)]
    views: usize,
    /// Seed of the views (and of --points).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Views per forward pass: memory, not results.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Per-channel normalisation mean, comma separated (default: the data set's usual one).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel normalisation std, comma separated.
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Augmentation settings as a YAML file (keys: size, crop_scale, crop_ratio, flip_p,
    /// jitter_p, brightness, contrast, saturation, hue, grayscale_p). Default: METRICS.md's.
    #[arg(long)]
    augment: Option<PathBuf>,
    /// Write everything (settings, per layer, per unit or per point) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one CSV line per unit (unit, class) or per point (layer --per-point).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the exact view tensors used (.npy) and the point indices to this folder.
    #[arg(long)]
    dump_views: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
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
            let path = checkpoint.unwrap_or_else(defaults::model_f);
            let enc = Encoder::load(&path, &load.options())?;
            print!("{}", report::inspect(&enc, size));
            Ok(())
        }
        Command::Measure(m) => measure_cmd(m, quiet),
    }
}

fn policy_cmd(path: &Path, quiet: bool) -> Result<()> {
    let planned = pipeline::plan_policy(PolicyFile::load(path)?, !quiet)?;
    println!(
        "{}: {} ({} units of {} pruned)\n",
        path.display(),
        planned.encoder.checkpoint.path.display(),
        planned.plan.units_pruned(),
        planned.groups.iter().map(|g| g.channels).sum::<usize>()
    );
    print!("{}", report::plan_table(&planned.plan));
    let r = pipeline::run_policy(&planned)?;
    println!("\nwrote {}\n", r.after.checkpoint.display());
    print!("{}", report::before_after_table(&r, None));
    if let Some(j) = &planned.policy.policy.output.json {
        memprune::checkpoint::write_file_atomic(
            j,
            serde_json::to_string_pretty(&r)?.as_bytes(),
            &[planned.encoder.checkpoint.path.as_path()],
        )?;
    }
    Ok(())
}

struct Prepared {
    encoder: Encoder,
    set: ImageSet,
    points: Vec<usize>,
    settings: ViewSettings,
}

fn prepare(c: &MeasureArgs, default_points: DefaultPoints) -> Result<Prepared> {
    let path = c.checkpoint.clone().unwrap_or_else(defaults::model_f);
    let encoder = Encoder::load(&path, &c.load.options())?;
    let data_path = c.data.clone().unwrap_or_else(defaults::data);
    let set = data::open(&data_path, c.split)?;
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
    let augment = match &c.augment {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            serde_yaml::from_str::<AugmentConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => AugmentConfig::default(),
    };
    augment.validate().with_context(|| {
        c.augment
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "augmentation".into())
    })?;
    let settings = ViewSettings {
        augment,
        normalization,
        seed: c.seed,
        batch: c.batch,
    };
    Ok(Prepared {
        encoder,
        set,
        points,
        settings,
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
        "normalization": p.settings.normalization,
        "extra": extra,
    })
}

fn write_out(path: &Option<PathBuf>, text: &str, inputs: &[&Path]) -> Result<()> {
    if let Some(p) = path {
        memprune::checkpoint::write_file_atomic(p, text.as_bytes(), inputs)?;
    }
    Ok(())
}

fn measure_cmd(m: Measure, quiet: bool) -> Result<()> {
    match m {
        Measure::Unit { common: c, reduce } => {
            let p = prepare(&c, DefaultPoints::Random(1000))?;
            let meta = serde_json::json!({"metric": "unit", "views": c.views, "reduce": reduce, "pairing": null});
            if let Some(dir) = &c.dump_views {
                measure::dump_views(dir, &p.set, &p.points, c.views, false, &p.settings, &meta)?;
            }
            let pb = measure::progress_bar(p.points.len(), !quiet, "UnitMem");
            let layers = measure::unit_mem(
                &p.encoder,
                &p.set,
                &p.points,
                c.views,
                reduce,
                &p.settings,
                &pb,
            )?;
            println!(
                "UnitMem of {} on {} points x {} views ({} reduction)\n",
                p.encoder.describe(),
                p.points.len(),
                c.views,
                format!("{reduce:?}").to_lowercase()
            );
            print!("{}", report::unit_mem_table(&layers, "UnitMem"));
            let inputs = [p.encoder.checkpoint.path.as_path()];
            write_out(
                &c.csv,
                &report::unit_mem_csv(&layers, "argmax_point"),
                &inputs,
            )?;
            let mut j = settings_json(&c, &p, meta);
            j["metric"] = "unitmem".into();
            j["layers"] = serde_json::to_value(&layers)?;
            write_out(&c.json, &serde_json::to_string_pretty(&j)?, &inputs)
        }
        Measure::Class { common: c } => {
            let p = prepare(&c, DefaultPoints::Random(1000))?;
            let meta = serde_json::json!({"metric": "class", "views": c.views});
            if let Some(dir) = &c.dump_views {
                measure::dump_views(dir, &p.set, &p.points, c.views, false, &p.settings, &meta)?;
            }
            let pb = measure::progress_bar(p.points.len(), !quiet, "ClassMem");
            let layers =
                measure::class_mem(&p.encoder, &p.set, &p.points, c.views, &p.settings, &pb)?;
            println!(
                "ClassMem of {} on {} points x {} views\n",
                p.encoder.describe(),
                p.points.len(),
                c.views
            );
            print!("{}", report::unit_mem_table(&layers, "ClassMem"));
            let inputs = [p.encoder.checkpoint.path.as_path()];
            write_out(
                &c.csv,
                &report::unit_mem_csv(&layers, "argmax_class"),
                &inputs,
            )?;
            let mut j = settings_json(&c, &p, meta);
            j["metric"] = "classmem".into();
            j["layers"] = serde_json::to_value(&layers)?;
            write_out(&c.json, &serde_json::to_string_pretty(&j)?, &inputs)
        }
        Measure::Layer {
            common: c,
            reference,
            pairing,
            per_point,
        } => {
            let p = prepare(&c, DefaultPoints::Candidates(100))?;
            let ref_path = match reference {
                Some(r) => r,
                None if c.checkpoint.is_none() => defaults::model_g(),
                None => bail!("measure layer needs --reference: an encoder trained like the model but without the scored points"),
            };
            let g = Encoder::load(&ref_path, &c.load.options())?;
            memprune::train_meta::check_reference(&p.encoder.checkpoint, &g.checkpoint)?;
            let meta = serde_json::json!({"metric": "layer", "views": c.views, "pairing": pairing});
            if let Some(dir) = &c.dump_views {
                let v = measure::layer_mem_views(pairing, c.views);
                measure::dump_views(
                    dir,
                    &p.set,
                    &p.points,
                    v,
                    pairing == Pairing::Clean,
                    &p.settings,
                    &meta,
                )?;
            }
            let pb = measure::progress_bar(p.points.len(), !quiet, "LayerMem");
            let (layers, points) = measure::layer_mem(
                &p.encoder,
                &g,
                &p.set,
                &p.points,
                c.views,
                pairing,
                &p.settings,
                &pb,
            )?;
            println!(
                "LayerMem of {} against {} on {} points x {} {}\n",
                p.encoder.checkpoint.path.display(),
                ref_path.display(),
                p.points.len(),
                c.views,
                if pairing == Pairing::Views {
                    "view pairs"
                } else {
                    "clean/view pairs"
                }
            );
            print!("{}", report::layer_mem_table(&layers));
            let names = measure::layer_names(&p.encoder);
            if per_point {
                println!("\nSSLMem' per point");
                print!("{}", report::per_point_csv(&names, &points));
            }
            let inputs = [p.encoder.checkpoint.path.as_path(), ref_path.as_path()];
            write_out(&c.csv, &report::per_point_csv(&names, &points), &inputs)?;
            let mut j = settings_json(&c, &p, meta);
            j["metric"] = "layermem".into();
            j["reference"] = ref_path.display().to_string().into();
            j["layers"] = serde_json::to_value(&layers)?;
            if per_point {
                j["per_point"] = serde_json::to_value(&points)?;
            }
            write_out(&c.json, &serde_json::to_string_pretty(&j)?, &inputs)
        }
    }
}
