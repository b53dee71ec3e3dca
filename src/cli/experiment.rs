//! `memprune experiment`: the paper's Table 6 (prune) and Table 5 (finetune).

use anyhow::{bail, Result};
use clap::Subcommand;
use memprune::data::augment_choice::GivenAugment;
use memprune::data::normalize::Normalization;
use memprune::data::{self, Split};
use memprune::measure::{self, ViewSettings};
use memprune::metrics::unit_mem::Reduce;
use memprune::model::{Encoder, LoadOptions};
use memprune::rewrite::PruneMode;
use memprune::{defaults, report};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Experiment {
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
    Finetune(Box<super::finetune::FinetuneExperimentArgs>),
}

pub fn run(e: Experiment, quiet: bool) -> Result<()> {
    let (checkpoint, data_path, points, views, seed, draws, modes, json, chart, heads, augment) =
        match e {
            Experiment::Finetune(a) => return super::finetune::run(*a, quiet),
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
