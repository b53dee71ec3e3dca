//! memprune: find where self-supervised vision encoders memorize, and act on it.
//!
//! The modules follow the pipeline: [`data`] -> [`model`] -> metrics -> plan -> rewrite -> eval.

pub mod data;
pub mod model;
