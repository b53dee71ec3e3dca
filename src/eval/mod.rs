//! The evaluator: what a model costs ([`cost`]).

pub mod cost;
