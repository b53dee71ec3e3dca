//! `memprune probe`: linear-probe (and kNN) accuracy of a frozen encoder.

use super::args::LoadArgs;
use super::set_threads;
use anyhow::Result;
use clap::Args;
use memprune::data;
use memprune::eval::knn::KnnSettings;
use memprune::eval::probe::ProbeSettings;
use memprune::jobs::probe::{ProbeRequest, ProbeResult, ProbeSubject};
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
    #[arg(long, default_value_t = ProbeSettings::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = ProbeSettings::default().lr)]
    lr: f64,
    /// L2 penalty on the probe's weights.
    #[arg(long, default_value_t = ProbeSettings::default().l2)]
    l2: f64,
    /// Also the weighted kNN classifier of DINO on the same features: cosine similarity of
    /// L2-normalised features, the k nearest training points vote with weight exp(s / T);
    /// top-1 and top-5.
    #[arg(long)]
    knn: bool,
    #[arg(long, default_value_t = KnnSettings::default().k, requires = "knn")]
    knn_k: usize,
    #[arg(long, default_value_t = KnnSettings::default().temperature, requires = "knn")]
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

impl ProbeArgs {
    fn request(&self) -> ProbeRequest {
        let subject = match (&self.random_like, &self.random_init, self.raw) {
            (Some(like), _, _) => ProbeSubject::RandomLike(like.clone()),
            (None, _, true) => ProbeSubject::RawPixels,
            (None, Some(w), false) => ProbeSubject::RandomResNet9(w.clone()),
            (None, None, false) => ProbeSubject::Checkpoint(self.checkpoint.clone()),
        };
        ProbeRequest {
            subject,
            load: self.load.options(),
            data: self.data.clone(),
            read: self.read.clone(),
            init_seed: self.init_seed,
            settings: ProbeSettings {
                steps: self.steps,
                lr: self.lr,
                l2: self.l2,
                ..ProbeSettings::default()
            },
            knn: self.knn.then(|| KnnSettings {
                k: self.knn_k,
                temperature: self.knn_temperature,
                ..Default::default()
            }),
            device: self.device.clone(),
        }
    }
}

pub fn run(a: ProbeArgs) -> Result<()> {
    set_threads(a.threads)?;
    let request = a.request();
    let mut outputs = memprune::output::OutputSet::new();
    request.register(&mut outputs);
    if let Some(p) = &a.json {
        outputs.output(p, "--json")?;
    }
    let r = request.run(|line| println!("{line}"))?;
    print_result(&r);
    if let Some(p) = &a.json {
        // Through a JSON value: the keys in the order the JSON has always had them.
        let j = serde_json::to_value(&r)?;
        outputs.stage(p, serde_json::to_string_pretty(&j)?.as_bytes())?;
    }
    outputs.commit()?;
    Ok(())
}

fn print_result(r: &ProbeResult) {
    let p = &r.result;
    println!(
        "linear probe of {} on {}: top-1 {:.2} % on {} test images (train {:.2} %, {} images, {} features, {} classes)",
        r.model,
        r.data,
        100.0 * p.test_accuracy,
        p.test_points,
        100.0 * p.train_accuracy,
        p.train_points,
        p.features,
        p.classes
    );
    if let Some(k) = &r.knn {
        println!(
            "kNN (k = {}, T = {}) of {} on {}: top-1 {:.2} %, top-5 {:.2} % on {} test images",
            k.k,
            k.temperature,
            r.model,
            r.data,
            100.0 * k.top1,
            100.0 * k.top5,
            k.test_points
        );
    }
}
