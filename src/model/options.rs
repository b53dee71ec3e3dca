//! Options for reading an encoder from a checkpoint (every family reads the ones it needs).

/// The ResNet stem (torchvision's ImageNet stem or the CIFAR stem); see the ResNet family.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 7x7 stride-2 conv, then 3x3 stride-2 max-pool (torchvision).
    Imagenet,
    /// 3x3 stride-1 conv, no max-pool (solo-learn, lightly and most CIFAR code).
    Cifar,
}

/// Which tokens of a ViT sub-layer output make its LayerMem representation.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tokens {
    /// Every token (class, registers, patches), flattened: the authors' LayerMem script.
    #[default]
    All,
    /// The class token only: the authors' intermediate-layer extractor.
    Cls,
}

/// A ViT's representation (`pool`), as timm's `global_pool`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VitPool {
    /// The class token after `norm` (timm's `global_pool='token'`; MAE's linear probe).
    Cls,
    /// The mean of the patch tokens after `norm`, then `fc_norm` if the checkpoint has one
    /// (timm's `global_pool='avg'`; MAE's fine-tuning).
    Avg,
}

/// Options for reading an encoder.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The one prefix to strip from tensor names (default: the usual wrapper prefixes).
    pub prefix: Option<String>,
    /// The container key holding the state dict (`teacher`, `student`; see
    /// [`crate::checkpoint::container`]). Default: the usual keys, the teacher of a DINO checkpoint.
    pub key: Option<String>,
    /// Override the ResNet stem detection.
    pub stem: Option<Stem>,
    /// ViT attention heads (default: memprune's metadata, else the table of published ViTs,
    /// else a guess; see [`crate::model::vit_heads`]).
    pub heads: Option<usize>,
    /// ViT: the tokens of the attention and MLP sub-layer outputs that `forward_taps` returns.
    pub tokens: Tokens,
    /// ViT: only the attention and MLP sub-layer outputs (and `pool`) as layers, what
    /// LayerMem compares (the paper's "attention" and "FC" rows, so that dLayerMem steps
    /// from one sub-layer to the next); `measure layer` sets it.
    pub sub_layers_only: bool,
    /// ViT: the representation; default the checkpoint's own (`avg` with `fc_norm`, else
    /// `cls`).
    pub pool: Option<VitPool>,
}
