//! LayerNorm and softmax over the last dimension with a backward pass, for training ViTs.
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` have no backward, and their
//! compositions from elementary ops take five to ten passes over the tensor (the attention
//! matrix is the largest tensor of a ViT step). These are one pass forward (f32 rows on the
//! CPU, parallel over rows) and a few tensor ops backward. Other dtypes and devices fall back
//! to the composed forms.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

/// Rows per rayon task: enough work per task to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => l.contiguous_offsets().map(|(a, b)| &v[a..b]),
        _ => None,
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "memprune-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some(x) = contiguous_f32(s, l) else {
            candle_core::bail!("softmax: f32 contiguous input expected")
        };
        let d = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = (v - m).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    o.iter_mut().for_each(|v| *v *= inv);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// dx = y * (dy - sum(dy * y)) over the last dimension ([`SoftmaxGrad`], one pass).
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxGrad)?))
    }
}

/// The backward of [`Softmax`] from its output `y` and the gradient `dy`, per row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "memprune-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        sy: &CpuStorage,
        ly: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some(y), Some(dy)) = (contiguous_f32(sy, ly), contiguous_f32(sd, ld)) else {
            candle_core::bail!("softmax backward: f32 contiguous inputs expected")
        };
        let d = ly.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(y.par_chunks(d * ROWS_PER_TASK))
            .zip(dy.par_chunks(d * ROWS_PER_TASK))
            .for_each(|((o, y), dy)| {
                for ((o, y), dy) in o.chunks_mut(d).zip(y.chunks(d)).zip(dy.chunks(d)) {
                    let s: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
                    for ((o, &y), &g) in o.iter_mut().zip(y).zip(dy) {
                        *o = y * (g - s);
                    }
                }
            });
        Ok((CpuStorage::F32(out), ly.shape().clone()))
    }
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "memprune-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some(x) = contiguous_f32(s, l) else {
            candle_core::bail!("gelu: f32 contiguous input expected")
        };
        let mut out = x.to_vec();
        out.par_chunks_mut(ELEMS_PER_TASK)
            .for_each(crate::model::vit_fused::gelu_in_place);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// dx = dy (Φ(x) + x φ(x)).
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluGrad)?))
    }
}

/// `dy · GELU'(x)` in one pass: the backward of [`Gelu`].
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "memprune-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some(x), Some(dy)) = (contiguous_f32(sx, lx), contiguous_f32(sd, ld)) else {
            candle_core::bail!("gelu backward: f32 contiguous inputs expected")
        };
        let mut out = dy.to_vec();
        out.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK))
            .for_each(|(o, x)| crate::model::vit_fused::gelu_grad_in_place(o, x));
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

/// Elements per rayon task of the element-wise ops.
const ELEMS_PER_TASK: usize = 1 << 14;

/// GELU, exact (erf) form, as timm's `nn.GELU()`, differentiable; on the CPU in f32 one
/// vectorised pass each way ([`crate::model::vit_fused::erf`]) instead of libm's `erff`
/// per value and a backward composed of six candle ops.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu_erf()
    }
}

struct LayerNorm {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "memprune-layer-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some(x), Some(w), Some(b)) = (
            contiguous_f32(sx, lx),
            contiguous_f32(sw, lw),
            contiguous_f32(sb, lb),
        ) else {
            candle_core::bail!("layer-norm: f32 contiguous inputs expected")
        };
        let d = w.len().max(1);
        let eps = self.eps as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    layer_norm_row(x, w, b, eps, o);
                }
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    /// With x̂ = (x - mean) rstd and g = dy w: dx = rstd (g - mean(g) - x̂ mean(g x̂)),
    /// dw = Σ dy x̂, db = Σ dy (sums over every row).
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let rows = x.elem_count() / d;
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            // One pass: dx, dw and db packed one after another.
            let packed = x.contiguous()?.apply_op3_no_bwd(
                &w.contiguous()?,
                &dy.contiguous()?,
                &LayerNormGrad { eps: self.eps },
            )?;
            let dx = packed.narrow(0, 0, rows * d)?.reshape(x.shape())?;
            let dw = packed.narrow(0, rows * d, d)?;
            let db = packed.narrow(0, rows * d + d, d)?;
            return Ok((Some(dx), Some(dw), Some(db)));
        }
        let x2 = x.reshape((rows, d))?;
        let dy2 = dy.reshape((rows, d))?;
        let mean = x2.mean_keepdim(1)?;
        let xc = x2.broadcast_sub(&mean)?;
        let rstd = (xc.sqr()?.mean_keepdim(1)? + self.eps)?.sqrt()?.recip()?;
        let xhat = xc.broadcast_mul(&rstd)?;
        let g = dy2.broadcast_mul(w)?;
        let gm = g.mean_keepdim(1)?;
        let gxm = (&g * &xhat)?.mean_keepdim(1)?;
        let dx = g
            .broadcast_sub(&gm)?
            .sub(&xhat.broadcast_mul(&gxm)?)?
            .broadcast_mul(&rstd)?
            .reshape(x.shape())?;
        let dw = (&dy2 * &xhat)?.sum(0)?;
        let db = dy2.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// One row of LayerNorm: `o = (x - mean) / sqrt(var + eps) * w + b`, biased variance.
