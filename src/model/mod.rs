//! Models: the encoders memprune reads, built from a checkpoint's names and shapes.

pub mod conv;
