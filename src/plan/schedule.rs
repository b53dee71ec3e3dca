//! Iterative pruning: a policy's `schedule: {steps: K, recover: ...}` prunes in K steps,
//! re-measuring the criterion on the current (already pruned) model before each step and
//! recovering (feature distillation, [`crate::train::distill`]) between steps.
//!
//! The per-step rule is Torch-Pruning's linear schedule (`linear_scheduler`: after step s of
//! K the pruned share is `s / K` of the target) with memprune's rounding: where a prune
//! action removes `A` units of a layer in one step (`round(fraction x width)` of the
//! unpruned width, or `count`; for `scope: global`, of all the selected layers together),
//! step s removes `round(A s / K) - round(A (s - 1) / K)` of them (halves rounded up), so
//! the K steps remove exactly `A`, the same number as one step.

use crate::train::distill::DistillSettings;
use serde::{Deserialize, Serialize};

/// A policy's `schedule`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// K >= 1 steps (1: prune at once).
    pub steps: usize,
    /// The recovery after each step but the last (the last is followed by the policy's
    /// `recover` action, if any). Default: none between steps.
    #[serde(default)]
    pub recover: Option<DistillSettings>,
}

/// Which step of a schedule a plan makes, and the widths of the unpruned model's coupling
/// groups (in the order of the current model's groups, which keep their names and order).
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based.
    pub index: usize,
    pub of: usize,
    /// Units of every coupling group before the first step (empty: the current widths).
    pub original: Vec<usize>,
}

impl Step {
    /// Pruning at once.
    pub fn one() -> Step {
        Step {
            index: 1,
            of: 1,
            original: Vec::new(),
        }
    }

    /// `round(total s / K)`, halves up: what the first `s` of K steps remove together.
    pub fn cumulative(total: usize, s: usize, k: usize) -> usize {
        (2 * total * s + k) / (2 * k.max(1))
    }

    /// What this step removes of an action's one-step amount `total`.
    pub fn share(&self, total: usize) -> usize {
        Step::cumulative(total, self.index, self.of)
            - Step::cumulative(total, self.index - 1, self.of)
    }

    /// The unpruned width of group `g`, whose current width is `current`.
    pub fn original_width(&self, g: usize, current: usize) -> usize {
        self.original.get(g).copied().unwrap_or(current)
    }
}

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn the_steps_add_up_to_the_one_step_amount() {
        for total in 0..50 {
            for k in 1..6 {
                let sum: usize = (1..=k)
                    .map(|s| {
                        Step {
                            index: s,
                            of: k,
                            original: vec![],
                        }
                        .share(total)
                    })
                    .sum();
                assert_eq!(sum, total, "{total} in {k} steps");
            }
        }
        // 10 units in 3 steps: 3, 4, 3 (round(10/3) = 3, round(20/3) = 7).
        let s = |i| {
            Step {
                index: i,
                of: 3,
                original: vec![],
            }
            .share(10)
        };
        assert_eq!((s(1), s(2), s(3)), (3, 4, 3));
    }
}
