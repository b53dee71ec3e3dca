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
