//! The ViT's inference kernels on the CPU in f32: a linear layer with its bias, GELU or
//! residual add done on the rows the product has just written (one pass, while they are
//! in cache), attention as one kernel per image, head and block of query rows (the scores,
//! their softmax and the weighted sum of the values, without a transpose or a copy of q, k
//! and v), LayerNorm over rows, and a branch-free erf and exp that the compiler vectorises.
//!
//! candle's path for the same block runs eleven graph ops: a bias broadcast, an exact-erf
//! GELU and each residual add are single-threaded passes over the whole tensor, q, k and v
//! are copied out of the qkv product and the heads transposed back, and libm's `erff` and
//! `expf` are called one value at a time. These kernels are used where no gradient is
//! needed (measuring, evaluating); training keeps candle's differentiable ops.
//!
//! Every row of every output is computed by the same operations in the same order whatever
//! the batch, the other rows and the thread count: products go through
//! [`crate::model::conv::sgemm`], whose columns (here: rows of the output) have the same
//! bits whatever the number of columns, and work is cut into fixed blocks of rows.

use crate::model::conv::{sgemm, SendPtr};
use gemm::Parallelism;
use rayon::prelude::*;

/// Rows of a linear layer's output per task: the product of a block and its epilogue stay
/// in the cache, and enough tasks for the threads.
const LINEAR_ROWS: usize = 128;

/// Query rows per attention task: their scores (rows x tokens) stay in the cache.
const QUERY_ROWS: usize = 64;

/// What a linear layer does to its rows after `x · wᵀ + b`.
pub(crate) enum Epilogue<'a> {
    None,
    /// GELU with the exact (erf) form, as timm's `nn.GELU()`.
    Gelu,
    /// Adds the rows of this tensor (rows, out): the residual stream.
    Residual(&'a [f32]),
}

/// A fresh vector of `n` floats that every kernel here writes in full before reading
/// (zeroing first would be one more pass over every activation of the forward).
#[allow(clippy::uninit_vec)]
fn uninit(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns and every caller writes all n values before
    // any is read (the block cache hands out recycled memory; fresh pages are zero).
    unsafe { v.set_len(n) };
    v
}

/// `y (rows, out) = x (rows, k) · wᵀ + b`, then `epilogue`, with `w` (out, k) row-major.
pub(crate) fn linear(
    x: &[f32],
    k: usize,
    w: &[f32],
    b: Option<&[f32]>,
    epilogue: Epilogue,
) -> Vec<f32> {
    let out = w.len() / k.max(1);
    let rows = x.len() / k.max(1);
    let mut y = uninit(rows * out);
    if out == 0 || rows == 0 {
        return y;
    }
    // w as column-major (k x out, each output's weights a column): the product reads it
    // in place, where a row-major w is packed again for every block of rows (5 % of a
    // ViT-Tiny forward).
    let mut wt = uninit(w.len());
    for (o, row) in w.chunks(k).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            wt[j * out + o] = v;
        }
    }
    y.par_chunks_mut(LINEAR_ROWS * out)
        .enumerate()
        .for_each(|(c, yc)| {
            let r0 = c * LINEAR_ROWS;
            let m = yc.len() / out;
            let mut prefilled = true;
            match (&epilogue, b) {
                (Epilogue::Residual(res), b) => {
                    let res = &res[r0 * out..(r0 + m) * out];
                    match b {
                        Some(b) => {
                            for (yr, rr) in yc.chunks_mut(out).zip(res.chunks(out)) {
                                for ((o, &r), &bb) in yr.iter_mut().zip(rr).zip(b) {
                                    *o = r + bb;
                                }
                            }
                        }
                        None => yc.copy_from_slice(res),
                    }
                }
                (_, Some(b)) => {
                    for yr in yc.chunks_mut(out) {
                        yr.copy_from_slice(b);
                    }
                }
                (_, None) => prefilled = false,
            }
            // yᵀ (out x m) = w (out x k) · xᵀ (k x m): a row of y is a column of the
            // product, whose bits do not depend on m.
            // SAFETY: every pointer and stride stays inside `w`, this block of `x` and `yc`.
            unsafe {
                sgemm(
                    out,
                    m,
                    k,
                    yc.as_mut_ptr(),
                    1,
                    out,
                    prefilled,
                    wt.as_ptr(),
                    1,
                    out,
                    x[r0 * k..].as_ptr(),
                    1,
                    k,
                    Parallelism::None,
                );
            }
            if let Epilogue::Gelu = epilogue {
                gelu_in_place(yc);
            }
        });
    y
}

