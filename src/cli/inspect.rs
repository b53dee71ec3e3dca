//! `memprune inspect`: the detected architecture, its layers and units, parameters and MACs.

use super::args::LoadArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use memprune::model::Encoder;
use memprune::{defaults, report};
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// Checkpoint (safetensors or PyTorch .pth). Default: the embedded encoder f.
    pub checkpoint: Option<PathBuf>,
    /// Input side for the MAC count (default: the size the checkpoint implies: a ViT's
    /// position-embedding grid x patch, 224 for a ResNet's ImageNet stem, ...).
    #[arg(long)]
    pub size: Option<usize>,
    #[command(flatten)]
    pub load: LoadArgs,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let InspectArgs {
        checkpoint,
        size,
        load,
    } = a;
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
