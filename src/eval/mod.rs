//! The evaluator: what a model costs ([`cost`]), how well its features serve a linear probe
//! ([`probe`]), and those features written for other tools ([`embed`]).

pub mod cost;
pub mod embed;
pub mod experiment;
pub mod feature_cache;
pub mod probe;
