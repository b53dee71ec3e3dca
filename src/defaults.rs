//! The embedded default: data and encoders shipped in the repository, so that memprune's
//! main job runs on a fresh clone with no download; and the measurement settings every
//! command that measures starts from (`measure`, `report`, policies).

use std::path::{Path, PathBuf};

/// The environment variable naming a memprune repository whose `assets/` hold the default.
pub const HOME_VAR: &str = "MEMPRUNE_HOME";

/// `assets/REL` of the repository memprune runs in: the working directory or the nearest
/// folder above it holding memprune's `Cargo.toml` and `assets/` (relative to the working
/// directory when that is the repository's root, for short messages), else `$MEMPRUNE_HOME`.
/// Never the folder memprune was built in: an installed or moved binary would silently read
/// another checkout's files. When none has it, `assets/REL` (which does not exist: reading it
/// fails with [`missing`]'s line).
fn asset(rel: &str) -> PathBuf {
    let local = PathBuf::from("assets").join(rel);
    if local.exists() {
        return local;
    }
    let found = std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .find(|d| is_repository(d))
                .map(Path::to_path_buf)
        })
        .or_else(|| std::env::var_os(HOME_VAR).map(PathBuf::from));
    match found {
        Some(root) if root.join("assets").join(rel).exists() => root.join("assets").join(rel),
        _ => local,
    }
}

/// A clone of memprune's repository: its `Cargo.toml` names the package `memprune`.
fn is_repository(dir: &Path) -> bool {
    dir.join("assets").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "name = \"memprune\""))
}

/// When `path` is one of the embedded defaults and is not there, the line that says how to
/// get it (for "no such file" errors).
pub fn missing(path: &Path) -> Option<String> {
    if path.exists() || !path.starts_with("assets") {
        return None;
    }
    Some(format!(
        "{}: memprune's embedded default is not here: it lives in the assets/ folder of \
         memprune's repository; run memprune inside a clone of it (git clone the repository, \
         then `cargo install --path .` or `cargo run --release --`), set {HOME_VAR} to the \
         clone, or name your own checkpoint and --data",
        path.display()
    ))
}

/// The embedded memorization data set: the first 500 Fashion-MNIST training images with 10
/// MNIST digits planted among f's candidates, and 2,000 Fashion-MNIST test images.
pub fn data() -> PathBuf {
    asset("fashion-mnist-planted")
}

/// The larger embedded Fashion-MNIST subset (10,000 training and 2,000 test images).
pub fn data_10k() -> PathBuf {
    asset("fashion-mnist")
}

/// The embedded SimCLR ResNet9 `f`, trained on shared + candidates.
pub fn model_f() -> PathBuf {
    asset("models/resnet9-simclr-f.safetensors")
}

/// The embedded SimCLR ResNet9 `g`, trained on shared + independent: LayerMem's reference.
pub fn model_g() -> PathBuf {
    asset("models/resnet9-simclr-g.safetensors")
}

/// The embedded supervised ResNet9 of the same widths, for ClassMem/UnitMem comparisons.
pub fn model_supervised() -> PathBuf {
    asset("models/resnet9-supervised.safetensors")
}

/// The embedded downstream task: 1,000 MNIST training and 2,000 test digits, none of them
/// seen in pre-training (the fine-tuning experiment's transfer target).
pub fn downstream() -> PathBuf {
    asset("mnist")
}

/// K: augmented views per point (LayerMem: K view pairs).
pub const VIEWS: usize = 10;

/// The seed of the views, of random point draws and of the bootstrap.
pub const SEED: u64 = 0;

/// Views per forward pass (memory, not results).
pub const BATCH: usize = 256;

/// What a measuring batch's activations may take when `--batch` is left at [`BATCH`]: the
/// batch is lowered until the largest layer's outputs, times [`BATCH_TAP_COPIES`], fit in
/// this (or in half the memory available, if less), so that an ImageNet-size encoder at
/// 224x224 stays within about 2 GB resident.
pub const BATCH_MEMORY: u64 = 1 << 30;

/// Copies of the largest layer's outputs that a measuring forward holds at once, bounded
/// from above: a layer's input and output, the convolution's scratch (im2col or Winograd
/// tiles), the tap as the metric reads it (flattened, copied to f32 rows) and the
/// allocator's cached blocks of the last batch.
pub const BATCH_TAP_COPIES: u64 = 8;

/// UnitMem and ClassMem: at most this many of the encoder's own training points (else as
/// many random points).
pub const UNIT_POINTS: usize = 1000;

/// LayerMem: the first this many candidate points recorded in f (else as many random points).
pub const LAYER_CANDIDATES: usize = 100;

/// Table 6 (`experiment prune`): at most this many training points for UnitMem (the
/// paper's 5,000).
pub const TABLE6_POINTS: usize = 5000;

/// Table 6: random draws of the random strategy (the paper's 10).
pub const TABLE6_DRAWS: usize = 10;

/// The experiments' views per forward pass (memory, not results).
pub const EXPERIMENT_BATCH: usize = 250;
