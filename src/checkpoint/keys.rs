//! The keys memprune reads and writes in a checkpoint's metadata (the safetensors
//! `__metadata__` map): every one is here, so that a writer and its readers cannot spell one
//! differently. Values are strings, JSON where structured.

/// The prefix of every key.
pub const PREFIX: &str = "memprune.";

// Load metadata: what a network needs to load that its shapes cannot say.

/// A ViT's attention heads: one count, or one per block separated by commas (`6,6,5`),
/// written by `train` and on every rewrite.
pub const HEADS: &str = "memprune.heads";
/// MAE's decoder heads (a training checkpoint of `--framework mae`).
pub const DECODER_HEADS: &str = "memprune.decoder_heads";

// Training (`memprune train`): what decided the run, and where it stands.

/// The architecture trained (`resnet9`, `resnet18`, ..., `vit`).
pub const ARCH: &str = "memprune.arch";
/// The widths (JSON list) `train` records and compares on resume.
pub const WIDTHS: &str = "memprune.widths";
/// A fresh ViT's sizes (JSON of its training shape).
pub const VIT: &str = "memprune.vit";
pub const FRAMEWORK: &str = "memprune.framework";
/// The data's label (the path the user gave); also written by `embed`.
pub const DATA: &str = "memprune.data";
/// SHA-256 of the training set's geometry, pixels and labels.
pub const DATA_HASH: &str = "memprune.data_hash";
pub const DATA_POINTS: &str = "memprune.data_points";
pub const TRAIN_POINTS: &str = "memprune.train_points";
/// The f/g split (`shared+candidates`, `shared+independent` or `all`); also written by `embed`.
pub const SPLIT: &str = "memprune.split";
pub const SPLIT_SEED: &str = "memprune.split_seed";
pub const SEED: &str = "memprune.seed";
/// Epochs done.
pub const EPOCHS: &str = "memprune.epochs";
pub const EPOCHS_PLANNED: &str = "memprune.epochs_planned";
pub const BATCH: &str = "memprune.batch";
pub const LR: &str = "memprune.lr";
pub const OPTIMIZER: &str = "memprune.optimizer";
pub const OPTIMIZER_CONFIG: &str = "memprune.optimizer_config";
pub const OPTIMIZER_STEPS: &str = "memprune.optimizer_steps";
pub const WARMUP_EPOCHS: &str = "memprune.warmup_epochs";
pub const TEMPERATURE: &str = "memprune.temperature";
/// The training augmentation (JSON), the default of `measure` on this model.
pub const AUGMENT: &str = "memprune.augment";
pub const NORMALIZATION: &str = "memprune.normalization";
pub const FINAL_LOSS: &str = "memprune.final_loss";
pub const INIT_FROM: &str = "memprune.init_from";
/// The layers that train (JSON list of names); also written by a policy's `freeze`.
pub const TRAINABLE: &str = "memprune.trainable";
/// memprune's version; also written on every rewrite.
pub const VERSION: &str = "memprune.version";
/// f's candidate points (JSON list), in a `shared+candidates` run.
pub const CANDIDATES: &str = "memprune.candidates";
/// g's independent points (JSON list), in a `shared+independent` run.
pub const INDEPENDENT: &str = "memprune.independent";
/// Points known to be atypical (JSON list), planted to check a localization.
pub const PLANTED: &str = "memprune.planted";

// A policy's rewrite (`memprune policy`).

/// The policy's YAML text.
pub const POLICY: &str = "memprune.policy";
pub const POLICY_SHA256: &str = "memprune.policy_sha256";
/// The checkpoint the rewrite started from.
pub const SOURCE: &str = "memprune.source";
pub const PRUNE_MODE: &str = "memprune.prune_mode";
/// Units removed per coupling group (JSON).
pub const PRUNED: &str = "memprune.pruned";

// Embeddings (`memprune embed`).

/// The layer embedded.
pub const LAYER: &str = "memprune.layer";
/// Each point's file path (JSON list).
pub const NAMES: &str = "memprune.names";
/// The checkpoint embedded.
pub const CHECKPOINT: &str = "memprune.checkpoint";
/// The data-loading options the embedding was made with (JSON).
pub const DATA_OPTIONS: &str = "memprune.data_options";
