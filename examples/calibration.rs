//! Calibration of memprune's intervals and stars by simulation: encoder pairs with nothing
//! memorized, so that every star is a false one.
//!
//!     cargo run --release --example calibration                 # 100 seeds, both families
//!     CAL_SEEDS=20 CAL_ARCH=vit cargo run --release --example calibration
//!
//! Seed s (data: the embedded 10,000-image Fashion-MNIST subset): f and g are fresh random inits of the embedded ResNet9 (or the embedded-size
//! ViT), init seeds 1000 + 2s and 1001 + 2s, so neither has seen any point; the views, the
//! candidates (CAL_POINTS random training points, default 30) and as many unseen test
//! points are drawn with seed s; CAL_VIEWS view pairs per point (default 4). For each seed:
//! - LayerMem: the corrected LayerMem of every layer (candidates minus unseen points), its
//!   per-layer 95 % interval, and the family-wise star over the layers;
//! - the planted-point difference, with the first 5 candidates as the "planted" group;
//! - UnitMem-excess: f on the candidates against f on the unseen points, per layer.
//!
//! Printed: per rule, the share of (seed, layer) cases starred, the highest per-layer share,
//! and the share of seeds with at least one star (the family-wise error rate). Under a
//! calibrated per-layer 95 % interval the first two are about 5 %; under a family-wise rule
//! the last is at most about 5 %.

use memprune::data::{self, Split, Subset};
use memprune::measure::{self, ViewSettings};
use memprune::metrics::bootstrap::{interval, Bootstrap};
use memprune::metrics::layer_mem::{self, Control};
use memprune::metrics::unit_mem::Reduce;
use memprune::model::LoadOptions;
use std::path::Path;

/// Counts of one rule over seeds and layers.
struct Tally {
    name: String,
    per_layer: Vec<usize>,
    seeds_with_any: usize,
    seeds: usize,
}

impl Tally {
    fn new(name: &str) -> Tally {
        Tally {
            name: name.into(),
            per_layer: Vec::new(),
            seeds_with_any: 0,
            seeds: 0,
        }
    }

    fn add(&mut self, starred: &[bool]) {
        if self.per_layer.len() < starred.len() {
            self.per_layer.resize(starred.len(), 0);
        }
        for (c, &s) in self.per_layer.iter_mut().zip(starred) {
            *c += s as usize;
        }
        self.seeds_with_any += starred.iter().any(|&s| s) as usize;
        self.seeds += 1;
    }

    fn print(&self) {
        let n = self.seeds.max(1) as f64;
        let cases: usize = self.per_layer.iter().sum();
        let layers = self.per_layer.len().max(1) as f64;
        let worst = self.per_layer.iter().copied().max().unwrap_or(0);
        println!(
            "  {:<66} {:>6.1} % {:>6.1} % {:>6.1} %",
            self.name,
            100.0 * cases as f64 / (n * layers),
            100.0 * worst as f64 / n,
            100.0 * self.seeds_with_any as f64 / n,
        );
    }
}

