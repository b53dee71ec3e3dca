//! The job layer: for each command one request (its defaults and its checks, in
//! one place, no command-line parsing) and one result (what the table, the JSON and the
//! CSV print). The command line, policies, the report, both experiments and `merge` all go
//! through these, so one measurement has one implementation.
//!
//! - [`measure`]: what `measure unit|class|layer` share: [`measure::MeasureRequest`] (model,
//!   data, points, views, seed, control, shard) -> [`measure::Prepared`] (the loaded encoder,
//!   data, points and view settings) -> [`measure::Measured`] (a run and its accumulators,
//!   written whole or as a shard's partial result).
//! - [`unit_mem`]: [`unit_mem::UnitMemRequest`] (UnitMem or ClassMem) ->
//!   [`unit_mem::UnitMemResult`].
//! - [`layer_mem`]: [`layer_mem::LayerMemRequest`] (reference, pairing, control, score) ->
//!   [`layer_mem::LayerMemResult`], and the one LayerMem computation with its control that
//!   policies, the report and Table 5 use ([`layer_mem::with_control`]).
//! - [`merge`]: the partial results of a run's shards -> the result one run would give.
//!
//! - [`train`], [`probe`], [`embed`], [`inspect`], [`finetune`]: the other commands' requests
//!   and results.
//!
//! - [`policy`] (with [`policy_steps`]): a policy file -> measure, plan, rewrite (in steps,
//!   with recovery), evaluate before and after -> [`crate::eval::policy_report::PolicyReport`].
//!
//! Table 6 is [`crate::eval::experiment`].

pub mod embed;
pub mod finetune;
pub mod inspect;
pub mod layer_mem;
pub mod measure;
pub mod merge;
pub mod policy;
pub mod policy_steps;
pub mod probe;
pub mod train;
pub mod unit_mem;

/// What a result prints and writes: the text for the terminal, the CSV and the JSON.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub csv: String,
    pub json: String,
}
