//! memprune's CPU conv vs candle's stock conv2d, layer by layer and on whole models.
//!
//!     BENCH_DATA=/tmp/bench-data cargo run --release --example bench_conv
//!
//! Env: BENCH_DATA (weights/inputs from examples/bench/gen.py; whole-model part is
//! skipped without it), RUNS (timed runs per figure, default 5), STOCK_TRAIN=0 to skip
//! the (slow) stock-candle training step, LAYERS=0 / MODELS=0 / R18=0 to skip a part,
//! R9FWD_ONLY=1 for just the ResNet9 forward.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use memprune::model::batch_norm::{batch_norm_train, fold_batch_norm};
use memprune::model::conv::{channel_means, conv2d, conv2d_bias_act, conv2d_stock, ConvParams};
use memprune::model::pool::max_pool2d;
use std::collections::HashMap;
use std::time::Instant;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Median seconds of `runs` timed calls after one warm-up.
fn time<F: FnMut() -> Result<()>>(runs: usize, mut f: F) -> Result<f64> {
    f()?;
    let mut ts = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(ts[ts.len() / 2])
}

struct Layer {
    name: &'static str,
    n: usize,
    c: usize,
    h: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
}

#[allow(clippy::too_many_arguments)]
const fn l(
    name: &'static str,
    n: usize,
    c: usize,
    h: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Layer {
    Layer {
        name,
        n,
        c,
        h,
        co,
        k,
        s,
        p,
    }
}

fn layers() -> Vec<Layer> {
    vec![
        l("r9 prep", 256, 3, 32, 64, 3, 1, 1),
        l("r9 layer1", 256, 64, 32, 128, 3, 1, 1),
        l("r9 res1", 256, 128, 16, 128, 3, 1, 1),
        l("r9 layer2", 256, 128, 16, 256, 3, 1, 1),
        l("r9 layer3", 256, 256, 8, 512, 3, 1, 1),
        l("r9 res3", 256, 512, 4, 512, 3, 1, 1),
        l("r18@32 conv1", 256, 3, 32, 64, 7, 2, 3),
        l("r18@32 l1", 256, 64, 8, 64, 3, 1, 1),
        l("r18@32 l2.0", 256, 64, 8, 128, 3, 2, 1),
        l("r18@32 l2", 256, 128, 4, 128, 3, 1, 1),
        l("r18@32 l3.0", 256, 128, 4, 256, 3, 2, 1),
        l("r18@32 l3", 256, 256, 2, 256, 3, 1, 1),
        l("r18@32 l4", 256, 512, 1, 512, 3, 1, 1),
        l("r18@224 conv1", 64, 3, 224, 64, 7, 2, 3),
        l("r18@224 l1", 64, 64, 56, 64, 3, 1, 1),
        l("r18@224 l2.0", 64, 64, 56, 128, 3, 2, 1),
        l("r18@224 l2.ds", 64, 64, 56, 128, 1, 2, 0),
        l("r18@224 l2", 64, 128, 28, 128, 3, 1, 1),
        l("r18@224 l3.0", 64, 128, 28, 256, 3, 2, 1),
        l("r18@224 l3", 64, 256, 14, 256, 3, 1, 1),
        l("r18@224 l4.0", 64, 256, 14, 512, 3, 2, 1),
        l("r18@224 l4", 64, 512, 7, 512, 3, 1, 1),
    ]
}

fn bench_layers(runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    println!("\n== conv layers (median ms; bwd = dx + dw, from a Var graph) ==");
    println!(
        "{:<15} {:>4} {:>4} {:>4} {:>4} {:>2} {:>2} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>7}",
        "layer", "N", "Cin", "H", "Cout", "k", "s", "fwd ours", "fwd cndl", "x", "bwd ours", "bwd cndl", "x", "GFLOP/s"
    );
    for ly in layers() {
        let x = Var::randn(0f32, 1., (ly.n, ly.c, ly.h, ly.h), &dev)?;
        let w = Var::randn(0f32, 0.1, (ly.co, ly.c, ly.k, ly.k), &dev)?;
        let p = ConvParams {
            stride: ly.s,
            padding: ly.p,
            ..Default::default()
        };
        let y = conv2d(x.as_tensor(), w.as_tensor(), None, p)?;
        let r = Tensor::randn(0f32, 1., y.shape(), &dev)?;
        let flops = 2.0 * y.elem_count() as f64 * (ly.c * ly.k * ly.k) as f64;
        let fo = time(runs, || {
            conv2d(x.as_tensor(), w.as_tensor(), None, p).map(|_| ())
        })?;
        let fs = time(runs, || {
            conv2d_stock(x.as_tensor(), w.as_tensor(), None, p).map(|_| ())
        })?;
        let bo = median_bwd(runs, || conv2d(x.as_tensor(), w.as_tensor(), None, p), &r)?;
        let stock_runs = if ly.n * ly.co * ly.h * ly.h > 1 << 23 {
            runs.min(2)
        } else {
            runs.min(3)
        };
        let bs = median_bwd(
            stock_runs,
            || conv2d_stock(x.as_tensor(), w.as_tensor(), None, p),
            &r,
        )?;
        println!(
            "{:<15} {:>4} {:>4} {:>4} {:>4} {:>2} {:>2} | {:>9.2} {:>9.2} {:>6.2} | {:>9.2} {:>9.2} {:>6.2} | {:>7.1}",
            ly.name,
            ly.n,
            ly.c,
            ly.h,
            ly.co,
            ly.k,
            ly.s,
            fo * 1e3,
            fs * 1e3,
            fs / fo,
            bo * 1e3,
            bs * 1e3,
            bs / bo,
            flops / fo / 1e9
        );
    }
    Ok(())
}

/// Median time of `backward()` alone.
fn median_bwd(runs: usize, fwd: impl Fn() -> Result<Tensor>, r: &Tensor) -> Result<f64> {
    let mut ts = Vec::new();
    for i in 0..runs.max(1) + 1 {
        let l = (fwd()? * r)?.sum_all()?;
        let t = Instant::now();
        let _g = l.backward()?;
        if i > 0 || runs == 0 {
            ts.push(t.elapsed().as_secs_f64());
        }
    }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(ts[ts.len() / 2])
}

// ------------------------------------------------------------------------------------------
// Whole models

fn rel_err(out: &Tensor, refr: &Tensor) -> Result<f64> {
    let o = out.to_dtype(DType::F64)?;
    let r = refr.to_dtype(DType::F64)?;
    let d = (&o - &r)?.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(d / r.abs()?.max_all()?.to_scalar::<f64>()?)
}

type Weights = HashMap<String, Tensor>;

fn get(ws: &Weights, k: &str) -> Result<Tensor> {
    ws.get(k)
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg(format!("missing {k}")))
}

