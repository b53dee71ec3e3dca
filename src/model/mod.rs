//! Models: the encoders memprune reads, built from a checkpoint's names and shapes.
//! Each architecture family owns its file (and an `*_init` file that builds it fresh for
//! training); [`registry`] lists them.

pub mod act_floor;
pub mod batch_norm;
pub mod conv;
pub mod conv_bn;
pub mod coupling;
pub mod device;
pub mod encoder;
pub mod family;
pub mod fresh;
pub mod init;
mod init_draws;
pub mod options;
pub mod patch_encoder;
pub mod pool;
pub mod registry;
pub mod residual;
pub mod resnet;
pub mod resnet9;
pub mod resnet9_authors;
pub mod resnet9_init;
pub mod resnet_init;
pub mod vit;
pub mod vit_heads;
pub mod vit_init;
pub mod vit_ops;

pub use encoder::{Encoder, Layer, LayerKind, LoadOptions};
