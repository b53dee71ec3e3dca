//! The authors' ResNet9 (Wang et al. 2024, their `resnet9model.py`), read as it is:
//! `prep`, `layer1_head`, `layer1_residual1`, `layer1_residual2`, `layer2`, `layer3_head`,
//! `layer3_residual1`, `layer3_residual2`, each `{conv (with bias), batch, relu}` and a 2x2
//! max-pool after `prep`, `layer1_head`, `layer2` and `layer3_head`; the residual sums
//! `layer1_sum` = layer1_residual2 + layer1_head and `layer3_sum` = layer3_residual2 +
//! layer3_head; then their classifier's `MaxPool2d(2)` and `Flatten` (the representation,
//! `pool`; 256 features at 32x32) before `classifier.2` (Linear, kept as a head).
//!
//! Taps, in forward order: the eight modules' outputs (after ReLU and pool, as
//! `IntermediateLayerGetter` returns them), `layer1_sum` after `layer1_residual2`,
//! `layer3_sum` after `layer3_residual2`, and `pool`. A rewrite keeps every tensor name.
//! It is memprune's ResNet9 network ([`crate::model::resnet9`]) with this [`Layout`].

use crate::checkpoint::Checkpoint;
use crate::model::family::{Family, Net};
use crate::model::resnet9::{Layout, ResNet9};
use anyhow::Result;

pub static AUTHORS: Layout = Layout {
    id: "resnet9-authors",
    blocks: [
        "prep",
        "layer1_head",
        "layer1_residual1",
        "layer1_residual2",
        "layer2",
        "layer3_head",
        "layer3_residual1",
        "layer3_residual2",
    ],
    bn: "batch",
    conv_bias: true,
    pooled: &[1, 2, 5, 6],
    sums: ["layer1_sum", "layer3_sum"],
    final_max_pool: true,
};

/// Detected by `prep.conv.weight` and `layer3_residual2.batch.weight`.
pub struct AuthorsResNet9Family;

impl Family for AuthorsResNet9Family {
    fn matches(&self, ckpt: &Checkpoint) -> bool {
        ckpt.contains("prep.conv.weight") && ckpt.contains("layer3_residual2.batch.weight")
    }

    fn load(&self, ckpt: &Checkpoint, _opts: &crate::model::LoadOptions) -> Result<Box<dyn Net>> {
        Ok(Box::new(ResNet9::load_layout(ckpt, &AUTHORS)?))
    }

    fn expects(&self) -> &'static str {
        "the authors' ResNet9 (`prep.conv.weight`, `layer1_head` .. `layer3_residual2`, `.batch`)"
    }
}
