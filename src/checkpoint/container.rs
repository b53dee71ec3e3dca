//! Checkpoint containers: where in a file the encoder's state dict is.
//!
//! PyTorch files: every dict of tensors at the top level or one level down is a candidate
//! ([`choose`] picks one; `--key` names one). Inside the chosen dict, or in a safetensors
//! file (flat by format), a container is a name prefix: a DINOv2 training checkpoint's
//! `model` dict holds `teacher.backbone.*` and `student.backbone.*`; names all under
//! `teacher.` / `student.` give the teacher, `--key student` the other.

use anyhow::{bail, Result};
use candle_core::Tensor;
use std::path::Path;

/// Tensors as a file holds them: (name in the file, tensor in its stored dtype). The readers
/// (safetensors in `checkpoint`, `.pth` in `pth`) return it; this module picks a container
/// out of it; neither reader is imported here, so imports go one way.
pub type RawTensors = Vec<(String, Tensor)>;

/// A dict of tensors in a PyTorch file: its top-level key (`None`: the top level itself)
/// and how many tensors it holds.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: Option<String>,
    pub tensors: usize,
}

/// Which candidate is the encoder's state dict, without `--key`: the top level when it holds
/// tensors (`torch.save(model.state_dict())`); else the only dict of tensors one level down
/// (Lightning's `state_dict`, MAE's `model`, ...); else `teacher` when there is one (DINO,
/// iBOT: the teacher is the encoder those papers evaluate; their `student` and loss centres
/// are dicts of tensors too); else an error listing the candidates.
pub fn choose(candidates: &[Candidate]) -> Result<usize> {
    if let Some(i) = candidates.iter().position(|c| c.key.is_none()) {
        return Ok(i);
    }
    if candidates.len() == 1 {
        return Ok(0);
    }
    if let Some(i) = candidates
        .iter()
        .position(|c| c.key.as_deref() == Some("teacher"))
    {
        return Ok(i);
    }
    let list: Vec<String> = candidates
        .iter()
        .map(|c| {
            format!(
                "`{}` ({} tensors)",
                c.key.as_deref().unwrap_or(""),
                c.tensors
            )
        })
        .collect();
    bail!(
        "{} dicts of tensors, {}: choose one with --key",
        candidates.len(),
        list.join(", ")
    )
}

const NAME_CONTAINERS: [&str; 2] = ["teacher", "student"];

/// The tensors under the name prefix `key.`, prefix removed; without a key, those under
/// `teacher.` when every name is under `teacher.` or `student.`, else all as they are.
pub fn select_key(raw: RawTensors, key: Option<&str>, path: &Path) -> Result<RawTensors> {
    let key = match key {
        Some(k) => k.to_string(),
        None => {
            let all_in_containers = raw.iter().all(|(n, _)| {
                NAME_CONTAINERS
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
    let mut firsts: Vec<&str> = raw
        .iter()
        .map(|(n, _)| n.split('.').next().unwrap_or(n))
        .collect();
    firsts.dedup();
    firsts.sort_unstable();
    firsts.dedup();
    let firsts = firsts
        .iter()
        .take(12)
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let v: RawTensors = raw
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(&pre).map(|s| (s.to_string(), t)))
        .collect();
    if v.is_empty() {
        bail!(
            "{}: no tensors under the key `{key}` (names `{key}.*`); the names start with {firsts}",
            path.display()
        );
    }
    Ok(v)
}
