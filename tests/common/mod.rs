//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod pth;

use std::path::{Path, PathBuf};

/// A labelled in-memory set of `s`x`s` single-channel images, `pixels` image after image.
pub fn gray_set(pixels: Vec<u8>, labels: Vec<u32>, s: usize) -> memprune::data::ImageSet {
    memprune::data::ImageSet {
        source: "tiny".into(),
        pixels,
        labels: Some(labels),
        class_names: None,
        channels: 1,
        height: s,
        width: s,
        kind: memprune::data::DatasetKind::Unknown,
        names: Default::default(),
        notes: Vec::new(),
    }
}

pub fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    std::fs::write(path, b).unwrap();
}

/// An MNIST-layout folder: `n` training and `n / 2` test images of 8x8, two classes.
pub fn tiny_idx(dir: &Path, n: usize) -> PathBuf {
    let d = dir.join("tiny-idx");
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, count, key) in [("train", n, 1u64), ("t10k", n / 2, 2)] {
        let mut r = memprune::data::rng::Rng::from_key(&[key]);
        let mut px = Vec::new();
        let mut labels = Vec::new();
        for i in 0..count {
            let k = (i % 2) as u8;
            labels.push(k);
            for y in 0..8 {
                for x in 0..8 {
                    let on = if k == 0 { y < 4 } else { x < 4 };
                    px.push((if on { 180 } else { 40 }) + r.below(60) as u8);
                }
            }
        }
        write_idx(
            &d.join(format!("{prefix}-images-idx3-ubyte")),
            0x803,
            &[count as u32, 8, 8],
            &px,
        );
        write_idx(
            &d.join(format!("{prefix}-labels-idx1-ubyte")),
            0x801,
            &[count as u32],
            &labels,
        );
    }
    d
}

/// The repository root (where relative paths in the tests start).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A checkpoint of `tests/fixtures/parity/`.
pub fn parity(name: &str) -> PathBuf {
    root().join("tests/fixtures/parity").join(name)
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the memprune binary in the repository root with `threads` rayon threads.
pub fn memprune_threads(args: &[&str], threads: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_memprune"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .current_dir(root())
        .output()
        .unwrap()
}

/// Runs the memprune binary in the repository root, with backtraces on (candle then puts
/// its backtrace into its error messages: [`refused`] still wants one line).
pub fn memprune(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_memprune"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .current_dir(root())
        .output()
        .unwrap()
}

/// The run was refused as the README promises: exit code 1 and one line on stderr that
/// contains every needle.
pub fn refused(out: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not refused: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

/// Its stdout, after checking it succeeded.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "memprune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A copy of the parity fixture `fixture` written to `dir/name` after `edit` changed its
/// tensors (as stored: their own dtypes) and `metadata`.
pub fn edited(
    fixture: &str,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(
        &mut std::collections::BTreeMap<String, candle_core::Tensor>,
        &mut std::collections::BTreeMap<String, String>,
    ),
) -> PathBuf {
    let c = memprune::checkpoint::Checkpoint::load(&parity(fixture), None).unwrap();
    let (mut t, mut m) = (c.stored, c.metadata);
    edit(&mut t, &mut m);
    let p = dir.join(name);
    memprune::checkpoint::write_safetensors_atomic(&p, &t, &m, &[]).unwrap();
    p
}

/// Writes `body` as `dir/policy.yaml`, `MODEL` replaced by `model` and `OUT` by
/// `dir/out.safetensors`; returns the policy and the output paths.
pub fn write_policy(dir: &Path, body: &str, model: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("out.safetensors");
    let text = body
        .replace("MODEL", &model.display().to_string())
        .replace("OUT", &out.display().to_string());
    let p = dir.join("policy.yaml");
    std::fs::write(&p, text).unwrap();
    (p, out)
}
