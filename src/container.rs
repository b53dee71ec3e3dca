//! Checkpoint containers: where in a file the encoder's state dict is.
//!
//! PyTorch files: the top-level dict itself, or the dict under `state_dict` (Lightning),
//! `model` (MAE, DeiT), `model_state_dict`, `teacher` (DINO, DINOv2, iBOT: the teacher is
//! the encoder those papers evaluate), in that order; `--key` picks one (`--key student`).
//! Safetensors files are flat: a container is names under `teacher.` / `student.`; without
//! a key, a file holding only such names gives the teacher.

use anyhow::{bail, Result};
use candle_core::Tensor;
use std::path::Path;

/// Tensors as a file holds them: (name in the file, tensor in its stored dtype). The readers
/// (safetensors in `checkpoint`, `.pth` in `pth`) return it; this module picks a container
/// out of it; neither reader is imported here, so imports go one way.
pub type RawTensors = Vec<(String, Tensor)>;

/// Keys of a `.pth` tried in order when no `--key` is given.
pub const PTH_KEYS: [Option<&str>; 5] = [
    None,
    Some("state_dict"),
    Some("model"),
    Some("model_state_dict"),
    Some("teacher"),
];

const SAFETENSORS_CONTAINERS: [&str; 2] = ["teacher", "student"];

/// The tensors of a flat (safetensors) file under `key.`, prefix removed.
pub fn select_key(raw: RawTensors, key: Option<&str>, path: &Path) -> Result<RawTensors> {
    let key = match key {
        Some(k) => k.to_string(),
        None => {
            let all_in_containers = raw.iter().all(|(n, _)| {
                SAFETENSORS_CONTAINERS
                    .iter()
                    .any(|c| n.starts_with(&format!("{c}.")))
            });
            if !all_in_containers || raw.is_empty() {
                return Ok(raw);
            }
            "teacher".to_string()
        }
    };
    let pre = format!("{key}.");
    let v: RawTensors = raw
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(&pre).map(|s| (s.to_string(), t)))
        .collect();
    if v.is_empty() {
        bail!(
            "{}: no tensors under the key `{key}` (names `{key}.*`)",
            path.display()
        );
    }
    Ok(v)
}
