//! The paper's split of a training set for LayerMem: 80 % shared, 10 % candidates, 10 %
//! independent. `f` trains on shared + candidates, `g` on shared + independent, and LayerMem
//! scores the candidates (points `f` saw and `g` did not).

use crate::data::rng::Rng;
use serde::{Deserialize, Serialize};

const SPLIT_TAG: u64 = 0x5350_4C49_5446_4721; // "SPLITFG!"

/// Which part of the split a model trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum SplitKind {
    /// Every training point.
    #[value(name = "all")]
    #[serde(rename = "all")]
    All,
    /// Shared + candidates: LayerMem's model f.
    #[value(name = "shared+candidates")]
    #[serde(rename = "shared+candidates")]
    SharedCandidates,
    /// Shared + independent: LayerMem's reference g.
    #[value(name = "shared+independent")]
    #[serde(rename = "shared+independent")]
    SharedIndependent,
}

impl SplitKind {
    /// The name stored in `memprune.split`.
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::All => "all",
            SplitKind::SharedCandidates => "shared+candidates",
            SplitKind::SharedIndependent => "shared+independent",
        }
    }

    pub fn from_name(s: &str) -> Option<SplitKind> {
        crate::choice::parse(s).ok()
    }
}

impl crate::choice::Choice for SplitKind {
    const WHAT: &'static str = "split";
    const ALL: &'static [Self] = &[
        SplitKind::All,
        SplitKind::SharedCandidates,
        SplitKind::SharedIndependent,
    ];
    fn name(self) -> &'static str {
        SplitKind::name(self)
    }
    fn about(self) -> &'static str {
        match self {
            SplitKind::All => "Every training point",
            SplitKind::SharedCandidates => "Shared + candidates: LayerMem's model f",
            SplitKind::SharedIndependent => "Shared + independent: LayerMem's reference g",
        }
    }
}
crate::named_choice!(SplitKind);

/// Disjoint index sets covering `0..n`, each sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSplit {
    pub shared: Vec<usize>,
    pub candidates: Vec<usize>,
    pub independent: Vec<usize>,
}

/// Splits `0..n` at random (seeded by `seed` alone): `n / 10` candidates, `n / 10`
/// independent points (rounded down), the rest shared.
pub fn split(n: usize, seed: u64) -> DataSplit {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = Rng::from_key(&[SPLIT_TAG, seed]);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let k = n / 10;
    let mut candidates = perm[..k].to_vec();
    let mut independent = perm[k..2 * k].to_vec();
    let mut shared = perm[2 * k..].to_vec();
    candidates.sort_unstable();
    independent.sort_unstable();
    shared.sort_unstable();
    DataSplit {
        shared,
        candidates,
        independent,
    }
}

impl DataSplit {
    /// The training points of `kind`, sorted.
    pub fn train_points(&self, kind: SplitKind) -> Vec<usize> {
        let mut v = self.shared.clone();
        match kind {
            SplitKind::All => {
                v.extend(&self.candidates);
                v.extend(&self.independent);
            }
            SplitKind::SharedCandidates => v.extend(&self.candidates),
            SplitKind::SharedIndependent => v.extend(&self.independent),
        }
        v.sort_unstable();
        v
    }
}
