//! Probe features of an unchanged model, cached on disk: evaluating many rewrites of one
//! model computes its features once.
//!
//! The key is the SHA-256 of the checkpoint file, the data's pixels and labels, and the
//! probe's normalisation; a cache file is plain safetensors (`features`), written atomically.

use crate::data::ImageSet;
use crate::eval::probe::{encoder_features, ProbeSettings};
use crate::model::Encoder;
use anyhow::Result;
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn key(enc: &Encoder, set: &ImageSet, settings: &ProbeSettings) -> Result<String> {
    let mut h = Sha256::new();
    h.update(std::fs::read(&enc.checkpoint.path)?);
    h.update(crate::train::data_hash(set).as_bytes());
    h.update(serde_json::to_string(&settings.normalization)?.as_bytes());
    Ok(format!("{:x}", h.finalize())[..24].to_string())
}

/// The features of every image of `set`, from `dir` when cached there, else computed and
/// stored there.
pub fn features(
    enc: &Encoder,
    set: &ImageSet,
    settings: &ProbeSettings,
    dir: &Path,
) -> Result<Tensor> {
    let path: PathBuf = dir.join(format!("features-{}.safetensors", key(enc, set, settings)?));
    if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu) {
        if let Some(f) = t
            .get("features")
            .filter(|f| f.dims().first() == Some(&set.len()))
        {
            return Ok(f.clone());
        }
    }
    let f = encoder_features(enc, set, settings)?;
    std::fs::create_dir_all(dir)?;
    let map = std::collections::BTreeMap::from([("features".to_string(), f.clone())]);
    crate::checkpoint::write_safetensors_atomic(
        &path,
        &map,
        &Default::default(),
        &[enc.checkpoint.path.as_path()],
    )?;
    Ok(f)
}