/// conv weight `cname` followed by BN `bname`, folded.
fn folded(ws: &Weights, cname: &str, bname: &str) -> Result<(Tensor, Tensor)> {
    fold_batch_norm(
        &get(ws, &format!("{cname}.weight"))?,
        None,
        &get(ws, &format!("{bname}.weight"))?,
        &get(ws, &format!("{bname}.bias"))?,
        &get(ws, &format!("{bname}.running_mean"))?,
        &get(ws, &format!("{bname}.running_var"))?,
        1e-5,
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Ours,
    Stock,
}

fn cba(im: Impl, x: &Tensor, wb: &(Tensor, Tensor), p: ConvParams, relu: bool) -> Result<Tensor> {
    match im {
        Impl::Ours => conv2d_bias_act(x, &wb.0, &wb.1, p, relu),
        Impl::Stock => {
            let y = conv2d_stock(x, &wb.0, Some(&wb.1), p)?;
            if relu {
                y.relu()
            } else {
                Ok(y)
            }
        }
    }
}

fn pool2(im: Impl, x: &Tensor) -> Result<Tensor> {
    match im {
        Impl::Ours => max_pool2d(x, 2, 2, 0),
        Impl::Stock => x.max_pool2d(2),
    }
}

const R9: [&str; 8] = [
    "prep", "layer1", "res1a", "res1b", "layer2", "layer3", "res3a", "res3b",
];

struct R9Eval {
    c: HashMap<&'static str, (Tensor, Tensor)>,
    fc: Tensor,
}

impl R9Eval {
    fn load(ws: &Weights) -> Result<Self> {
        let mut c = HashMap::new();
        for n in R9 {
            c.insert(n, folded(ws, &format!("{n}.conv"), &format!("{n}.bn"))?);
        }
        Ok(R9Eval {
            c,
            fc: get(ws, "fc.weight")?,
        })
    }
    fn forward(&self, im: Impl, x: &Tensor) -> Result<Tensor> {
        let p = ConvParams {
            padding: 1,
            ..Default::default()
        };
        let cb = |x: &Tensor, n: &str| cba(im, x, &self.c[n], p, true);
        let x = cb(x, "prep")?;
        let x = pool2(im, &cb(&x, "layer1")?)?;
        let x = (&x + cb(&cb(&x, "res1a")?, "res1b")?)?;
        let x = pool2(im, &cb(&x, "layer2")?)?;
        let x = pool2(im, &cb(&x, "layer3")?)?;
        let x = (&x + cb(&cb(&x, "res3a")?, "res3b")?)?;
        let x = x.flatten_from(2)?.max(2)?;
        x.matmul(&self.fc.t()?)? * 0.125
    }
}

struct R9Train {
    w: HashMap<&'static str, (Var, Var, Var)>,
    fc: Var,
}

impl R9Train {
    fn load(ws: &Weights) -> Result<Self> {
        let mut w = HashMap::new();
        for n in R9 {
            w.insert(
                n,
                (
                    Var::from_tensor(&get(ws, &format!("{n}.conv.weight"))?)?,
                    Var::from_tensor(&get(ws, &format!("{n}.bn.weight"))?)?,
                    Var::from_tensor(&get(ws, &format!("{n}.bn.bias"))?)?,
                ),
            );
        }
        Ok(R9Train {
            w,
            fc: Var::from_tensor(&get(ws, "fc.weight")?)?,
        })
    }
    fn vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = self
            .w
            .values()
            .flat_map(|(a, b, c)| [a.clone(), b.clone(), c.clone()])
            .collect();
        v.push(self.fc.clone());
        v
    }
    fn forward(&self, im: Impl, x: &Tensor) -> Result<Tensor> {
        let p = ConvParams {
            padding: 1,
            ..Default::default()
        };
        let cb = |x: &Tensor, n: &str| -> Result<Tensor> {
            let (w, g, b) = &self.w[n];
            match im {
                Impl::Ours => {
                    let y = conv2d(x, w.as_tensor(), None, p)?;
                    Ok(batch_norm_train(&y, g.as_tensor(), b.as_tensor(), 1e-5, true)?.0)
                }
                Impl::Stock => {
                    let y = conv2d_stock(x, w.as_tensor(), None, p)?;
                    let c = y.dim(1)?;
                    let mean = y.mean_keepdim((0, 2, 3))?;
                    let yc = y.broadcast_sub(&mean)?;
                    let var = yc.sqr()?.mean_keepdim((0, 2, 3))?;
                    yc.broadcast_div(&(var + 1e-5)?.sqrt()?)?
                        .broadcast_mul(&g.as_tensor().reshape((1, c, 1, 1))?)?
                        .broadcast_add(&b.as_tensor().reshape((1, c, 1, 1))?)?
                        .relu()
                }
            }
        };
        let x = cb(x, "prep")?;
        let x = pool2(im, &cb(&x, "layer1")?)?;
        let x = (&x + cb(&cb(&x, "res1a")?, "res1b")?)?;
        let x = pool2(im, &cb(&x, "layer2")?)?;
        let x = pool2(im, &cb(&x, "layer3")?)?;
        let x = (&x + cb(&cb(&x, "res3a")?, "res3b")?)?;
        let x = x.flatten_from(2)?.max(2)?;
        x.matmul(&self.fc.as_tensor().t()?)? * 0.125
    }
}

