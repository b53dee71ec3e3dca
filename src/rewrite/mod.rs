//! The rewriter: applies a plan to a checkpoint and writes a new one. Tensors the plan does
//! not touch are copied bit for bit in their stored dtype; the input's metadata is kept.

pub mod prune;
pub mod write;

pub use prune::{prune_tensors, GroupCut, PruneMode};
pub use write::write_rewritten;
