//! Forward time of each convolution algorithm (im2col, Winograd F(2x2, 3x3), small-map
//! product) on the layers of the measure benchmarks, in one process.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_conv_algorithms [RUNS]
//!
//! Prints per layer the median milliseconds of each algorithm that applies, its GFLOP/s
//! counted as im2col's arithmetic (so the figures compare), the ratio to im2col, and the
//! largest difference from im2col relative to the output's largest magnitude.

use candle_core::{Device, Tensor};
use memprune::model::conv::{
    conv2d_bias_act_using, forward_algorithm, ConvParams, ForwardAlgorithm as A,
};
use std::time::Instant;

#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

/// name, batch, input channels, input size, output channels, kernel, stride.
type Layer = (&'static str, usize, usize, usize, usize, usize, usize);

const LAYERS: [Layer; 21] = [
    ("paper r9@28 b2", 250, 32, 28, 64, 3, 1),
    ("paper r9@28 b3", 250, 64, 14, 64, 3, 1),
    ("paper r9@28 b5", 250, 64, 14, 128, 3, 1),
    ("paper r9@28 b6", 250, 128, 7, 256, 3, 1),
    ("paper r9@28 b7", 250, 256, 3, 256, 3, 1),
    ("r18@32 conv1", 256, 3, 32, 64, 7, 2),
    ("r18@32 l1", 256, 64, 8, 64, 3, 1),
    ("r18@32 l2.0", 256, 64, 8, 128, 3, 2),
    ("r18@32 l2", 256, 128, 4, 128, 3, 1),
    ("r18@32 l3.0", 256, 128, 4, 256, 3, 2),
    ("r18@32 l3", 256, 256, 2, 256, 3, 1),
    ("r18@32 l4.0", 256, 256, 2, 512, 3, 2),
    ("r18@32 l4", 256, 512, 1, 512, 3, 1),
    ("r18@224 l1", 32, 64, 56, 64, 3, 1),
    ("r18@224 l2", 32, 128, 28, 128, 3, 1),
    ("r18@224 l3", 32, 256, 14, 256, 3, 1),
    ("r18@224 l4", 32, 512, 7, 512, 3, 1),
    ("r18@224 l4.0", 32, 256, 14, 512, 3, 2),
    ("r18@224 conv1", 32, 3, 224, 64, 7, 2),
    ("r18@224 l2.ds", 32, 64, 56, 128, 1, 2),
    ("r18@224 l2.0", 32, 64, 56, 128, 3, 2),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    // As the memprune binary does (MEMPRUNE_BLOCK_CACHE=0: the system allocator).
    memprune::block_cache::enable_from_env();
    let dev = Device::Cpu;
    println!(
        "{} thread(s), median of {runs}\n",
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:<16} {:>4} {:>4} {:>4} {:>4} {:>2} {:>2} | {:>9} {:>9} {:>9} | {:>6} | {:>6} {:>8} {:>8}",
        "layer",
        "N",
        "Cin",
        "H",
        "Cout",
        "k",
        "s",
        "im2col",
        "winograd",
        "smallmap",
        "GF/s",
        "best x",
        "diff wg",
        "diff sm"
    );
    for (name, n, c, h, co, k, s) in LAYERS {
        let pad = k / 2;
        let p = ConvParams {
            stride: s,
            padding: pad,
            ..Default::default()
        };
        let x = Tensor::randn(0f32, 1.0, (n, c, h, h), &dev)?;
        let fan_in = (c * k * k) as f64;
        let w = Tensor::randn(0f32, (2.0 / fan_in).sqrt() as f32, (co, c, k, k), &dev)?;
        let b = Tensor::randn(0f32, 0.1, co, &dev)?;
        let chosen = forward_algorithm(x.dims(), w.dims(), p)?;
        let mut times = Vec::new();
        let mut outs = Vec::new();
        for alg in [A::Im2col, A::Winograd, A::SmallMap] {
            let applies = alg == A::Im2col
                || alg == chosen
                || (alg == A::Winograd && k == 3 && s == 1 && c >= 16 && co >= 16);
            if !applies {
                times.push(None);
                outs.push(None);
                continue;
            }
            let y = conv2d_bias_act_using(alg, &x, &w, &b, p, true)?;
            let ts: Vec<f64> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    conv2d_bias_act_using(alg, &x, &w, &b, p, true).unwrap();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.push(Some(median(ts)));
            outs.push(Some(y));
        }
        let oh = (h + 2 * pad - k) / s + 1;
        let flops = 2.0 * (n * co * oh * oh * c * k * k) as f64;
        let base = times[0].unwrap();
        let best = times
            .iter()
            .flatten()
            .cloned()
            .fold(f64::INFINITY, f64::min);
        let base_y = outs[0].as_ref().unwrap();
        let scale = base_y.abs()?.max_all()?.to_scalar::<f32>()? as f64;
        let diff = |y: &Option<Tensor>| -> String {
            y.as_ref().map_or("-".to_string(), |y| {
                let d = (y - base_y).unwrap().abs().unwrap().max_all().unwrap();
                format!("{:.1e}", d.to_scalar::<f32>().unwrap() as f64 / scale)
            })
        };
        let cell = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.2}", t * 1e3));
        println!(
            "{:<16} {:>4} {:>4} {:>4} {:>4} {:>2} {:>2} | {:>8} {:>8} {:>8} | {:>6.1} | {:>6.2} {:>8} {:>8}  ({chosen:?})",
            name,
            n,
            c,
            h,
            co,
            k,
            s,
            cell(times[0]),
            cell(times[1]),
            cell(times[2]),
            flops / base / 1e9,
            base / best,
            diff(&outs[1]),
            diff(&outs[2])
        );
    }
    Ok(())
}
