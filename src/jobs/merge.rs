//! The merge job (`memprune merge`): the partial results of one run's shards, checked and
//! merged into the run and state one run over all points gives.

use crate::shard::partial::{Partial, Run, State};
use anyhow::Result;
use std::path::PathBuf;

/// Every shard's partial result, once each.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    pub partials: Vec<PathBuf>,
}

/// The merged run: rendered as one run over all points ([`super::measure::render`]).
pub struct MergeResult {
    pub run: Run,
    pub state: State,
    /// The augmentation the shards' views were made with (one, the same `run`).
    pub augment: Option<crate::data::augment_choice::ChosenAugment>,
}

impl MergeRequest {
    pub fn run(&self) -> Result<MergeResult> {
        let parts = self
            .partials
            .iter()
            .map(|p| Ok((p.clone(), Partial::read(p)?)))
            .collect::<Result<Vec<_>>>()?;
        let (run, state) = crate::shard::merge(parts)?;
        let augment = crate::data::augment_choice::ChosenAugment::of_settings(&run.settings);
        Ok(MergeResult {
            run,
            state,
            augment,
        })
    }
}

impl MergeResult {
    pub fn render(&self) -> Result<super::Rendered> {
        super::measure::render(&self.run, &self.state)
    }
}
