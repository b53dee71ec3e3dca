//! `memprune experiment finetune`: the paper's Table 5. Which layers are worth fine-tuning
//! on a downstream task: the head only, the layers of highest dLayerMem, the last layers, or
//! random ones, each fine-tuned with several seeds ([`crate::eval::finetune`]).
//!
//! The candidates for every criterion are the encoder's trainable layers that LayerMem
//! measures, in forward order (ResNet9: block1..block8; a ViT: each block's attention and
//! MLP). dLayerMem is the corrected one (candidates minus unseen points) where a control
//! was measured.

use crate::data::rng::Rng;
use crate::data::ImageSet;
use crate::eval::finetune::{self, FinetuneResult, FinetuneRun, FinetuneSettings};
use crate::metrics::layer_mem::LayerMemLayer;
use crate::model::Encoder;
use crate::plan::planner::{parameter_layers, rank_layers};
use crate::plan::policy::Rank;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

const RANDOM_TAG: u64 = 0x5241_4E44_4C41_5945; // "RANDLAYE"

/// How a row chooses the layers it fine-tunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "by", content = "k")]
pub enum Choice {
    HeadOnly,
    /// The k layers of highest dLayerMem.
    TopDlayermem(usize),
    /// The last k layers.
    Last(usize),
    /// k layers drawn at random, a new draw for each seed.
    Random(usize),
}

impl Choice {
    pub fn label(self) -> String {
        match self {
            Choice::HeadOnly => "head only".into(),
            Choice::TopDlayermem(1) => "highest dLayerMem".into(),
            Choice::TopDlayermem(k) => format!("top {k} by dLayerMem"),
            Choice::Last(1) => "last layer".into(),
            Choice::Last(k) => format!("last {k}"),
            Choice::Random(k) => format!("{k} random"),
        }
    }

    /// The paper's row (Table 5, CIFAR10 -> STL10): mean and std, where it has one.
    pub fn paper(self) -> Option<(f64, f64)> {
        match self {
            Choice::HeadOnly => Some((48.6, 1.12)),
            Choice::TopDlayermem(1) => Some((53.0, 0.86)),
            Choice::Last(1) => Some((52.7, 0.97)),
            Choice::TopDlayermem(2) => Some((56.7, 0.84)),
            Choice::Last(2) => Some((55.3, 0.77)),
            Choice::TopDlayermem(3) => Some((57.9, 0.79)),
            Choice::Last(3) => Some((56.5, 0.95)),
            _ => None,
        }
    }
}

/// The paper's rows, and 3 random layers.
pub const CHOICES: [Choice; 8] = [
    Choice::HeadOnly,
    Choice::TopDlayermem(1),
    Choice::Last(1),
    Choice::TopDlayermem(2),
    Choice::Last(2),
    Choice::TopDlayermem(3),
    Choice::Last(3),
    Choice::Random(3),
];

/// The layers `choice` fine-tunes under `seed`, in forward order. `layers`: the candidates
/// in forward order; `ranked`: indices into `layers`, highest dLayerMem first.
pub fn choose_layers(
    choice: Choice,
    layers: &[String],
    ranked: &[usize],
    seed: u64,
) -> Vec<String> {
    let mut picked: Vec<usize> = match choice {
        Choice::HeadOnly => Vec::new(),
        Choice::TopDlayermem(k) => ranked.iter().take(k).copied().collect(),
        Choice::Last(k) => (layers.len().saturating_sub(k)..layers.len()).collect(),
        Choice::Random(k) => {
            let mut all: Vec<usize> = (0..layers.len()).collect();
            let mut rng = Rng::from_key(&[RANDOM_TAG, seed]);
            for i in (1..all.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                all.swap(i, j);
            }
            all.truncate(k);
            all
        }
    };
    picked.sort_unstable();
    picked.into_iter().map(|i| layers[i].clone()).collect()
}

/// One row: the layers of each seed's run (the same for every seed but random) and the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub choice: Choice,
    pub label: String,
    pub layers: Vec<Vec<String>>,
    pub runs: Vec<FinetuneRun>,
    pub mean: f64,
    pub std: f64,
    pub paper: Option<(f64, f64)>,
}