pub(crate) fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, o: &mut [f32]) {
    let d = x.len();
    let mean = x.iter().sum::<f32>() / d as f32;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
    let rstd = 1.0 / (var + eps).sqrt();
    for i in 0..d {
        o[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/// The backward of [`LayerNorm`] in one pass over the rows of `x` and `dy`: the row's
/// statistics recomputed as the forward computes them, dx per row, and dw, db as sums of
/// per-block partial sums added in block order (the same bits for any thread count).
/// Output: dx (rows·d), dw (d), db (d), flat.
struct LayerNormGrad {
    eps: f64,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "memprune-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some(x), Some(w), Some(dy)) = (
            contiguous_f32(sx, lx),
            contiguous_f32(sw, lw),
            contiguous_f32(sd, ld),
        ) else {
            candle_core::bail!("layer-norm backward: f32 contiguous inputs expected")
        };
        let d = w.len().max(1);
        let eps = self.eps as f32;
        let mut out = vec![0f32; x.len() + 2 * d];
        let (dx, _) = out.split_at_mut(x.len());
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .zip(dy.par_chunks(d * ROWS_PER_TASK))
            .map(|((o, x), dy)| {
                // dw then db of this block of rows.
                let mut part = vec![0f32; 2 * d];
                let mut xhat = vec![0f32; d];
                for ((o, x), dy) in o.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)) {
                    let mean = x.iter().sum::<f32>() / d as f32;
                    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                    let rstd = 1.0 / (var + eps).sqrt();
                    let (mut gm, mut gxm) = (0f32, 0f32);
                    for i in 0..d {
                        xhat[i] = (x[i] - mean) * rstd;
                        let g = dy[i] * w[i];
                        gm += g;
                        gxm += g * xhat[i];
                    }
                    gm /= d as f32;
                    gxm /= d as f32;
                    for i in 0..d {
                        o[i] = (dy[i] * w[i] - gm - xhat[i] * gxm) * rstd;
                        part[i] += dy[i] * xhat[i];
                        part[d + i] += dy[i];
                    }
                }
                part
            })
            .collect();
        let sums = &mut out[x.len()..];
        for p in &partials {
            for (s, v) in sums.iter_mut().zip(p) {
                *s += v;
            }
        }
        let n = out.len();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

/// LayerNorm over the last dimension with weight `w` and bias `b`, differentiable.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, w, b, eps as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seeded(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::data::rng::Rng::from_key(&[seed]);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.uniform(-2.0, 2.0) as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Forward and every gradient agree with the same function composed of candle ops.
    #[test]
    fn layer_norm_matches_composed_ops() {
        let x = Var::from_tensor(&seeded(&[3, 5, 8], 1)).unwrap();
        let w = Var::from_tensor(&seeded(&[8], 2)).unwrap();
        let b = Var::from_tensor(&seeded(&[8], 3)).unwrap();
        let up = seeded(&[3, 5, 8], 4);
        let ours = layer_norm(&x, &w, &b, 1e-6).unwrap();
        let theirs = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-6).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-5);
        let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let (a, c) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(max_diff(a, c) < 1e-4, "{}", max_diff(a, c));
        }
    }

    #[test]
    fn gelu_matches_candles_gelu_erf() {
        let x = Var::from_tensor(&(seeded(&[4, 9, 33], 7) * 3.0).unwrap()).unwrap();
        let up = seeded(&[4, 9, 33], 8);
        let ours = gelu(&x).unwrap();
        let theirs = x.gelu_erf().unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6);
        let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn softmax_matches_composed_ops() {
        let x = Var::from_tensor(&seeded(&[2, 3, 7], 5)).unwrap();
        let up = seeded(&[2, 3, 7], 6);
        let ours = softmax_last_dim(&x).unwrap();
        let theirs = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6);
        let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
    }
}