struct R18 {
    c: HashMap<String, (Tensor, Tensor)>,
    fc_w: Tensor,
    fc_b: Tensor,
}

impl R18 {
    fn load(ws: &Weights) -> Result<Self> {
        let mut c = HashMap::new();
        c.insert("conv1".to_string(), folded(ws, "conv1", "bn1")?);
        for l in 1..=4 {
            for b in 0..2 {
                let pre = format!("layer{l}.{b}");
                c.insert(
                    format!("{pre}.conv1"),
                    folded(ws, &format!("{pre}.conv1"), &format!("{pre}.bn1"))?,
                );
                c.insert(
                    format!("{pre}.conv2"),
                    folded(ws, &format!("{pre}.conv2"), &format!("{pre}.bn2"))?,
                );
                if ws.contains_key(&format!("{pre}.downsample.0.weight")) {
                    c.insert(
                        format!("{pre}.ds"),
                        folded(
                            ws,
                            &format!("{pre}.downsample.0"),
                            &format!("{pre}.downsample.1"),
                        )?,
                    );
                }
            }
        }
        Ok(R18 {
            c,
            fc_w: get(ws, "fc.weight")?,
            fc_b: get(ws, "fc.bias")?,
        })
    }
    fn forward(&self, im: Impl, x: &Tensor) -> Result<Tensor> {
        let pp = |s: usize, p: usize| ConvParams {
            stride: s,
            padding: p,
            ..Default::default()
        };
        let mut x = cba(im, x, &self.c["conv1"], pp(2, 3), true)?;
        x = match im {
            Impl::Ours => max_pool2d(&x, 3, 2, 1)?,
            // post-ReLU input: zero padding acts as -inf padding
            Impl::Stock => x
                .pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2)?,
        };
        for l in 1..=4 {
            for b in 0..2 {
                let pre = format!("layer{l}.{b}");
                let s = if l > 1 && b == 0 { 2 } else { 1 };
                let y = cba(im, &x, &self.c[&format!("{pre}.conv1")], pp(s, 1), true)?;
                let y = cba(im, &y, &self.c[&format!("{pre}.conv2")], pp(1, 1), false)?;
                let sc = match self.c.get(&format!("{pre}.ds")) {
                    Some(wb) => cba(im, &x, wb, pp(s, 0), false)?,
                    None => x.clone(),
                };
                x = (y + sc)?.relu()?;
            }
        }
        let x = match im {
            Impl::Ours => channel_means(&x)?,
            Impl::Stock => x.mean((2, 3))?,
        };
        x.matmul(&self.fc_w.t()?)?.broadcast_add(&self.fc_b)
    }
}

