//! The architecture `memprune train` builds from scratch: one of the fresh architectures
//! the families own ([`crate::model::registry::FRESH`]).

use crate::model::fresh::FreshArch;
use anyhow::Result;

pub use crate::model::fresh::random_like;
pub use crate::model::resnet9_init::{resnet9, PAPER_WIDTHS};

/// The architectures `memprune train` builds from scratch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TrainArch {
    /// The paper's ResNet9; `--widths` gives its 8 block widths.
    Resnet9,
    /// torchvision resnet18 (BasicBlock [2, 2, 2, 2]); `--widths` gives the 4 stage widths.
    Resnet18,
    /// torchvision resnet34 (BasicBlock [3, 4, 6, 3]).
    Resnet34,
    /// torchvision resnet50 (Bottleneck [3, 4, 6, 3], expansion 4).
    Resnet50,
    /// A ViT in timm's layout; sizes by --depth, --width, --heads, --mlp, --patch.
    Vit,
}

impl TrainArch {
    pub fn name(self) -> &'static str {
        match self {
            TrainArch::Resnet9 => "resnet9",
            TrainArch::Resnet18 => "resnet18",
            TrainArch::Resnet34 => "resnet34",
            TrainArch::Resnet50 => "resnet50",
            TrainArch::Vit => "vit",
        }
    }

    /// The family's fresh architecture of this name.
    pub fn fresh(self) -> &'static dyn FreshArch {
        crate::model::fresh::named(self.name()).expect("every TrainArch is in the registry")
    }

    /// The paper's ResNet9 widths, or torchvision's stage widths.
    pub fn default_widths(self) -> Vec<usize> {
        self.fresh().default_widths()
    }

    /// Checks `widths` for this architecture.
    pub fn check_widths(self, widths: &[usize]) -> Result<()> {
        self.fresh().check_widths(widths)
    }
}
