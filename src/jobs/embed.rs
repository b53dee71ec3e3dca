//! `memprune embed`: an encoder's features of every point of a split, encoded as the files
//! to write: one request ([`EmbedRequest`]), one result ([`EmbedResult`]).

use crate::checkpoint::keys;
use crate::data::options::{data_line, DataOptions};
use crate::data::{self, Normalization, Split};
use crate::eval::embed;
use crate::model::{Encoder, LoadOptions};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An embedding as asked.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    /// Default: the embedded encoder f.
    pub checkpoint: Option<PathBuf>,
    pub load: LoadOptions,
    /// Default: the embedded Fashion-MNIST subset.
    pub data: Option<PathBuf>,
    /// Every point of this split is embedded, in order.
    pub split: Split,
    pub read: DataOptions,
    /// FILE.safetensors, or FILE.npy with its indices and labels beside it.
    pub out: PathBuf,
    /// A layer's act_u per unit instead of the pooled representation.
    pub layer: Option<String>,
    /// Images per forward pass (memory only).
    pub batch: usize,
    /// Per-channel normalisation overriding the data set's usual one.
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
}

impl EmbedRequest {
    /// Images per forward pass unless told.
    pub const DEFAULT_BATCH: usize = 500;

    /// The pooled features of every training point of the default data, into `out`.
    pub fn new(out: PathBuf) -> EmbedRequest {
        EmbedRequest {
            checkpoint: None,
            load: LoadOptions::default(),
            data: None,
            split: Split::Train,
            read: DataOptions::default(),
            out,
            layer: None,
            batch: Self::DEFAULT_BATCH,
            mean: None,
            std: None,
        }
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.checkpoint
            .clone()
            .unwrap_or_else(crate::defaults::model_f)
    }

    pub fn data_path(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(crate::defaults::data)
    }

    /// Checks the numbers and registers what the run reads and the files it writes.
    pub fn register(&self, set: &mut crate::output::OutputSet) -> Result<()> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        set.input(&self.checkpoint_path(), "the checkpoint");
        set.input(&self.data_path(), "the data");
        for f in embed::output_files(&self.out)? {
            set.output(&f, "--out")?;
        }
        Ok(())
    }

    /// Embeds and encodes; writes nothing (the caller stages [`EmbedResult::files`]).
    pub fn run(&self) -> Result<EmbedResult> {
        let path = self.checkpoint_path();
        let data_path = self.data_path();
        let enc = Encoder::load(&path, &self.load)?;
        let set = data::open::open_with(&data_path, self.split, &self.read.for_encoder(&enc))?;
        let normalization = Normalization::default_for(set.kind, set.channels).overridden(
            self.mean.as_deref(),
            self.std.as_deref(),
            set.channels,
        )?;
        let settings = crate::eval::probe::ProbeSettings {
            batch: self.batch,
            normalization: Some(normalization),
            ..Default::default()
        };
        let e = embed::embed(&enc, &set, self.layer.as_deref(), &settings)?;
        let split = format!("{:?}", self.split).to_lowercase();
        let custom = self.mean.is_some() || self.std.is_some();
        let data_line = settings
            .normalization
            .as_ref()
            .map(|n| data_line(&set, &split, n, custom));
        let meta = BTreeMap::from([
            (keys::CHECKPOINT.to_string(), path.display().to_string()),
            (keys::DATA.to_string(), data_path.display().to_string()),
            (
                keys::DATA_OPTIONS.to_string(),
                self.read.to_json().to_string(),
            ),
            (keys::SPLIT.to_string(), split.clone()),
            (
                keys::VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]);
        let files = embed::encode(&e, &self.out, &meta)?;
        let dims = e.features.dims();
        Ok(EmbedResult {
            checkpoint: path,
            data: data_path,
            split,
            data_line,
            layer: e.layer.clone(),
            points: dims[0],
            values: dims[1..].iter().product(),
            labelled: e.labels.is_some(),
            files,
        })
    }
}

/// What an embedding made.
#[derive(Debug, Clone)]
pub struct EmbedResult {
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub split: String,
    /// The data line (geometry and normalisation).
    pub data_line: Option<String>,
    /// The layer embedded (`pool` by default).
    pub layer: String,
    pub points: usize,
    /// Values per point.
    pub values: usize,
    /// Whether the data has labels.
    pub labelled: bool,
    /// Each file to write, with its bytes.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}
