//! Evaluation of encoders: the linear probe.

pub mod probe;
