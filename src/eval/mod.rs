//! The evaluator: what a model costs ([`cost`]) and how well its features serve a linear
//! probe ([`probe`]).

pub mod cost;
pub mod experiment;
pub mod feature_cache;
pub mod probe;
