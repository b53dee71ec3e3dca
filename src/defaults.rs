//! The embedded default: data and encoders shipped in the repository, so that memprune's
//! main job runs on a fresh clone with no download; and the measurement settings every
//! command that measures starts from (`measure`, `report`, policies).

use std::path::PathBuf;

/// `assets/REL` relative to the working directory when run from the repository (shorter in
/// messages), else under the directory memprune was built from.
fn asset(rel: &str) -> PathBuf {
    let local = PathBuf::from("assets").join(rel);
    if local.exists() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(rel)
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

/// UnitMem and ClassMem: at most this many of the encoder's own training points (else as
/// many random points).
pub const UNIT_POINTS: usize = 1000;

/// LayerMem: the first this many candidate points recorded in f (else as many random points).
pub const LAYER_CANDIDATES: usize = 100;
