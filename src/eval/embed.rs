//! Features for other tools (`memprune embed`): for every point of a split, the encoder's
//! pooled features, exactly what the linear probe reads ([`probe::encoder_features`]), or
//! one layer's act_u per unit ([`probe::encoder_unit_acts`]); with the point indices and
//! labels.
//!
//! Files, by the output's extension:
//! - `.safetensors`: tensors `features` (f32, N x d), `indices` (i64, N), `labels` (i64, N;
//!   absent when the data has none), and metadata `memprune.layer`, `memprune.checkpoint`,
//!   `memprune.data`, `memprune.split`, `memprune.names` (JSON list: each point's file path
//!   relative to the data root for image folders, `FILE#RECORD` for IDX/CIFAR).
//! - `.npy`: `FILE` holds the features; `STEM.indices.npy` and `STEM.labels.npy` beside it
//!   the indices and labels (`numpy.load` reads each; the labels file only when the data
//!   has labels), and `STEM.names.txt` the points' names, one a line.

use crate::checkpoint::keys;
use crate::data::ImageSet;
use crate::eval::probe::{self, ProbeSettings};
use crate::model::Encoder;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The features of every point of a split.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The layer the features are from (`pool` for the representation).
    pub layer: String,
    /// (N, d) f32, row i for point `indices[i]`.
    pub features: Tensor,
    pub indices: Vec<i64>,
    pub labels: Option<Vec<i64>>,
    /// Point `indices[i]`'s name ([`ImageSet::point_name`]).
    pub names: Vec<String>,
}

/// Embeds every point of `set`: the representation (`layer` None or the last layer, whose
/// features are the probe's) or the act_u of the named layer's units.
pub fn embed(
    encoder: &Encoder,
    set: &ImageSet,
    layer: Option<&str>,
    settings: &ProbeSettings,
) -> Result<Embedding> {
    let last = encoder.layers.len().saturating_sub(1);
    let at = match layer {
        None => last,
        Some(name) => encoder
            .layers
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = encoder.layers.iter().map(|l| l.name.as_str()).collect();
                anyhow::anyhow!(
                    "--layer {name}: {} has no such layer; its layers: {}",
                    encoder.checkpoint.path.display(),
                    names.join(", ")
                )
            })?,
    };
    let features = if at == last {
        probe::encoder_features(encoder, set, settings)?
    } else {
        probe::encoder_unit_acts(encoder, set, settings, at)?
    };
    Ok(Embedding {
        layer: encoder.layers[at].name.clone(),
        features,
        indices: (0..set.len() as i64).collect(),
        labels: set
            .labels
            .as_ref()
            .map(|l| l.iter().map(|&v| v as i64).collect()),
        names: (0..set.len()).map(|i| set.point_name(i)).collect(),
    })
}

/// The files `out` stands for, in order: features, indices, labels (the labels' path also
/// when the data has none: it is checked and not written), names.
pub fn output_files(out: &Path) -> Result<Vec<PathBuf>> {
    match out.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(vec![out.to_path_buf()]),
        Some("npy") => {
            let stem = out.with_extension("");
            let beside = |what: &str| {
                let mut s = stem.clone().into_os_string();
                s.push(format!(".{what}"));
                PathBuf::from(s)
            };
            Ok(vec![
                out.to_path_buf(),
                beside("indices.npy"),
                beside("labels.npy"),
                beside("names.txt"),
            ])
        }
        _ => bail!("{}: --out must end in .npy or .safetensors", out.display()),
    }
}

/// The bytes of each file of [`output_files`] that has something to hold.
pub fn encode(
    e: &Embedding,
    out: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let files = output_files(out)?;
    let n = e.indices.len();
    let features = e.features.to_dtype(DType::F32)?.contiguous()?;
    if files.len() == 1 {
        let mut t = BTreeMap::from([
            ("features".to_string(), features),
            (
                "indices".to_string(),
                Tensor::from_slice(&e.indices, n, &Device::Cpu)?,
            ),
        ]);
        if let Some(l) = &e.labels {
            t.insert(
                "labels".to_string(),
                Tensor::from_slice(l, n, &Device::Cpu)?,
            );
        }
        let mut meta = metadata.clone();
        meta.insert(keys::LAYER.into(), e.layer.clone());
        meta.insert(keys::NAMES.into(), serde_json::to_string(&e.names)?);
        let bytes = crate::checkpoint::safetensors_bytes(&t, &meta)?;
        return Ok(vec![(files[0].clone(), bytes)]);
    }
    let dims = features.dims().to_vec();
    let values: Vec<f32> = features.flatten_all()?.to_vec1()?;
    let mut v = vec![
        (
            files[0].clone(),
            crate::data::npy::npy_bytes_f32(&dims, &values)?,
        ),
        (
            files[1].clone(),
            crate::data::npy::npy_bytes_i64(&[n], &e.indices)?,
        ),
    ];
    if let Some(l) = &e.labels {
        v.push((files[2].clone(), crate::data::npy::npy_bytes_i64(&[n], l)?));
    }
    let mut names = e.names.join("\n");
    names.push('\n');
    v.push((files[3].clone(), names.into_bytes()));
    Ok(v)
}
