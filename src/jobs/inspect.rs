//! `memprune inspect`: a checkpoint's detected architecture, layers and units, parameters
//! and MACs: one request ([`InspectRequest`]), one result ([`InspectResult`]).

use crate::model::{Encoder, LoadOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// An inspection as asked.
#[derive(Debug, Clone, Default)]
pub struct InspectRequest {
    /// Default: the embedded encoder f.
    pub checkpoint: Option<PathBuf>,
    /// Input side for the MAC count (default: the size the checkpoint implies).
    pub size: Option<usize>,
    pub load: LoadOptions,
}

impl InspectRequest {
    pub fn run(&self) -> Result<InspectResult> {
        if self.size == Some(0) {
            bail!("--size 0: images need a side of at least 1 pixel");
        }
        let path = self
            .checkpoint
            .clone()
            .unwrap_or_else(crate::defaults::model_f);
        let encoder = Encoder::load(&path, &self.load)?;
        if let Some(size) = self.size {
            encoder
                .check_input_size(size)
                .with_context(|| format!("--size {size}"))?;
        }
        Ok(InspectResult {
            encoder,
            size: self.size,
        })
    }
}

/// The loaded encoder and the side its MACs are counted at.
#[derive(Debug)]
pub struct InspectResult {
    pub encoder: Encoder,
    pub size: Option<usize>,
}

impl InspectResult {
    /// The table `inspect` prints.
    pub fn table(&self) -> String {
        crate::report::inspect(&self.encoder, self.size)
    }

    /// What the table says, as JSON (`inspect --json`): the checkpoint, how it was read, the
    /// architecture, parameters, MACs at the side counted (and where that side came from),
    /// every layer with its kind and units, the trainable groups and the metadata.
    pub fn json(&self) -> serde_json::Value {
        let e = &self.encoder;
        let (size, size_from) = match self.size {
            Some(s) => (s, "--size".to_string()),
            None => e.arch.native_size(),
        };
        let layers: Vec<serde_json::Value> = e
            .layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "kind": l.kind, "units": l.units}))
            .collect();
        let groups: Vec<String> = e
            .trainable_groups()
            .into_iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(g, _)| g)
            .collect();
        serde_json::json!({
            "checkpoint": e.checkpoint.path.display().to_string(),
            "read_as": e.checkpoint.notes,
            "arch": e.arch_id(),
            "encoder": e.describe(),
            "in_channels": e.in_channels(),
            "parameters": e.params(),
            "macs": e.macs(size),
            "size": size,
            "size_from": size_from,
            "layers": layers,
            "trainable_groups": groups,
            "unused": e.unused,
            "metadata": e.checkpoint.metadata,
            "memprune_version": env!("CARGO_PKG_VERSION"),
        })
    }
}
