//! `memprune probe`: linear-probe (and kNN) accuracy of a frozen encoder.

use super::args::LoadArgs;
use super::set_threads;
use anyhow::{bail, Result};
use clap::Args;
use memprune::data::normalize::Normalization;
use memprune::data::{self, Split};
use memprune::defaults;
use memprune::model::{Encoder, LoadOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct ProbeArgs {
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

pub fn run(a: ProbeArgs) -> Result<()> {
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
