//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod policy_case;
pub mod pth;
pub mod tensors;

use std::path::{Path, PathBuf};

/// A labelled in-memory set of `s`x`s` single-channel images, `pixels` image after image.
pub fn gray_set(pixels: Vec<u8>, labels: Vec<u32>, s: usize) -> memprune::data::ImageSet {
    image_set(1, s, s, pixels, Some(labels))
}

/// An in-memory set of `channels` x `h` x `w` images, `pixels` image after image.
pub fn image_set(
    channels: usize,
    h: usize,
    w: usize,
    pixels: Vec<u8>,
    labels: Option<Vec<u32>>,
) -> memprune::data::ImageSet {
    memprune::data::ImageSet {
        source: "tiny".into(),
        pixels,
        labels,
        class_names: None,
        channels,
        height: h,
        width: w,
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

/// One split of an MNIST-layout folder: `{prefix}-images-idx3-ubyte` (images of `h` x `w`,
/// one byte a pixel) and `{prefix}-labels-idx1-ubyte` in `d`.
pub fn write_idx_split(d: &Path, prefix: &str, (h, w): (usize, usize), px: &[u8], labels: &[u8]) {
    let count = labels.len() as u32;
    write_idx(
        &d.join(format!("{prefix}-images-idx3-ubyte")),
        0x803,
        &[count, h as u32, w as u32],
        px,
    );
    write_idx(
        &d.join(format!("{prefix}-labels-idx1-ubyte")),
        0x801,
        &[count],
        labels,
    );
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
        write_idx_split(&d, prefix, (8, 8), &px, &labels);
    }
    d
}

/// The repository root (where relative paths in the tests start).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Load options with `h` heads per block, and with `key` the state dict under that key.
pub fn vit_options(h: usize, key: Option<&str>) -> memprune::model::LoadOptions {
    memprune::model::LoadOptions {
        heads: Some(h),
        key: key.map(String::from),
        ..Default::default()
    }
}

/// A tiny training configuration for [`two_class_set`]'s images (mean 0.5, std 0.25): batch
/// 16, no warm-up, every point trained on, temperature 0.5, the framework's augmentation,
/// f32 on the CPU; the widths (and a ViT's shape) are the caller's to set.
pub fn tiny_train_config(
    arch: memprune::train::init::TrainArch,
    framework: memprune::train::Framework,
    optimizer: memprune::train::optim::OptimizerConfig,
    (epochs, lr, seed): (usize, f64, u64),
) -> memprune::train::TrainConfig {
    memprune::train::TrainConfig {
        arch,
        framework,
        widths: Vec::new(),
        epochs,
        batch: 16,
        lr,
        optimizer,
        warmup_epochs: 0.0,
        seed,
        split: memprune::train::split::SplitKind::All,
        split_seed: 0,
        temperature: 0.5,
        augment: framework.default_augment(),
        normalization: memprune::data::Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        },
        save_dtype: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        init_from: None,
        trainable: None,
        planted: None,
        vit: Default::default(),
    }
}

/// The training loss of the first of `steps` steps on `points` (epoch 0), and of the last.
pub fn first_and_last_loss(
    t: &mut memprune::train::Trainer,
    points: &[usize],
    steps: usize,
) -> (f64, f64) {
    let first = t.step(points, 0).unwrap();
    let last = (1..steps).fold(first, |_, _| t.step(points, 0).unwrap());
    (first, last)
}

/// A file of `assets/` (the embedded default's models and data).
pub fn asset(rel: &str) -> PathBuf {
    root().join("assets").join(rel)
}

/// A file of `tests/fixtures/` (`rel` as `vit/mae.pth`).
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// A checkpoint of `tests/fixtures/parity/`.
pub fn parity(name: &str) -> PathBuf {
    fixture("parity").join(name)
}

/// A checkpoint (or reference file) of `tests/fixtures/vit/`.
pub fn vit_fx(name: &str) -> PathBuf {
    fixture("vit").join(name)
}

