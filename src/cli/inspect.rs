//! `memprune inspect`: the detected architecture, its layers and units, parameters and MACs.

use super::args::LoadArgs;
use anyhow::Result;
use clap::Args;
use memprune::jobs::inspect::InspectRequest;
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
    let r = InspectRequest {
        checkpoint: a.checkpoint,
        size: a.size,
        load: a.load.options(),
    }
    .run()?;
    print!("{}", r.table());
    Ok(())
}
