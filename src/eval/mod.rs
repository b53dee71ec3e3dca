//! The evaluator: what a model costs ([`cost`]), how well its features serve a linear
//! probe ([`probe`]) and a kNN classifier ([`knn`]), how well it fine-tunes on a
//! downstream task ([`finetune`]), and those features written for other tools ([`embed`]).

pub mod cost;
pub mod embed;
pub mod experiment;
pub mod feature_cache;
pub mod finetune;
pub mod finetune_experiment;
pub mod knn;
pub mod policy_report;
pub mod probe;
