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
}
