//! Writing a rewritten checkpoint: stored names and dtypes, the input's metadata plus
//! memprune's, atomically, never over an input.

use crate::checkpoint::keys;
use crate::checkpoint::{write_safetensors_atomic, Checkpoint};
use anyhow::Result;
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `tensors` (keyed by stripped name) under the names they had in `input`'s file, with
/// `input`'s metadata updated by `extra`.
pub fn write_rewritten(
    out: &Path,
    input: &Checkpoint,
    tensors: &BTreeMap<String, Tensor>,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let named: BTreeMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| {
            (
                input
                    .stored_names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| k.clone()),
                t.clone(),
            )
        })
        .collect();
    let mut meta = input.metadata.clone();
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    meta.insert(keys::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    write_safetensors_atomic(out, &named, &meta, &[input.path.as_path()])
}
