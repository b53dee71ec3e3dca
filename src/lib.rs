//! memprune: find where self-supervised vision encoders memorize, and act on it.
//!
//! The modules follow the pipeline: [`data`] -> [`model`] -> [`metrics`] (driven by
//! [`measure`]) -> [`plan`] -> [`rewrite`] -> eval, with [`report`] for output. [`checkpoint`] reads
//! and writes the files, [`defaults`] names the embedded model and data;
//! [`block_cache`] is the binary's allocator (reuses activation-sized blocks); [`shard`] splits a measurement
//! into parts that merge exactly.

pub mod block_cache;
pub mod checkpoint;
pub mod choice;
pub mod data;
pub mod defaults;
pub mod eval;
pub mod input;
pub mod interrupt;
pub mod jobs;
pub mod measure;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plan;
pub mod progress;
pub mod report;
pub mod rewrite;
pub mod shard;
pub mod train;
