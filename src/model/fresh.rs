//! Fresh (untrained) networks: the architectures `memprune train` builds from scratch, each
//! owned by its family's `*_init` file and listed in [`crate::model::registry::FRESH`], and
//! the random-init baseline of a trained model ([`random_like`]).

use crate::checkpoint::Checkpoint;
use crate::model::family::Net;
use crate::model::vit_init::VitShape;
use crate::model::{Encoder, LoadOptions};
use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a fresh network is built for.
#[derive(Debug, Clone)]
pub struct FreshSpec<'a> {
    pub in_channels: usize,
    /// The side of the (square) views it trains on.
    pub image: usize,
    /// Images of 64 pixels or less (solo-learn's choice): ResNets get the CIFAR stem (3x3
    /// stride 1, no max-pool) instead of the ImageNet stem.
    pub small_images: bool,
    /// The widths of a conv net (`--widths`).
    pub widths: &'a [usize],
    /// The sizes of a ViT (and of MAE's decoder).
    pub vit: &'a VitShape,
    /// Also MAE's decoder (`--framework mae`).
    pub decoder: bool,
    pub seed: u64,
}

/// A fresh network's tensors and what loading and recording it needs.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub tensors: BTreeMap<String, Tensor>,
    /// Load metadata that shapes cannot say (a ViT's head counts).
    pub metadata: BTreeMap<String, String>,
    /// The widths `memprune train` records and compares on resume.
    pub widths: Vec<usize>,
    /// Width of the representation (the pooled features the heads read).
    pub feature_dim: usize,
}

/// An architecture `memprune train` builds from scratch.
pub trait FreshArch: Sync {
    /// Its `--arch` name, also recorded as `memprune.arch`.
    fn name(&self) -> &'static str;
    /// One line for `--help`: what it is and which flags size it.
    fn about(&self) -> &'static str;
    /// A network of patch tokens (a transformer): AdamW and its weight decay by default,
    /// and MAE can train it.
    fn tokens(&self) -> bool {
        false
    }
    /// The widths unless `--widths` (a ViT: its default shape's).
    fn default_widths(&self) -> Vec<usize>;
    /// Refuses `--widths` that cannot build this architecture.
    fn check_widths(&self, widths: &[usize]) -> Result<()>;
    /// A fresh network, seeded by `spec.seed`.
    fn init(&self, spec: &FreshSpec) -> Result<Fresh>;
    /// The metadata that records a fresh network's sizes where `widths` cannot (a ViT's
    /// shape), if any.
    fn shape_record(&self, _vit: &VitShape) -> Option<(&'static str, String)> {
        None
    }
    /// A fresh network of `net`'s architecture and sizes (tensors, load metadata), when
    /// `net` is one this architecture builds; an error when it is but its sizes cannot be
    /// made fresh (a pruned ViT).
    fn like(
        &self,
        _net: &dyn Net,
        _seed: u64,
    ) -> Option<Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)>> {
        None
    }
}

/// The fresh architecture named `name`, or the one line listing the names.
pub fn named(name: &str) -> Result<&'static dyn FreshArch> {
    crate::model::registry::FRESH
        .iter()
        .copied()
        .find(|a| a.name() == name)
        .ok_or_else(|| {
            anyhow!(
                "unknown architecture `{name}`: expected one of {}",
                names().join(", ")
            )
        })
}

/// The names of the architectures `memprune train` builds, in the registry's order.
pub fn names() -> Vec<&'static str> {
    crate::model::registry::FRESH
        .iter()
        .map(|a| a.name())
        .collect()
}

/// A fresh encoder of `like`'s architecture and sizes (ResNet9 or ViT), seeded by `seed`
/// as `memprune train` initialises: the random-init baseline of a trained model.
pub fn random_like(like: &Path, opts: &LoadOptions, seed: u64) -> Result<Encoder> {
    let enc = Encoder::load(like, opts)?;
    let name = PathBuf::from(format!(
        "<random-init like {}, seed {seed}>",
        like.display()
    ));
    let fresh = crate::model::registry::FRESH
        .iter()
        .find_map(|a| a.like(enc.arch.as_ref(), seed));
    let (tensors, meta) = match fresh {
        Some(made) => made.map_err(|e| anyhow!("{}: {e}", like.display()))?,
        None => bail!(
            "{}: --random-like makes ResNet9s and ViTs; this is {}",
            like.display(),
            enc.describe()
        ),
    };
    Encoder::from_checkpoint(Checkpoint::from_tensors(&name, tensors, meta), opts)
}