fn bench_models(dir: &str, runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    let load = |f: &str| candle_core::safetensors::load(format!("{dir}/{f}.safetensors"), &dev);
    println!("\n== whole models ==");
    let w9 = load("r9")?;
    let d9 = load("x9")?;
    let x9 = get(&d9, "x")?;
    let y9 = get(&d9, "y")?;
    let ref9 = get(&load("ref9")?, "ref64")?;
    let m9 = R9Eval::load(&w9)?;
    for im in [Impl::Ours, Impl::Stock] {
        let out = m9.forward(im, &x9)?;
        let t = time(runs, || m9.forward(im, &x9).map(|_| ()))?;
        println!(
            "resnet9  fwd b256 {:<6}: {:>8.1} img/s  ({:.1} ms)  max rel err vs f64 ref {:.2e}",
            if im == Impl::Ours { "ours" } else { "candle" },
            256.0 / t,
            t * 1e3,
            rel_err(&out, &ref9)?
        );
    }
    if env_usize("R9FWD_ONLY", 0) != 0 {
        return Ok(());
    }
    let stock_train = env_usize("STOCK_TRAIN", 1) != 0;
    for im in [Impl::Ours, Impl::Stock] {
        if im == Impl::Stock && !stock_train {
            continue;
        }
        let m = R9Train::load(&w9)?;
        let mut opt = AdamW::new(
            m.vars(),
            ParamsAdamW {
                lr: 1e-3,
                weight_decay: 0.01,
                ..Default::default()
            },
        )?;
        let mut losses = Vec::new();
        let nrun = if im == Impl::Ours { runs } else { 1 };
        let t = time(nrun, || {
            let logits = m.forward(im, &x9)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y9)?;
            opt.backward_step(&loss)?;
            losses.push(loss.to_scalar::<f32>()?);
            Ok(())
        })?;
        println!(
            "resnet9  AdamW step b256 {:<6}: {:>6.2} s/step  losses {:?}",
            if im == Impl::Ours { "ours" } else { "candle" },
            t,
            losses
                .iter()
                .map(|l| (l * 1e4).round() / 1e4)
                .collect::<Vec<_>>()
        );
    }
    if env_usize("R18", 1) == 0 {
        return Ok(());
    }
    let w18 = load("r18")?;
    let x18 = get(&load("x18")?, "x")?;
    let ref18 = get(&load("ref18")?, "ref64")?;
    let m18 = R18::load(&w18)?;
    for im in [Impl::Ours, Impl::Stock] {
        let out = m18.forward(im, &x18)?;
        let t = time(runs.min(3), || m18.forward(im, &x18).map(|_| ()))?;
        println!(
            "resnet18 fwd 224 b64 {:<6}: {:>7.1} img/s  ({:.0} ms)  max rel err vs f64 ref {:.2e}",
            if im == Impl::Ours { "ours" } else { "candle" },
            64.0 / t,
            t * 1e3,
            rel_err(&out, &ref18)?
        );
    }
    Ok(())
}

