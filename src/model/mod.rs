//! Models: the encoders memprune reads, built from a checkpoint's names and shapes.

pub mod batch_norm;
pub mod conv;
pub mod pool;