/// Multi-head self-attention of `n` images of `t` tokens: `qkv` (n·t, 3·inner), as timm's
/// `qkv` linear writes it (q, k, v, each `heads` blocks of `inner / heads`), gives every
/// head's `softmax(q kᵀ / √d) v` side by side (n·t, inner), the input of `proj`.
pub(crate) fn attention(qkv: &[f32], n: usize, t: usize, heads: usize, inner: usize) -> Vec<f32> {
    let hd = inner / heads.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = uninit(n * t * inner);
    if out.is_empty() || t == 0 {
        return out;
    }
    let blocks = t.div_ceil(QUERY_ROWS);
    let dst = SendPtr(out.as_mut_ptr());
    let stride = 3 * inner;
    thread_local! {
        /// The scores of one task: reused, where a fresh vector per task made the
        /// allocator return and re-fault its pages.
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    (0..n * heads * blocks).into_par_iter().for_each(|task| {
        SCORES.with(|cell| {
            // A task stolen while this thread waits inside another would find the cell
            // borrowed: it takes a fresh vector.
            let mut fresh = Vec::new();
            let mut held = cell.try_borrow_mut();
            let scores: &mut Vec<f32> = match held.as_mut() {
                Ok(v) => v,
                Err(_) => &mut fresh,
            };
            if scores.len() < QUERY_ROWS * t {
                scores.resize(QUERY_ROWS * t, 0.0);
            }
            let (img, rest) = (task / (heads * blocks), task % (heads * blocks));
            let (h, blk) = (rest / blocks, rest % blocks);
            let q0 = blk * QUERY_ROWS;
            let rows = QUERY_ROWS.min(t - q0);
            let base = img * t * stride;
            let q = &qkv[base + q0 * stride + h * hd..];
            let k = &qkv[base + inner + h * hd..];
            let v = &qkv[base + 2 * inner + h * hd..];
            let s = &mut scores[..rows * t];
            // SAFETY: q, k and v rows stay inside this image's rows of `qkv`; `s` holds
            // rows x t; the output rows (img, q0..q0+rows) and columns h·hd.. are written by
            // this task only.
            unsafe {
                // s (rows x t) = q (rows x hd) · kᵀ (hd x t)
                sgemm(
                    rows,
                    t,
                    hd,
                    s.as_mut_ptr(),
                    t,
                    1,
                    false,
                    q.as_ptr(),
                    stride,
                    1,
                    k.as_ptr(),
                    1,
                    stride,
                    Parallelism::None,
                );
                for row in s.chunks_mut(t) {
                    softmax_scaled(row, scale);
                }
                // out (rows x hd) = s (rows x t) · v (t x hd)
                let o = out_ptr(&dst).add((img * t + q0) * inner + h * hd);
                sgemm(
                    rows,
                    hd,
                    t,
                    o,
                    inner,
                    1,
                    false,
                    s.as_ptr(),
                    t,
                    1,
                    v.as_ptr(),
                    stride,
                    1,
                    Parallelism::None,
                );
            }
        })
    });
    out
}

/// The pointer of `p` (a function, so that a closure captures the whole `Send` wrapper).
fn out_ptr(p: &SendPtr) -> *mut f32 {
    p.0
}

/// LayerNorm of every row of `x` (rows of `w.len()`), timm's: biased variance, `eps`
/// inside the square root.
pub(crate) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len().max(1);
    let mut out = uninit(x.len());
    out.par_chunks_mut(d * 64)
        .zip(x.par_chunks(d * 64))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                crate::model::vit_ops::layer_norm_row(x, w, b, eps, o);
            }
        });
    out
}

/// The mean over tokens of `x` (n, t, d): (n, d), summed in token order.
pub(crate) fn token_mean(x: &[f32], n: usize, t: usize) -> Vec<f32> {
    let d = x.len() / (n * t).max(1);
    let mut out = vec![0f32; n * d];
    let inv = 1.0 / t.max(1) as f32;
    out.par_chunks_mut(d.max(1))
        .zip(x.par_chunks((t * d).max(1)))
        .for_each(|(o, x)| {
            for row in x.chunks(d) {
                for (a, &v) in o.iter_mut().zip(row) {
                    *a += v;
                }
            }
            o.iter_mut().for_each(|a| *a *= inv);
        });
    out
}

/// act_u of attention heads: the mean over tokens of each head's L2 norm, from the heads'
/// output side by side `x` (n, t, heads·hd): (n, heads).
pub(crate) fn head_norm_mean(x: &[f32], n: usize, t: usize, heads: usize) -> Vec<f32> {
    let inner = x.len() / (n * t).max(1);
    let hd = inner / heads.max(1);
    let mut out = vec![0f32; n * heads];
    let inv = 1.0 / t.max(1) as f32;
    out.par_chunks_mut(heads.max(1))
        .zip(x.par_chunks((t * inner).max(1)))
        .for_each(|(o, x)| {
            for row in x.chunks(inner) {
                for (a, head) in o.iter_mut().zip(row.chunks(hd)) {
                    *a += head.iter().map(|v| v * v).sum::<f32>().sqrt();
                }
            }
            o.iter_mut().for_each(|a| *a *= inv);
        });
    out
}