fn bench_stats(runs: usize) -> Result<()> {
    let x = Tensor::randn(0f32, 1., (256, 128, 16, 16), &Device::Cpu)?;
    let ours = time(runs, || {
        memprune::model::batch_norm::channel_stats(&x).map(|_| ())
    })?;
    let stock = time(runs, || {
        let _s = x.sum_keepdim((0, 2, 3))?;
        let _q = x.sqr()?.sum_keepdim((0, 2, 3))?;
        Ok(())
    })?;
    println!("\n== per-channel stats of 256x128x16x16 ==\nchannel_stats ours {:.1} ms, candle sum+sumsq {:.1} ms", ours * 1e3, stock * 1e3);
    Ok(())
}

#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

fn main() -> Result<()> {
    let runs = env_usize("RUNS", 5);
    // As the memprune binary does (MEMPRUNE_BLOCK_CACHE=0: the system allocator).
    memprune::block_cache::enable_from_env();
    println!(
        "threads: rayon {} / candle {}",
        rayon::current_num_threads(),
        candle_core::utils::get_num_threads()
    );
    let a = Tensor::randn(0f32, 1., (2048, 2048), &Device::Cpu)?;
    let t = time(runs, || a.matmul(&a).map(|_| ()))?;
    println!(
        "calibration: candle matmul 2048^3 {:.1} GFLOP/s (same run)",
        2.0 * 2048f64.powi(3) / t / 1e9
    );
    if env_usize("LAYERS", 1) != 0 {
        bench_layers(runs)?;
    }
    bench_stats(runs)?;
    if env_usize("MODELS", 1) != 0 {
        match std::env::var("BENCH_DATA") {
            Ok(dir) => bench_models(&dir, runs)?,
            Err(_) => println!("BENCH_DATA not set: whole-model figures skipped"),
        }
    }
    Ok(())
}
