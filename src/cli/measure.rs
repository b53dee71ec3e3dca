//! `memprune measure unit|class|layer`: UnitMem, ClassMem and LayerMem.

use super::args::LoadArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use memprune::data::augment_choice::GivenAugment;
use memprune::data::normalize::Normalization;
use memprune::data::{self, ImageSet, Split};
use memprune::measure::{self, DefaultPoints, PointChoice, ViewSettings};
use memprune::metrics::layer_mem::{Control, LayerScore, Pairing};
use memprune::metrics::unit_mem::Reduce;
use memprune::model::Encoder;
use memprune::shard::partial::{self, Metric, Partial, Run, State};
use memprune::shard::Shard;
use memprune::{defaults, report};
use std::path::{Path, PathBuf};

/// Where docs/METRICS.md leaves a choice, memprune makes this one (also in the README).
const CHOICES: &str =
    "Definitions: docs/METRICS.md in memprune's repository. Choices where the paper is silent:
  act_u       the spatial mean of a channel of the layer's output as the network passes it
              on: after BatchNorm and ReLU, and after the max-pool of ResNet9 blocks 2, 5, 6
  ViT units   `blockN.fc1`: an MLP hidden neuron (fc1 after GELU) averaged over all tokens,
              the class token included; `blockN.heads`: a head, act_u = the mean over all
              tokens of the L2 norm of the head's output before `proj`
  ViT layers  LayerMem compares `blockN.attn` and `blockN.mlp`, the attention and MLP
              sub-layer outputs after their residual adds, and `pool`; --tokens all
              (default: every token flattened, the authors' LayerMem script) or cls
  dead unit   mu_max <= 0: UnitMem 0, counted as dead
  signed      act_u is measured from its activation's lower bound: UnitMem = (mu_max -
              mu_-max) / ((mu_max - floor) + (mu_-max - floor)), in [0, 1]; floor 0 (ReLU,
              norms: Eq. 8 exactly), GELU's minimum -0.169971 (`blockN.fc1`, shown `(from
              -0.170)`); residual streams (`blockN.attn`/`.mlp`) and a ViT's `pool` have no
              bound and are not scored (named below the table); a global policy does not
              rank layers of different floors together
  augment     --augment FILE, else the checkpoint's recorded `memprune.augment` (f and g
              must agree), else the SimCLR default; the first output line says which
  ties        the maximum goes to the smallest point index (shard merging stays exact)
  median      numpy's (mean of the two middle values)
  LayerMem    reps are layer outputs flattened and scaled to unit L2 norm (a zero output stays
              zero); pair j = views 2j and 2j+1; SSL_f + SSL_g = 0 scores 0; the top/bottom
              halves are ranked by SSLMem' of the last layer on the first K/2 view pairs and
              reported on the other K/2 (no selection bias)
  intervals   per layer, 95 %: LayerMem bootstrap over points with their own views (1,000
              resamples seeded by --seed); planted difference and UnitMem-excess from
              random relabellings of the points; UnitMem/ClassMem means over units (spread)
  star (*)    family-wise: Holm at 5 % over the layers shown (docs/CALIBRATION.md)
  control     LayerMem: the same on as many test-split points neither encoder saw;
              corrected = LayerMem(candidates) - LayerMem(unseen) (--control independent:
              (LayerMem(candidates) - LayerMem(g's independent points)) / 2, the symmetric
              estimate). UnitMem/ClassMem: the same units on as many test-split points.
              UnitMem-excess(u) = (mu_max,train - mu_max,unseen) / (mu_max,train +
              mu_max,unseen): ~0 for a unit that is merely selective, -> 1 for a unit whose
              peak response to a training point no unseen point reaches
  points      unit/class: the encoder's own training points when its metadata records a
              split of this data set (at most 1,000, random), else 1,000 random points
  views       view v of point i is a pure function of (seed, i, v): RandomResizedCrop as
              torchvision (bilinear, no antialias), flip, colour jitter in random order,
              grayscale; results do not depend on --batch or the thread count";

#[derive(Subcommand)]
pub enum Measure {
    /// UnitMem of every unit of every layer (docs/METRICS.md Eq. 5-8).
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

pub fn run(m: Measure, quiet: bool) -> Result<()> {
    let set = measure_outputs(&m)?;
    with_outputs(set, || measure_run(m, quiet))
}

/// Runs `f` with `set` as the output set `write_out` stages into; commits it only when `f`
/// succeeded.
pub fn with_outputs(
    set: memprune::output::OutputSet,
    f: impl FnOnce() -> Result<()>,
) -> Result<()> {
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
        planted: memprune::checkpoint::train_meta::planted_on(&p.encoder.checkpoint, &p.set)?,
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
pub fn unit_output(
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
            memprune::checkpoint::train_meta::check_reference(
                &p.encoder.checkpoint,
                &g.checkpoint,
            )?;
            let control = if c.no_control { Control::None } else { control };
            // The control points: unseen test points, or g's own points.
            let ctrl: Option<(ImageSet, Vec<usize>)> = match control {
                Control::None => None,
                Control::Unseen => unseen_for(&c, &p)?,
                Control::Independent => {
                    let ind = memprune::checkpoint::train_meta::independent_points(&g.checkpoint)?
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
                planted: memprune::checkpoint::train_meta::planted_on(
                    &p.encoder.checkpoint,
                    &p.set,
                )?,
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
pub fn layer_output(
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