/// Top-k against last-k, for one k.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub k: usize,
    /// mean(top-k) - mean(last-k), accuracy in [0, 1] units.
    pub difference: f64,
    /// Standard error of that difference (the two rows' seeds as independent samples).
    pub standard_error: f64,
    /// `held` (difference > 2 standard errors), `not held` (< -2), `indistinguishable from
    /// noise`, or `same layers` when both criteria chose the same ones.
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table5 {
    /// The candidate layers, forward order, with their dLayerMem and 95 % interval.
    pub layers: Vec<LayerScore>,
    /// Whether dLayerMem is the corrected one (a control was measured).
    pub corrected: bool,
    pub rows: Vec<Row>,
    pub comparisons: Vec<Comparison>,
    pub settings: FinetuneSettings,
    pub train_points: usize,
    pub test_points: usize,
    /// LayerMem's augmentation, with where it came from (set by [`run`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<crate::data::augment_choice::ChosenAugment>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerScore {
    pub name: String,
    pub dlayer_mem: f64,
    pub ci: Option<(f64, f64)>,
}

/// The candidate layers (trainable and measured by LayerMem), forward order.
pub fn candidate_layers(enc: &Encoder, lm: &[LayerMemLayer]) -> Vec<String> {
    parameter_layers(enc)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| lm.iter().any(|l| &l.name == n))
        .collect()
}

fn score_of(l: &LayerMemLayer) -> (f64, Option<(f64, f64)>) {
    let (v, ci) = if l.corrected.is_some() {
        (l.dcorrected, l.dcorrected_ci)
    } else {
        (l.dlayer_mem, l.dlayer_mem_ci)
    };
    match v {
        Some(v) => (v, ci.map(|c| (c.lo, c.hi))),
        // The first layer: its increase over the input is its LayerMem.
        None if l.corrected.is_some() => (l.score(), l.corrected_ci.map(|c| (c.lo, c.hi))),
        None => (l.score(), Some((l.layer_mem_ci.lo, l.layer_mem_ci.hi))),
    }
}

/// Table 5 for `encoder`, whose LayerMem (against its reference) is `lm`: every row of
/// [`CHOICES`], fine-tuned on `train` and scored on `test` for each seed of `settings`.
/// Runs that two rows share (the same layers and seed) are made once. `progress` gets one
/// line per run.
pub fn table5(
    encoder: &Encoder,
    lm: &[LayerMemLayer],
    train: &ImageSet,
    test: &ImageSet,
    settings: &FinetuneSettings,
    mut progress: impl FnMut(&str),
) -> Result<Table5> {
    settings.validate()?;
    let layers = candidate_layers(encoder, lm);
    if layers.len() < 3 {
        bail!(
            "{}: Table 5 needs at least 3 layers that train and that LayerMem measures; this encoder has {:?}",
            encoder.checkpoint.path.display(),
            layers
        );
    }
    let params: Vec<(String, Vec<String>)> =
        layers.iter().map(|n| (n.clone(), Vec::new())).collect();
    let ranked: Vec<usize> = rank_layers(&params, lm, Rank::Dlayermem)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let scores: Vec<LayerScore> = layers
        .iter()
        .map(|n| {
            let l = lm.iter().find(|l| &l.name == n).expect("a candidate");
            let (v, ci) = score_of(l);
            LayerScore {
                name: n.clone(),
                dlayer_mem: v,
                ci,
            }
        })
        .collect();
    let mut done: BTreeMap<(Vec<String>, u64), FinetuneRun> = BTreeMap::new();
    let mut rows = Vec::new();
    for choice in CHOICES {
        let mut row_layers = Vec::new();
        let mut runs = Vec::new();
        for &seed in &settings.seeds {
            let chosen = choose_layers(choice, &layers, &ranked, seed);
            let key = (chosen.clone(), seed);
            let run = match done.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let r = finetune::finetune_once(encoder, &chosen, train, test, settings, seed)?;
                    progress(&format!(
                        "{} [{}] seed {seed}: {:.2} % ({:.0} s)",
                        choice.label(),
                        chosen.join(","),
                        100.0 * r.accuracy,
                        r.seconds
                    ));
                    done.insert(key, r.clone());
                    r
                }
            };
            row_layers.push(chosen);
            runs.push(run);
        }
        let result = FinetuneResult {
            layers: row_layers[0].clone(),
            runs: runs.clone(),
        };
        rows.push(Row {
            choice,
            label: choice.label(),
            layers: row_layers,
            runs,
            mean: result.mean(),
            std: result.std(),
            paper: choice.paper(),
        });
    }
    let comparisons = (1..=3)
        .map(|k| compare(&rows, k))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    Ok(Table5 {
        layers: scores,
        corrected: lm.iter().any(|l| l.corrected.is_some()),
        rows,
        comparisons,
        settings: settings.clone(),
        train_points: train.len(),
        test_points: test.len(),
        augment: None,
    })
}

