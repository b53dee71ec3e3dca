//! `memprune embed`: the encoder's features of every point of a split.

use super::args::LoadArgs;
use super::set_threads;
use anyhow::{bail, Context, Result};
use clap::Args;
use memprune::data::normalize::Normalization;
use memprune::data::{self, Split};
use memprune::defaults;
use memprune::model::Encoder;
use std::path::PathBuf;

#[derive(Args)]
pub struct EmbedArgs {
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

pub fn run(a: EmbedArgs) -> Result<()> {
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
