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
    /// Also write what the table says as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let mut outputs = memprune::output::OutputSet::new();
    if let Some(j) = &a.json {
        let checkpoint = a
            .checkpoint
            .clone()
            .unwrap_or_else(memprune::defaults::model_f);
        outputs.input(&checkpoint, "the checkpoint");
        outputs.output(j, "--json")?;
    }
    let r = InspectRequest {
        checkpoint: a.checkpoint,
        size: a.size,
        load: a.load.options(),
    }
    .run()?;
    print!("{}", r.table());
    if let Some(j) = &a.json {
        outputs.stage(j, serde_json::to_string_pretty(&r.json())?.as_bytes())?;
    }
    outputs.commit().map(|_| ())
}