/// The planted-point interval before the relabelling one: candidates and others resampled
/// independently (1,000 percentile-bootstrap resamples), starred where it excludes 0.
fn planted_bootstrap_star(
    names: &[String],
    points: &[layer_mem::PointScores],
    group: &[usize],
    boot: &Bootstrap,
) -> Vec<bool> {
    let mut sorted: Vec<&layer_mem::PointScores> = points.iter().collect();
    sorted.sort_by_key(|p| p.point);
    let (ing, outg): (Vec<_>, Vec<_>) = sorted.into_iter().partition(|p| group.contains(&p.point));
    let ri: Vec<&[f64]> = ing.iter().map(|p| p.sslmem.as_slice()).collect();
    let ro: Vec<&[f64]> = outg.iter().map(|p| p.sslmem.as_slice()).collect();
    let (bi, bo) = (boot.column_means(&ri, 2), boot.column_means(&ro, 3));
    (0..names.len())
        .map(|l| {
            let d: Vec<f64> = bi.iter().zip(&bo).map(|(a, b)| a[l] - b[l]).collect();
            interval(&d).excludes_zero()
        })
        .collect()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let seeds = env("CAL_SEEDS", 100);
    let points = env("CAL_POINTS", 30);
    let views = env("CAL_VIEWS", 4);
    let arch = std::env::var("CAL_ARCH").unwrap_or_else(|_| "both".into());
    // The 10,000-image Fashion-MNIST subset: its training and test images come from one
    // distribution. (The default data plants MNIST digits among the training images, so its
    // training and test points differ even for encoders that saw neither: CAL_DATA=planted.)
    let data_path = match std::env::var("CAL_DATA").as_deref() {
        Ok("planted") => memprune::defaults::data(),
        _ => memprune::defaults::data_10k(),
    };
    let train = data::open(&data_path, Split::Train)?;
    let test = data::open(&data_path, Split::Test)?;
    let families: Vec<(&str, std::path::PathBuf)> = [
        ("resnet9", memprune::defaults::model_f()),
        (
            "vit",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/vit-mae-f.safetensors"),
        ),
    ]
    .into_iter()
    .filter(|(n, _)| arch == "both" || arch == *n)
    .collect();
    println!(
        "calibration: {seeds} seeds, {points} candidates and {points} unseen points of {}, {views} view pairs (UnitMem: {views} views), random-init f and g",
        data_path.display()
    );
    for (family, like) in families {
        let layer_opts = LoadOptions {
            sub_layers_only: true,
            ..Default::default()
        };
        let unit_opts = LoadOptions::default();
        let mut t = [
            Tally::new("LayerMem corrected: per-layer 95 % interval excludes 0 (old star)"),
            Tally::new("LayerMem corrected: family-wise star (Holm)"),
            Tally::new("planted: bootstrap 95 % interval excludes 0 (old star)"),
            Tally::new("planted: relabelling 95 % interval excludes 0"),
            Tally::new("planted: family-wise star (Holm)"),
            Tally::new("excess: interval over units excludes 0 (old star)"),
            Tally::new("excess: relabelling 95 % interval excludes 0"),
            Tally::new("excess: family-wise star (Holm)"),
        ];
        let mut layers = 0;
        for s in 0..seeds as u64 {
            let f = memprune::model::fresh::random_like(&like, &layer_opts, 1000 + 2 * s)?;
            let g = memprune::model::fresh::random_like(&like, &layer_opts, 1001 + 2 * s)?;
            let settings = ViewSettings {
                augment: Default::default(),
                normalization: data::Normalization::default_for(train.kind, train.channels),
                seed: s,
                batch: 256,
            };
            let cand = Subset::random(points, s, train.len())?.indices;
            let unseen = measure::unseen_points(&test, points, s)?;
            let pb = indicatif::ProgressBar::hidden();
            let pairing = layer_mem::Pairing::Views;
            let cp =
                measure::layer_mem_points(&f, &g, &train, &cand, views, pairing, &settings, &pb)?;
            let up =
                measure::layer_mem_points(&f, &g, &test, &unseen, views, pairing, &settings, &pb)?;
            let boot = Bootstrap {
                seed: s,
                ..Default::default()
            };
            let names = measure::layer_names(&f);
            layers = names.len();
            let lm = layer_mem::layer_mem(&names, &cp, Some((&up, Control::Unseen)), &boot);
            t[0].add(
                &lm.iter()
                    .map(|l| l.corrected_ci.is_some_and(|i| i.excludes_zero()))
                    .collect::<Vec<_>>(),
            );
            t[1].add(&lm.iter().map(|l| l.star == Some(true)).collect::<Vec<_>>());
            let planted: Vec<usize> = cand.iter().copied().take(5).collect();
            let gd = layer_mem::group_difference(&names, &cp, &planted, &boot).unwrap();
            t[2].add(&planted_bootstrap_star(&names, &cp, &planted, &boot));
            t[3].add(
                &gd.iter()
                    .map(|g| g.difference_ci.excludes_zero())
                    .collect::<Vec<_>>(),
            );
            t[4].add(&gd.iter().map(|g| g.star).collect::<Vec<_>>());
            let fu = memprune::model::fresh::random_like(&like, &unit_opts, 1000 + 2 * s)?;
            let um = measure::unit_scores_with_control(
                &fu,
                &train,
                &cand,
                Some((&test, &unseen)),
                views,
                Reduce::Mean,
                false,
                &settings,
                false,
            )?;
            let ctl: Vec<_> = um.iter().filter_map(|l| l.control.as_ref()).collect();
            t[5].add(
                &ctl.iter()
                    .map(|c| c.excess_units_ci.is_some_and(|i| i.excludes_zero()))
                    .collect::<Vec<_>>(),
            );
            t[6].add(
                &ctl.iter()
                    .map(|c| c.excess_mean_ci.is_some_and(|i| i.excludes_zero()))
                    .collect::<Vec<_>>(),
            );
            t[7].add(
                &ctl.iter()
                    .map(|c| c.excess_star == Some(true))
                    .collect::<Vec<_>>(),
            );
        }
        println!(
            "\n{family} ({layers} LayerMem layers), share of cases starred:\n  {:<66} {:>8} {:>8} {:>8}",
            "rule", "(s, l)", "worst l", "any l"
        );
        for x in &t {
            x.print();
        }
    }
    Ok(())
}
