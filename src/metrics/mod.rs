//! The memorization metrics of docs/METRICS.md: [`unit_mem`] (per unit, one encoder),
//! [`class_mem`] (its supervised counterpart) and [`layer_mem`] (per layer, two encoders).
//! Each is a streaming accumulator fed by [`crate::measure`]; none touches the model.

pub mod bootstrap;
pub mod class_mem;
pub mod exact_sum;
pub mod f64_bits;
pub mod layer_mem;
pub mod significance;
pub mod summary;
pub mod unit_control;
pub mod unit_control_summary;
pub mod unit_mem;

pub use summary::{LayerSummary, UnitScore};
