//! The partial result of one shard (`measure ... --shard I/N --partial FILE`) and the merge
//! of all N (`memprune merge`).
//!
//! A partial is one JSON object:
//!
//! ```text
//! format            "memprune-partial"
//! version           2 (this format; 2: per-layer act_u floors in unit/class states)
//! memprune_version  the version that measured it
//! shard             {"index": I, "count": N}
//! run               what the run is, the same in every shard: the metric, the --json
//!                   settings (model, data, split, points, views, seed, augmentation,
//!                   normalisation), the options that shape the output, the layer names, the
//!                   control's points, the planted points, and the SHA-256 digests of the
//!                   checkpoint (and reference) file and of the images and labels measured
//!                   (and of the control's split)
//! digest            SHA-256 (hex) of the JSON of everything above: a partial edited or
//!                   corrupted after it was written is refused (a check against accidents and
//!                   naive edits, not a signature: [`crate::shard::validate`] checks the contents anyway)
//! state             this shard's accumulator state, f64s as IEEE-754 bit patterns:
//!                   unit/class: {"train": ..., "unseen": ... or null}, the UnitMem (per unit
//!                   a max, its argmax, an exact sum; `median`: every value) or ClassMem (per
//!                   class and unit an exact sum, per class a count) accumulators;
//!                   layer: {"points": [...], "control": [...] or null}, SSLMem' and SSL_f,
//!                   SSL_g per point and layer
//! ```
//!
//! [`Partial::read`] checks the digest and every invariant of the partial's own run
//! ([`crate::shard::validate::check`]); [`crate::shard::merge()`] checks that the partials belong together (format, version, the same `run`,
//! the same shard count, every shard once, each holding exactly its points) and merges them;
//! sums are exact ([`crate::metrics::exact_sum`]), maxima take the smallest point on ties,
//! and LayerMem's points are concatenated in shard order (= the run's point order), so the
//! merged state equals one run's bit for bit.

use crate::data::ImageSet;
use crate::metrics::class_mem::ClassMemAccumulator;
use crate::metrics::layer_mem::{Control, Pairing, PointScores};
use crate::metrics::unit_mem::{Reduce, UnitMemAccumulator};
use crate::shard::Shard;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "memprune-partial";
/// 2: the `digest` field and each layer's act_u floor.
pub const VERSION: u32 = 2;

/// Which `measure` a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Unit,
    Class,
    Layer,
}

/// Everything about a run but its measurements: what every shard of it shares, and what its
/// printed output, CSV and JSON are made from besides the merged state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub metric: Metric,
    /// The settings object of the `--json` output (as one run over all points writes it).
    pub settings: serde_json::Value,
    /// The encoder as `Encoder::describe` names it, its path as given, the reference's.
    pub arch: String,
    pub model: String,
    pub reference: Option<String>,
    pub layers: Vec<String>,
    /// All the run's points, in measurement order.
    pub points: Vec<usize>,
    pub views: usize,
    pub seed: u64,
    pub reduce: Reduce,
    pub pairing: Pairing,
    /// LayerMem's per-point score (`--score`).
    #[serde(default)]
    pub score: crate::metrics::layer_mem::LayerScore,
    pub control: Control,
    /// The control's data (a source as `ImageSet::source`) and all its points.
    pub control_data: Option<String>,
    pub control_points: Option<Vec<usize>>,
    /// `measure layer --per-point`.
    pub per_point: bool,
    /// The planted points the checkpoint records.
    pub planted: Option<Vec<usize>>,
    /// SHA-256 (hex) of what was measured: `checkpoint`, `reference`, `data`, `control data`.
    /// Filled only for partials (hashing is not free on large data).
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
}

/// The measurements of a run (or of one shard of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "metric")]
pub enum State {
    Unit {
        train: UnitMemAccumulator,
        unseen: Option<UnitMemAccumulator>,
    },
    Class {
        train: ClassMemAccumulator,
        unseen: Option<ClassMemAccumulator>,
    },
    Layer {
        points: Vec<PointBits>,
        control: Option<Vec<PointBits>>,
    },
}

/// One point's LayerMem scores with exact f64s (see [`crate::metrics::f64_bits`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointBits {
    pub point: usize,
    #[serde(with = "crate::metrics::f64_bits::vec")]
    pub ssl_f: Vec<f64>,
    #[serde(with = "crate::metrics::f64_bits::vec")]
    pub ssl_g: Vec<f64>,
    #[serde(with = "crate::metrics::f64_bits::vec")]
    pub sslmem: Vec<f64>,
    #[serde(with = "crate::metrics::f64_bits::vec")]
    pub sslmem_first_half: Vec<f64>,
    #[serde(with = "crate::metrics::f64_bits::vec")]
    pub sslmem_second_half: Vec<f64>,
}

impl From<&PointScores> for PointBits {
    fn from(p: &PointScores) -> Self {
        PointBits {
            point: p.point,
            ssl_f: p.ssl_f.clone(),
            ssl_g: p.ssl_g.clone(),
            sslmem: p.sslmem.clone(),
            sslmem_first_half: p.sslmem_first_half.clone(),
            sslmem_second_half: p.sslmem_second_half.clone(),
        }
    }
}

impl From<&PointBits> for PointScores {
    fn from(p: &PointBits) -> Self {
        PointScores {
            point: p.point,
            ssl_f: p.ssl_f.clone(),
            ssl_g: p.ssl_g.clone(),
            sslmem: p.sslmem.clone(),
            sslmem_first_half: p.sslmem_first_half.clone(),
            sslmem_second_half: p.sslmem_second_half.clone(),
        }
    }
}

/// Converts scores for a [`State::Layer`].
pub fn to_bits(v: &[PointScores]) -> Vec<PointBits> {
    v.iter().map(PointBits::from).collect()
}

/// The scores of a [`State::Layer`].
pub fn from_bits(v: &[PointBits]) -> Vec<PointScores> {
    v.iter().map(PointScores::from).collect()
}

/// One shard's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub format: String,
    pub version: u32,
    pub memprune_version: String,
    pub shard: Shard,
    pub run: Run,
    pub state: State,
    /// See the module docs.
    pub digest: String,
}

impl Partial {
    pub fn new(shard: Shard, run: Run, state: State) -> Partial {
        let mut p = Partial {
            format: FORMAT.into(),
            version: VERSION,
            memprune_version: env!("CARGO_PKG_VERSION").into(),
            shard,
            run,
            state,
            digest: String::new(),
        };
        p.seal();
        p
    }

    /// SHA-256 (hex) of the JSON of everything but the digest.
    pub fn content_digest(&self) -> String {
        let body = serde_json::to_vec(&(
            &self.format,
            self.version,
            &self.memprune_version,
            &self.shard,
            &self.run,
            &self.state,
        ))
        .expect("a partial serialises");
        hex(&Sha256::digest(body))
    }

    /// Sets the digest to that of the contents.
    pub fn seal(&mut self) {
        self.digest = self.content_digest();
    }

    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

/// SHA-256 (hex) of a file's bytes.
pub fn digest_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 (hex) of an image set as measured: its shape, pixels and labels.
pub fn digest_images(set: &ImageSet) -> String {
    let mut h = Sha256::new();
    for d in [set.len(), set.channels, set.height, set.width] {
        h.update((d as u64).to_le_bytes());
    }
    h.update(&set.pixels);
    match &set.labels {
        Some(l) => {
            h.update([1u8]);
            l.iter().for_each(|x| h.update(x.to_le_bytes()));
        }
        None => h.update([0u8]),
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
