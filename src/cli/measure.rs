//! `memprune measure unit|class|layer`: UnitMem, ClassMem and LayerMem.

use super::args::LoadArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use memprune::data::augment_choice::GivenAugment;
use memprune::data::{self, Split};
use memprune::defaults;
use memprune::jobs::layer_mem::LayerMemRequest;
use memprune::jobs::measure::{MeasureRequest, Measured};
use memprune::jobs::unit_mem::UnitMemRequest;
use memprune::jobs::Rendered;
use memprune::measure::PointChoice;
use memprune::metrics::layer_mem::{Control, LayerScore, Pairing};
use memprune::metrics::unit_mem::Reduce;
use memprune::output::OutputSet;
use memprune::shard::Shard;
use std::path::PathBuf;

/// Where docs/METRICS.md leaves a choice, memprune makes this one: the list between the
/// `help:choices` markers of docs/METRICS.md (its one source), for `measure ... --help`.
fn choices() -> &'static str {
    const DOC: &str = include_str!("../../docs/METRICS.md");
    let list = DOC
        .split("<!-- help:choices -->\n```text\n")
        .nth(1)
        .expect("docs/METRICS.md has the choices between its help:choices markers");
    list.split("```").next().unwrap_or_default().trim_end()
}

#[derive(Subcommand)]
pub enum Measure {
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

#[derive(Args)]
pub struct MeasureArgs {
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

impl MeasureArgs {
    /// The library's request, with the shard of `--shard`.
    fn request(&self) -> Result<MeasureRequest> {
        let mut r = MeasureRequest::new(self.checkpoint.clone(), self.data.clone());
        r.load = self.load.options();
        r.split = self.split;
        r.read = self.read.clone();
        r.points = PointChoice {
            points: self.points,
            range: self.range.clone(),
            indices: self.indices.clone(),
        };
        r.views = self.views;
        r.seed = self.seed;
        r.batch = self.batch;
        r.mean = self.mean.clone();
        r.std = self.std.clone();
        r.augment = GivenAugment::from_flag(self.augment.as_deref())?;
        r.control = !self.no_control;
        r.device = self.device.clone();
        r.shard = match &self.shard {
            None => Shard::WHOLE,
            Some(spec) => Shard::parse(spec, self.shard_count, &|k| std::env::var(k).ok())?,
        };
        r.dump_views = self.dump_views.is_some();
        Ok(r)
    }
}

const DUMP_FILES: [&str; 4] = ["points.npy", "views.npy", "clean.npy", "meta.json"];

/// Every file `measure` reads and writes, checked against each other before any work.
fn measure_outputs(m: &Measure) -> Result<OutputSet> {
    let (c, reference) = match m {
        Measure::Unit { common, .. } | Measure::Class { common } => (common, None),
        Measure::Layer {
            common, reference, ..
        } => (
            common,
            Some(reference.clone().unwrap_or_else(defaults::model_g)),
        ),
    };
    let mut set = OutputSet::new();
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

/// Runs `m`; its files appear only once everything has succeeded (on failure the set's
/// staged files and the folders it made go with it).
pub fn run(m: Measure, quiet: bool) -> Result<()> {
    let mut set = measure_outputs(&m)?;
    match m {
        Measure::Unit { common, reduce } => unit(common, reduce, false, quiet, &mut set)?,
        Measure::Class { common } => unit(common, Reduce::Mean, true, quiet, &mut set)?,
        Measure::Layer {
            common,
            reference,
            pairing,
            score,
            per_point,
            control,
        } => {
            let reference =
                reference.or_else(|| common.checkpoint.is_none().then(defaults::model_g));
            let mut r = LayerMemRequest::new(common.request()?, reference);
            r.pairing = pairing;
            r.score = score;
            r.per_point = per_point;
            r.control = control;
            let p = r.prepare()?;
            println!("{}", p.augment.line());
            if let Some(dir) = &common.dump_views {
                let v = memprune::measure::layer_mem_views(pairing, common.views);
                memprune::measure::dump_views(
                    &set.reserve_dir(dir, &DUMP_FILES)?,
                    &p.set,
                    &p.points,
                    v,
                    pairing == Pairing::Clean,
                    &p.settings,
                    &r.meta(),
                )?;
            }
            let measured = r.run(p, !quiet)?;
            finish(measured, &common, &mut set)?;
        }
    }
    set.commit()?;
    Ok(())
}

fn unit(
    c: MeasureArgs,
    reduce: Reduce,
    class: bool,
    quiet: bool,
    set: &mut OutputSet,
) -> Result<()> {
    let r = UnitMemRequest {
        measure: c.request()?,
        reduce,
        class,
    };
    let p = r.prepare()?;
    println!("{}", p.augment.line());
    if let Some(dir) = &c.dump_views {
        memprune::measure::dump_views(
            &set.reserve_dir(dir, &DUMP_FILES)?,
            &p.set,
            &p.points,
            c.views,
            false,
            &p.settings,
            &r.meta(),
        )?;
    }
    let measured = r.run(p, !quiet)?;
    finish(measured, &c, set)
}

/// Prints and stages a run's results, or with `--partial` its shard's partial result.
fn finish(m: Measured, c: &MeasureArgs, set: &mut OutputSet) -> Result<()> {
    if let Some(path) = &c.partial {
        let (text, line) = m.partial(path)?;
        set.stage(path, text.as_bytes())?;
        println!("{line}");
        return Ok(());
    }
    write_rendered(&m.render()?, &c.csv, &c.json, set)
}

/// Prints a result's text and stages its CSV and JSON where asked.
pub fn write_rendered(
    r: &Rendered,
    csv: &Option<PathBuf>,
    json: &Option<PathBuf>,
    set: &mut OutputSet,
) -> Result<()> {
    print!("{}", r.text);
    for (path, text) in [(csv, &r.csv), (json, &r.json)] {
        if let Some(p) = path {
            set.stage(p, text.as_bytes())?;
        }
    }
    Ok(())
}
