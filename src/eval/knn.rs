//! The weighted k-nearest-neighbour classifier of DINO, DINOv2 and solo-learn on frozen
//! features.
//!
//! Features are L2-normalised; a test point's neighbours are the `k` training points of
//! highest cosine similarity `s`, and each votes for its label with weight `exp(s / T)`.
//! The class of largest summed weight is the prediction (top-1); top-5 asks whether the
//! label is among the five classes of largest weight. The weights are computed as
//! `exp((s - s_max) / T)` (the same ratios), so every finite `T > 0` is meaningful: a small
//! `T` tends to the nearest neighbour's vote instead of overflowing. Ties between neighbours of equal
//! similarity go to the lower training index, ties between classes to the lower class, so
//! the result does not depend on threads or batches.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct KnnSettings {
    /// Neighbours per test point (20 in DINO).
    pub k: usize,
    /// Temperature of the vote weights (0.07 in DINO).
    pub temperature: f64,
    /// Test points per similarity block (memory only).
    pub batch: usize,
}

impl Default for KnnSettings {
    fn default() -> Self {
        KnnSettings {
            k: 20,
            temperature: 0.07,
            batch: 500,
        }
    }
}

impl KnnSettings {
    /// Refuses a `k` of 0 and a temperature that is not a finite number > 0, naming the flags.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            bail!("--knn-k must be at least 1, got 0");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "--knn-temperature must be a finite number > 0, got {}",
                self.temperature
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KnnResult {
    /// Top-1 and top-5 accuracy on the test points, in [0, 1].
    pub top1: f64,
    pub top5: f64,
    /// The k used: the one asked for, or the number of training points if fewer.
    pub k: usize,
    pub temperature: f64,
    pub train_points: usize,
    pub test_points: usize,
    pub classes: usize,
}

/// The weight `exp((s - s_max) / T)` of a neighbour of similarity `s` (in [0, 1]). A NaN
/// feature's similarity (-inf) weighs 0, unless every neighbour's is (then each weighs 1).
fn vote_weight(s: f64, s_max: f64, temperature: f64) -> f64 {
    if s_max == f64::NEG_INFINITY {
        return 1.0;
    }
    ((s - s_max) / temperature).exp()
}

fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// kNN accuracy of `test_x` (M, d) against the labelled `train_x` (N, d).
pub fn knn(
    train_x: &Tensor,
    train_y: &[u32],
    test_x: &Tensor,
    test_y: &[u32],
    settings: &KnnSettings,
) -> Result<KnnResult> {
    settings.validate()?;
    let (n, d) = train_x.dims2()?;
    let (m, d2) = test_x.dims2()?;
    if n != train_y.len() || m != test_y.len() || d != d2 {
        bail!("kNN: features and labels disagree in shape");
    }
    if n == 0 || m == 0 {
        bail!("kNN: no training or test points");
    }
    let classes = train_y
        .iter()
        .chain(test_y)
        .max()
        .map(|&c| c as usize + 1)
        .unwrap_or(0);
    let k = settings.k.min(n);
    let train_t = l2_normalize(train_x)?.t()?.contiguous()?;
    let test_n = l2_normalize(test_x)?;
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut votes = vec![0f64; classes];
    let mut start = 0;
    while start < m {
        let len = settings.batch.max(1).min(m - start);
        let sims = test_n.narrow(0, start, len)?.matmul(&train_t)?;
        let sims: Vec<Vec<f32>> = sims.to_vec2()?;
        for (row, s) in sims.iter().enumerate() {
            order.clear();
            order.extend(0..n);
            // NaN features compare as the lowest similarity (total order), never panic.
            let key = |i: usize| {
                if s[i].is_nan() {
                    f32::NEG_INFINITY
                } else {
                    s[i]
                }
            };
            order.select_nth_unstable_by(k - 1, |&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            votes.iter_mut().for_each(|v| *v = 0.0);
            // exp((s - s_max) / T): the same vote ratios as exp(s / T), but the nearest
            // neighbour weighs 1, so no weight overflows to infinity (which would tie every
            // class at inf) whatever the temperature.
            let s_max = order[..k]
                .iter()
                .map(|&i| key(i) as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            for &i in &order[..k] {
                votes[train_y[i] as usize] +=
                    vote_weight(key(i) as f64, s_max, settings.temperature);
            }
            let mut ranked: Vec<usize> = (0..classes).collect();
            ranked.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
            let y = test_y[start + row] as usize;
            if ranked[0] == y {
                top1 += 1;
            }
            if ranked.iter().take(5).any(|&c| c == y) {
                top5 += 1;
            }
        }
        start += len;
    }
    Ok(KnnResult {
        top1: top1 as f64 / m as f64,
        top5: top5 as f64 / m as f64,
        k,
        temperature: settings.temperature,
        train_points: n,
        test_points: m,
        classes,
    })
}
