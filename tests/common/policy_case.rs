//! A policy run on a copy of the parity ResNet9 and the embedded Fashion-MNIST data in a
//! temporary folder: the case the output and input-limit tests edit.

use super::{parity, root, s};
use std::path::{Path, PathBuf};

pub const POLICY: &str = "model: MODEL\ndata: {path: DATA, points: 8INDICES}\nmetrics: {views: 2}\nactions:\n  - prune: {criterion: unitmem, end: low, fraction: 0.25, mode: remove}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: CKPT, json: JSON}\n";

pub struct Case {
    pub dir: tempfile::TempDir,
    pub policy: PathBuf,
    pub model: PathBuf,
    pub data: PathBuf,
    pub indices: PathBuf,
}

pub fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    std::fs::copy(parity("resnet9_c1.safetensors"), &model).unwrap();
    let data = root().join("assets/fashion-mnist");
    let indices = dir.path().join("indices.txt");
    std::fs::write(&indices, "0\n1\n2\n3\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    Case {
        dir,
        policy,
        model,
        data,
        indices,
    }
}

pub fn write_policy(c: &Case, ckpt: &Path, json: &Path, with_indices: bool) {
    let text = POLICY
        .replace("MODEL", s(&c.model))
        .replace("DATA", s(&c.data))
        .replace(
            "8INDICES",
            &if with_indices {
                format!("null, indices: {}", s(&c.indices))
            } else {
                "8".into()
            },
        )
        .replace("CKPT", s(ckpt))
        .replace("JSON", s(json));
    std::fs::write(&c.policy, text).unwrap();
}
