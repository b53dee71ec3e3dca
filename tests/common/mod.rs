//! Helpers shared by the integration tests.
#![allow(dead_code)]

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

/// Runs the memprune binary with `threads` rayon threads.
pub fn memprune_threads(args: &[&str], threads: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_memprune"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap()
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
