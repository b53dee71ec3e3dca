//! What MAE training needs of an encoder: a network of patch tokens that can encode a
//! subset of its patches. A family offers it through [`crate::model::family::Net::patch_encoder`]
//! (the ViT's file), so training never asks which family a network is.

use candle_core::Tensor;

/// A network of patch tokens (a ViT).
pub trait PatchEncoder {
    /// Token width.
    fn width(&self) -> usize;
    /// Patch side in pixels.
    fn patch(&self) -> usize;
    /// Patches per side of the image the position embedding was made for.
    fn grid(&self) -> usize;
    /// Tokens in front of the patches (class token, registers).
    fn prefix_tokens(&self) -> usize;
    /// The encoder pass over only the patches `keep` (N, K) u32 (indices into the grid,
    /// each image its own), with the prefix tokens: every token after the final norm,
    /// (N, P + K, D). Differentiable.
    fn encode_visible(&self, x: &Tensor, keep: &Tensor) -> candle_core::Result<Tensor>;
}

impl PatchEncoder for crate::model::vit::Vit {
    fn width(&self) -> usize {
        crate::model::vit::Vit::width(self)
    }

    fn patch(&self) -> usize {
        crate::model::vit::Vit::patch(self)
    }

    fn grid(&self) -> usize {
        crate::model::vit::Vit::grid(self)
    }

    fn prefix_tokens(&self) -> usize {
        crate::model::vit::Vit::prefix_tokens(self)
    }

    fn encode_visible(&self, x: &Tensor, keep: &Tensor) -> candle_core::Result<Tensor> {
        crate::model::vit::Vit::encode_visible(self, x, keep)
    }
}