/// `softmax(scale · row)` in place (`scale > 0`).
fn softmax_scaled(row: &mut [f32], scale: f32) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let shift = m * scale;
    exp_shifted_in_place(row, scale, shift);
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Compiles `$body` (an `#[inline(always)]` fn over a slice) for AVX-512, AVX2 and the
/// baseline, picked at run time. No lane width changes a bit: the operations are the same
/// per value (no fused multiply-add: Rust does not contract `a * b + c`).
macro_rules! vectorised {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn narrow($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { wide($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

#[inline(always)]
fn gelu_body(y: &mut [f32]) {
    for v in y.iter_mut() {
        *v = gelu(*v);
    }
}

#[inline(always)]
fn exp_shifted_body(y: &mut [f32], scale: f32, shift: f32) {
    for v in y.iter_mut() {
        *v = exp(*v * scale - shift);
    }
}

#[inline(always)]
fn gelu_grad_body(dy: &mut [f32], x: &[f32]) {
    for (d, &x) in dy.iter_mut().zip(x) {
        *d *= gelu_grad(x);
    }
}

vectorised!(gelu_in_place, gelu_body, (y: &mut [f32]));
vectorised!(gelu_grad_in_place, gelu_grad_body, (dy: &mut [f32], x: &[f32]));
vectorised!(exp_shifted_in_place, exp_shifted_body, (y: &mut [f32], scale: f32, shift: f32));

/// GELU, exact form: `x Φ(x) = x (1 + erf(x / √2)) / 2`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's derivative: `Φ(x) + x φ(x)`.
#[inline(always)]
pub(crate) fn gelu_grad(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

/// erf in f32 without a branch or a table: the odd rational approximation on [-4, 4] that
/// Eigen and XLA use for f32 (outside, erf is ±1 to f32 precision); within 1e-6 of libm's
/// `erff` (tested).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

/// exp in f32 without a branch or a table (Cephes' `expf`: 2ⁿ times a degree-6 polynomial
/// on [-ln2/2, ln2/2]); within 3 ulp of exp on [-87, 88] (tested); the input is clamped
/// to that range (e⁻⁸⁷ is 1.6e-38: a softmax weight of nothing).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let nf = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let n = nf as i32;
    let r = x - nf * 0.693_359_4 - nf * -2.121_944_4e-4;
    let mut p = r * 1.987_569_1e-4 + 1.398_199_9e-3;
    p = r * p + 8.333_452e-3;
    p = r * p + 4.166_579_6e-2;
    p = r * p + 1.666_666_5e-1;
    p = r * p + 0.5;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits(((n + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_close_to_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) - libm_erf(x)).abs());
        }
        assert!(worst < 1e-6, "{worst}");
    }

    fn libm_erf(x: f32) -> f32 {
        // f64 reference through the complementary series is overkill: candle's erf_f64
        // (libm) is exact to f64, enough to judge an f32 approximation.
        candle_core::cpu::erf::erf_f64(x as f64) as f32
    }

    #[test]
    fn exp_is_close_to_libm() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "{worst}");
        assert!(exp(-200.0) < 1e-37);
    }

    /// The fused linear layer equals the plain product, bias and epilogue.
    #[test]
    fn linear_matches_the_plain_product() {
        let (rows, k, out) = (300, 37, 29);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w: Vec<f32> = (0..out * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 / 10.0).collect();
        let res: Vec<f32> = (0..rows * out).map(|i| (i % 3) as f32).collect();
        let plain = |r: usize, o: usize| -> f32 {
            (0..k).map(|j| x[r * k + j] * w[o * k + j]).sum::<f32>() + b[o]
        };
        let g = linear(&x, k, &w, Some(&b), Epilogue::Gelu);
        let a = linear(&x, k, &w, Some(&b), Epilogue::Residual(&res));
        for r in 0..rows {
            for o in 0..out {
                let p = plain(r, o);
                assert!((g[r * out + o] - gelu(p)).abs() < 1e-4);
                assert!((a[r * out + o] - (p + res[r * out + o])).abs() < 1e-4);
            }
        }
        // A row has the same bits alone as among others.
        let one = linear(&x[5 * k..6 * k], k, &w, Some(&b), Epilogue::Gelu);
        assert_eq!(one, g[5 * out..6 * out]);
    }

    /// Attention equals softmax(q kᵀ / √d) v computed plainly, and an image's output does
    /// not depend on the other images.
    #[test]
    fn attention_matches_the_plain_formula() {
        let (n, t, heads, inner) = (2, 70, 2, 8);
        let hd = inner / heads;
        let qkv: Vec<f32> = (0..n * t * 3 * inner)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 6.0)
            .collect();
        let out = attention(&qkv, n, t, heads, inner);
        let at = |i: usize, tok: usize, part: usize, h: usize, j: usize| {
            qkv[(i * t + tok) * 3 * inner + part * inner + h * hd + j]
        };
        for i in 0..n {
            for h in 0..heads {
                for a in 0..t {
                    let s: Vec<f64> = (0..t)
                        .map(|c| {
                            (0..hd)
                                .map(|j| at(i, a, 0, h, j) as f64 * at(i, c, 1, h, j) as f64)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for j in 0..hd {
                        let want: f64 = (0..t).map(|c| e[c] / z * at(i, c, 2, h, j) as f64).sum();
                        let got = out[(i * t + a) * inner + h * hd + j] as f64;
                        assert!((got - want).abs() < 1e-5, "{got} {want}");
                    }
                }
            }
        }
        let second = attention(&qkv[t * 3 * inner..], 1, t, heads, inner);
        assert_eq!(second, out[t * inner..]);
    }
}
