//! What a model costs: parameters, multiply-accumulates and measured forward speed.

use crate::model::Encoder;
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cost {
    pub params: usize,
    /// Per image at `image_size`.
    pub macs: u64,
    /// The side of the images `macs` counts (the data's).
    pub image_size: usize,
    /// Bytes of the checkpoint on disk.
    pub file_bytes: u64,
    /// Median forward images/s (pooled features only), when measured.
    pub images_per_s: Option<f64>,
}

/// Parameters, MACs at side `size`, file size, and (when `speed`) the median forward
/// throughput over `runs` batches of `batch` random images after one warm-up batch.
pub fn cost(
    enc: &Encoder,
    size: usize,
    speed: bool,
    batch: usize,
    runs: usize,
) -> anyhow::Result<Cost> {
    let file_bytes = std::fs::metadata(&enc.checkpoint.path)
        .map(|m| m.len())
        .unwrap_or(0);
    let images_per_s = if speed {
        let x = Tensor::randn(
            0f32,
            1.0,
            (batch, enc.in_channels(), size, size),
            &Device::Cpu,
        )?;
        enc.features(&x)?;
        let mut t: Vec<f64> = (0..runs.max(1))
            .map(|_| {
                let s = Instant::now();
                enc.features(&x).map(|_| s.elapsed().as_secs_f64())
            })
            .collect::<candle_core::Result<_>>()?;
        t.sort_by(|a, b| a.total_cmp(b));
        Some(batch as f64 / t[t.len() / 2])
    } else {
        None
    };
    Ok(Cost {
        params: enc.params(),
        macs: enc.macs(size),
        image_size: size,
        file_bytes,
        images_per_s,
    })
}

/// Forward speed of two models timed alternately in the same run: what a before/after
/// ratio on a shared, noisy machine can be trusted for.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedComparison {
    /// Rounds; in each, one batch through each model, back to back (the order alternates
    /// from round to round: before first in even rounds, after first in odd ones).
    pub rounds: usize,
    pub batch: usize,
    pub image_size: usize,
    /// Median over the rounds of each model's forward images/s.
    pub before_images_per_s: f64,
    pub after_images_per_s: f64,
    /// Per round: the after model's images/s over the before model's.
    pub ratios: Vec<f64>,
    /// Median, least and greatest of `ratios`.
    pub ratio_median: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
}

/// The median of `v` (the mean of the middle two for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Times `before` and `after` alternately on the same `batch` random images of side `size`
/// (after one warm-up batch each), `rounds` rounds.
pub fn compare_speed(
    before: &Encoder,
    after: &Encoder,
    size: usize,
    batch: usize,
    rounds: usize,
) -> anyhow::Result<SpeedComparison> {
    let rounds = rounds.max(1);
    let x = Tensor::randn(
        0f32,
        1.0,
        (batch, before.in_channels(), size, size),
        &Device::Cpu,
    )?;
    let time = |e: &Encoder| -> anyhow::Result<f64> {
        let s = Instant::now();
        e.features(&x)?;
        Ok(batch as f64 / s.elapsed().as_secs_f64())
    };
    time(before)?;
    time(after)?;
    let (mut b, mut a) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for r in 0..rounds {
        if r % 2 == 0 {
            b.push(time(before)?);
            a.push(time(after)?);
        } else {
            a.push(time(after)?);
            b.push(time(before)?);
        }
    }
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    Ok(SpeedComparison {
        rounds,
        batch,
        image_size: size,
        before_images_per_s: median(&b),
        after_images_per_s: median(&a),
        ratio_median: median(&ratios),
        ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ratios,
    })
}