/// A checkpoint of `tests/fixtures/layouts/`.
pub fn layouts_fx(name: &str) -> PathBuf {
    fixture("layouts").join(name)
}

/// The folder of the committed data fixtures (`tests/fixtures/data/`, made by
/// `data_fixtures.rs`).
pub fn data_fx() -> PathBuf {
    fixture("data")
}

/// Pixel (c, y, x) of image `k` of class `label` in the data fixtures: the formula their
/// generator (`data_fixtures.rs`) writes and the readers' tests expect.
pub fn fixture_pixel(label: usize, k: usize, c: usize, y: usize, x: usize) -> u8 {
    ((label * 31 + k * 17 + c * 50 + y * 8 + x) % 256) as u8
}

/// 40 images 1x8x8 in two classes (a bright top half or a bright left half), plus noise
/// drawn from `key`.
pub fn two_class_set(key: u64) -> memprune::data::ImageSet {
    let (n, s) = (40, 8);
    let mut pixels = vec![0u8; n * s * s];
    let mut labels = Vec::new();
    let mut r = memprune::data::rng::Rng::from_key(&[key]);
    for i in 0..n {
        let k = i % 2;
        labels.push(k as u32);
        for y in 0..s {
            for x in 0..s {
                let on = if k == 0 { y < 4 } else { x < 4 };
                let base = if on { 200 } else { 30 };
                pixels[i * s * s + y * s + x] =
                    (base + r.below(40) as i32 - 20).clamp(0, 255) as u8;
            }
        }
    }
    gray_set(pixels, labels, s)
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

/// Runs the memprune binary in the repository root with the environment variables `set`
/// and without those in `unset`.
pub fn memprune_env(args: &[&str], set: &[(&str, &str)], unset: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_memprune"));
    c.args(args).current_dir(root());
    for v in unset {
        c.env_remove(v);
    }
    for (k, v) in set {
        c.env(k, v);
    }
    c.output().unwrap()
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

/// `memprune measure ARGS --batch BATCH --json DIR/NAME -q` on `threads` threads (`args`
/// start with the metric): the JSON it wrote.
pub fn measure_json(
    dir: &Path,
    args: &[&str],
    threads: &str,
    batch: &str,
    name: &str,
) -> serde_json::Value {
    let out = dir.join(name);
    let mut all = vec!["measure"];
    all.extend_from_slice(args);
    all.extend(["--batch", batch, "--json", s(&out), "-q"]);
    ok(&memprune_threads(&all, threads));
    json(&out)
}

/// The arguments of `memprune measure unit` on the embedded 10,000-image Fashion-MNIST
/// folder, `points` points x `views` views, quiet, then `extra`.
pub fn fashion_unit<'a>(points: &'a str, views: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["measure", "unit", "--data", "assets/fashion-mnist"];
    v.extend(["--points", points, "--views", views, "-q"]);
    v.extend_from_slice(extra);
    v
}

/// The arguments of a small `memprune experiment prune` of `model` on `data`: 20 points x
/// 2 views, one draw, the modes `modes`, quiet.
pub fn small_prune<'a>(model: &'a str, data: &'a str, modes: &'a str) -> Vec<&'a str> {
    let mut v = vec!["experiment", "prune", model, "--data", data];
    v.extend(["--points", "20", "--views", "2", "--draws", "1"]);
    v.extend(["--modes", modes, "-q"]);
    v
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

/// An MNIST-layout folder of `n` (and `n / 2` test) images of `h` rows x `w` columns.
pub fn idx_folder(dir: &Path, name: &str, n: usize, h: usize, w: usize) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let px: Vec<u8> = (0..count * h * w).map(|i| (i * 37 % 251) as u8).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 2) as u8).collect();
        write_idx_split(&d, prefix, (h, w), &px, &labels);
    }
    d
}
