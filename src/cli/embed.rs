//! `memprune embed`: the encoder's features of every point of a split.

use super::args::LoadArgs;
use super::set_threads;
use anyhow::Result;
use clap::Args;
use memprune::data::{self, Split};
use memprune::jobs::embed::EmbedRequest;
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
    #[arg(long, default_value_t = EmbedRequest::DEFAULT_BATCH)]
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

impl EmbedArgs {
    fn request(self) -> EmbedRequest {
        EmbedRequest {
            checkpoint: self.checkpoint,
            load: self.load.options(),
            data: self.data,
            split: self.split,
            read: self.read,
            out: self.out,
            layer: self.layer,
            batch: self.batch,
            mean: self.mean,
            std: self.std,
        }
    }
}

pub fn run(a: EmbedArgs) -> Result<()> {
    set_threads(a.threads)?;
    let request = a.request();
    let mut outputs = memprune::output::OutputSet::new();
    request.register(&mut outputs)?;
    let r = request.run()?;
    if let Some(line) = &r.data_line {
        println!("{line}");
    }
    for (f, bytes) in &r.files {
        outputs.stage(f, bytes)?;
    }
    outputs.commit()?;
    println!(
        "{}: `{}` of {} {} points of {} ({} values each){}",
        r.checkpoint.display(),
        r.layer,
        r.points,
        r.split,
        r.data.display(),
        r.values,
        if r.labelled {
            ""
        } else {
            ", no labels in the data"
        }
    );
    for (f, _) in &r.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