/// Top-k against last-k in `rows`, when both rows are there.
pub fn compare(rows: &[Row], k: usize) -> Option<Comparison> {
    let top = rows.iter().find(|r| r.choice == Choice::TopDlayermem(k))?;
    let last = rows.iter().find(|r| r.choice == Choice::Last(k))?;
    let difference = top.mean - last.mean;
    let se = (top.std.powi(2) / top.runs.len() as f64 + last.std.powi(2) / last.runs.len() as f64)
        .sqrt();
    let verdict = if top.layers == last.layers {
        "same layers".to_string()
    } else if top.runs.len() < 2 || last.runs.len() < 2 {
        // One seed has no spread: any difference would pass a test of zero width.
        "one seed: no spread to judge by".to_string()
    } else if difference > 2.0 * se {
        "held".to_string()
    } else if difference < -2.0 * se {
        "not held".to_string()
    } else {
        "indistinguishable from noise".to_string()
    };
    Some(Comparison {
        k,
        difference,
        standard_error: se,
        verdict,
    })
}

/// Everything `memprune experiment finetune` reads.
#[derive(Debug, Clone)]
pub struct Table5Inputs {
    /// The SSL encoder f.
    pub checkpoint: std::path::PathBuf,
    /// Its reference g (trained without f's candidates) for LayerMem.
    pub reference: std::path::PathBuf,
    /// The pre-training data (f's candidates on its train split, the control on its test
    /// split).
    pub data: std::path::PathBuf,
    /// The downstream task (train and test splits).
    pub downstream: std::path::PathBuf,
    /// LayerMem: candidate points at most (f's candidates), view pairs per point.
    pub points: usize,
    pub views: usize,
    /// Seed of LayerMem's views and intervals.
    pub seed: u64,
    /// ViT: attention heads per block (`--heads`).
    pub heads: Option<usize>,
    /// The augmentation given (`--augment`); `None`: the one f and g record.
    pub augment: Option<crate::data::augment_choice::GivenAugment>,
}

/// Measures f's LayerMem against g (corrected by unseen test points) and runs [`table5`]
/// on the downstream task. `progress`: progress bars and one line per run.
pub fn run(
    inputs: &Table5Inputs,
    settings: &FinetuneSettings,
    progress: bool,
    log: impl FnMut(&str),
) -> Result<(Table5, Vec<LayerMemLayer>)> {
    use crate::data::{self, Split};
    use crate::measure::{self, DefaultPoints, PointChoice, ViewSettings};
    use crate::model::LoadOptions;
    settings.validate()?;
    if inputs.points == 0 || inputs.views == 0 {
        bail!("--points and --views must be at least 1");
    }
    let opts = LoadOptions {
        heads: inputs.heads,
        ..Default::default()
    };
    let f = Encoder::load(&inputs.checkpoint, &opts)?;
    let g = Encoder::load(&inputs.reference, &opts)?;
    measure::check_pair(&f, &g)?;
    crate::checkpoint::train_meta::check_reference(&f.checkpoint, &g.checkpoint)?;
    let pre = data::open(&inputs.data, Split::Train)?;
    let pre_test = data::open(&inputs.data, Split::Test)?;
    let train = data::open(&inputs.downstream, Split::Train)?;
    let test = data::open(&inputs.downstream, Split::Test)?;
    for s in [&train, &test] {
        if s.labels.is_none() {
            bail!("{}: the downstream task needs labels", s.source);
        }
    }
    let points = measure::choose_points(
        &PointChoice::default(),
        &pre,
        Split::Train,
        &f,
        inputs.seed,
        DefaultPoints::Candidates(inputs.points),
    )?;
    let unseen = measure::unseen_points(&pre_test, points.len(), inputs.seed)?;
    let augment = crate::data::augment_choice::choose(
        inputs.augment.clone(),
        &f.checkpoint,
        Some(&g.checkpoint),
    )?;
    let view_settings = ViewSettings {
        augment: augment.config.clone(),
        normalization: crate::data::Normalization::default_for(pre.kind, pre.channels),
        seed: inputs.seed,
        batch: 250,
    };
    let lm = measure::layer_mem_with_control(
        &f,
        &g,
        &pre,
        &points,
        Some((&pre_test, unseen.as_slice())),
        inputs.views,
        &view_settings,
        progress,
    )?;
    let mut t = table5(&f, &lm, &train, &test, settings, log)?;
    t.augment = Some(augment);
    Ok((t, lm))
}
