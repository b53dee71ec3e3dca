//! BatchNorm for NCHW `f32` tensors on the CPU: training mode with a fused backward,
//! eval mode as one per-channel affine pass, per-channel statistics, and folding into
//! a preceding convolution. Other devices and dtypes use compositions of candle ops.

use crate::model::conv::{cpu_slice, with_f32};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

fn fast(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Per-channel mean and biased variance over (N, H, W) of channel `c` of an NCHW slice,
/// computed in two passes over the channel (which stays in cache between them).
fn chan_mean_var(xs: &[f32], n: usize, c: usize, hw: usize, ch: usize) -> (f64, f64) {
    let m = (n * hw) as f64;
    let mut s = 0f64;
    for b in 0..n {
        s += crate::model::conv::sum_f32(&xs[(b * c + ch) * hw..][..hw]) as f64;
    }
    let mean = s / m;
    let mf = mean as f32;
    let mut q = 0f64;
    for b in 0..n {
        let row = &xs[(b * c + ch) * hw..][..hw];
        let mut acc = [0f32; 16];
        let mut it = row.chunks_exact(16);
        for chk in &mut it {
            for k in 0..16 {
                let d = chk[k] - mf;
                acc[k] += d * d;
            }
        }
        let mut r: f32 = it.remainder().iter().map(|v| (v - mf) * (v - mf)).sum();
        for a in acc {
            r += a;
        }
        q += r as f64;
    }
    (mean, q / m)
}

/// Per-channel mean and biased variance over (N, H, W) of an NCHW tensor, as two
/// (C,) tensors (not differentiable). The same statistics batch norm uses.
pub fn channel_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    if !fast(x) {
        let mean = x.mean_keepdim((0, 2, 3))?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean((0, 2, 3))?;
        return Ok((mean.flatten_all()?, var));
    }
    let hw = h * w;
    let stats: Vec<(f64, f64)> = with_f32(x, |xs| {
        (0..c)
            .into_par_iter()
            .map(|ch| chan_mean_var(xs, n, c, hw, ch))
            .collect()
    })?;
    let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
    let var: Vec<f32> = stats.iter().map(|s| s.1 as f32).collect();
    Ok((
        Tensor::from_vec(mean, c, x.device())?,
        Tensor::from_vec(var, c, x.device())?,
    ))
}

/// Training-mode batch norm of an NCHW tensor: normalizes each channel with the
/// statistics of this batch over (N, H, W), then `y = gamma * x_hat + beta`.
///
/// Returns `(y, batch_mean, batch_var)` where `batch_var` is the **biased** variance
/// (divided by `N*H*W`, the one used to normalize). For PyTorch-style running stats
/// use the unbiased `batch_var * m / (m - 1)`, `m = N*H*W`. The statistics are
/// detached; `y` is differentiable in `x`, `gamma` and `beta` with a fused backward
/// (one pass for the two reductions, one for `dx`). With `relu`, `y = max(0, ...)` in the
/// same pass, and the backward masks by `y > 0`: no separate ReLU node, whose candle
/// backward costs five full-size passes.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _, _) = x.dims4()?;
    if gamma.dims() != [c] || beta.dims() != [c] {
        bail!(
            "batch_norm_train: gamma {:?} / beta {:?} for {c} channels",
            gamma.dims(),
            beta.dims()
        )
    }
    if !(fast(x) && gamma.dtype() == DType::F32 && beta.dtype() == DType::F32) {
        let mean = x.mean_keepdim((0, 2, 3))?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
        let y = xc
            .broadcast_div(&(&var + eps)?.sqrt()?)?
            .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
            .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
        let y = if relu { y.relu()? } else { y };
        return Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()));
    }
    let stats = Arc::new(Mutex::new(None));
    let op = BnTrain {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let (mean, var) = match stats.lock().unwrap().as_ref() {
        Some(s) => (s.mean.clone(), s.var.clone()),
        None => bail!("batch_norm_train: statistics missing"),
    };
    Ok((
        y,
        Tensor::from_vec(mean, c, x.device())?,
        Tensor::from_vec(var, c, x.device())?,
    ))
}

struct BnStats {
    mean: Vec<f32>,
    var: Vec<f32>,
    invstd: Vec<f32>,
}

struct BnTrain {
    eps: f64,
    relu: bool,
    stats: Arc<Mutex<Option<BnStats>>>,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "memprune-batch-norm-train"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let xs = cpu_slice(s1, l1)?;
        let gamma = cpu_slice(s2, l2)?;
        let beta = cpu_slice(s3, l3)?;
        let mut y = vec![0f32; xs.len()];
        let yp = SendPtr(y.as_mut_ptr());
        let (eps, relu) = (self.eps, self.relu);
        let st: Vec<(f32, f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = chan_mean_var(xs, n, c, hw, ch);
                let invstd = 1.0 / (var + eps).sqrt();
                let scale = gamma[ch] * invstd as f32;
                let shift = beta[ch] - mean as f32 * scale;
                for b in 0..n {
                    let off = (b * c + ch) * hw;
                    // SAFETY: each (b, ch) plane is written by exactly one task.
                    let dst = unsafe { std::slice::from_raw_parts_mut(yp.get().add(off), hw) };
                    if relu {
                        for (d, s) in dst.iter_mut().zip(&xs[off..off + hw]) {
                            *d = (s * scale + shift).max(0.0);
                        }
                    } else {
                        for (d, s) in dst.iter_mut().zip(&xs[off..off + hw]) {
                            *d = s * scale + shift;
                        }
                    }
                }
                (mean as f32, var as f32, invstd as f32)
            })
            .collect();
        *self.stats.lock().unwrap() = Some(BnStats {
            mean: st.iter().map(|s| s.0).collect(),
            var: st.iter().map(|s| s.1).collect(),
            invstd: st.iter().map(|s| s.2).collect(),
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self.stats.lock().unwrap();
        let Some(st) = guard.as_ref() else {
            bail!("batch_norm_train: backward before forward")
        };
        let need_dx = x.track_op();
        let (dx, dg, dbeta) = with_f32(x, |xs| {
            with_f32(gamma, |gs| {
                with_f32(grad, |dys| {
                    if self.relu {
                        with_f32(res, |ys| {
                            bn_bwd(xs, gs, dys, Some(ys), x.dims(), st, need_dx)
                        })
                    } else {
                        Ok(bn_bwd(xs, gs, dys, None, x.dims(), st, need_dx))
                    }
                })
            })
        })????;
        let dev = x.device();
        let dx = if need_dx {
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        Ok((
            dx,
            Some(Tensor::from_vec(dg, gamma.shape(), dev)?),
            Some(Tensor::from_vec(dbeta, gamma.shape(), dev)?),
        ))
    }
}

/// `dy` of the plane at `off` (`hw` values), masked by the ReLU output `ys` into `buf`
/// when there is one.
fn masked_plane<'a>(
    dys: &'a [f32],
    ys: Option<&[f32]>,
    off: usize,
    hw: usize,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    let dy = &dys[off..off + hw];
    match ys {
        Some(ys) => {
            buf.clear();
            buf.extend(
                dy.iter()
                    .zip(&ys[off..off + hw])
                    .map(|(d, y)| if *y > 0.0 { *d } else { 0.0 }),
            );
            buf
        }
        None => dy,
    }
}

/// The fused backward of [`BnTrain`]: per channel, one pass for `sum(dy)` and
/// `sum(dy * (x - mean))`, one for `dx`; `ys` (the ReLU'd output) masks `dy` when given.
fn bn_bwd(
    xs: &[f32],
    gs: &[f32],
    dys: &[f32],
    ys: Option<&[f32]>,
    dims: &[usize],
    st: &BnStats,
    need_dx: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, hw) = (dims[0], dims[1], dims[2] * dims[3]);
    let m = (n * hw) as f32;
    let mut dx = if need_dx {
        vec![0f32; xs.len()]
    } else {
        Vec::new()
    };
    let dxp = SendPtr(dx.as_mut_ptr());
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut buf = Vec::with_capacity(if ys.is_some() { hw } else { 0 });
            let mean = st.mean[ch];
            let invstd = st.invstd[ch];
            let (mut sdy, mut sdyx) = (0f64, 0f64);
            for b in 0..n {
                let off = (b * c + ch) * hw;
                let xr = &xs[off..off + hw];
                let dr = masked_plane(dys, ys, off, hw, &mut buf);
                let mut a = [0f32; 8];
                let mut q = [0f32; 8];
                let mut it = xr.chunks_exact(8).zip(dr.chunks_exact(8));
                for (xc, dc) in &mut it {
                    for k in 0..8 {
                        a[k] += dc[k];
                        q[k] += dc[k] * (xc[k] - mean);
                    }
                }
                let rem = hw - hw % 8;
                let (mut ra, mut rq) = (0f32, 0f32);
                for k in rem..hw {
                    ra += dr[k];
                    rq += dr[k] * (xr[k] - mean);
                }
                sdy += (a.iter().sum::<f32>() + ra) as f64;
                sdyx += (q.iter().sum::<f32>() + rq) as f64;
            }
            let (sdy, sdyx) = (sdy as f32, sdyx as f32);
            if need_dx {
                let k1 = gs[ch] * invstd;
                let mdy = sdy / m;
                let k2 = sdyx * invstd * invstd / m;
                for b in 0..n {
                    let off = (b * c + ch) * hw;
                    // SAFETY: one task per channel writes its planes.
                    let dst = unsafe { std::slice::from_raw_parts_mut(dxp.get().add(off), hw) };
                    let dr = masked_plane(dys, ys, off, hw, &mut buf);
                    for ((d, xv), dv) in dst.iter_mut().zip(&xs[off..off + hw]).zip(dr) {
                        *d = k1 * (dv - mdy - (xv - mean) * k2);
                    }
                }
            }
            (sdyx * invstd, sdy)
        })
        .collect();
    (
        dx,
        sums.iter().map(|s| s.0).collect(),
        sums.iter().map(|s| s.1).collect(),
    )
}

/// Eval-mode batch norm with running statistics, as one per-channel affine pass
/// (differentiable in `x` only).
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (scale, shift) = bn_scale_shift(gamma, beta, mean, var, eps)?;
    channel_affine(x, &scale, &shift)
}

/// `(scale, shift)` with `bn(x) = x * scale + shift` per channel.
pub fn bn_scale_shift(
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let scale = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
    let shift = (beta - mean.broadcast_mul(&scale)?)?;
    Ok((scale, shift))
}

/// Folds eval-mode batch norm into the preceding convolution: returns `(w', b')` with
/// `conv(x, w') + b' = bn(conv(x, w) + b)`.
pub fn fold_batch_norm(
    w: &Tensor,
    b: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let (scale, shift) = bn_scale_shift(gamma, beta, mean, var, eps)?;
    let co = w.dim(0)?;
    let w2 = w.broadcast_mul(&scale.reshape((co, 1, 1, 1))?)?;
    let b2 = match b {
        Some(b) => (b.broadcast_mul(&scale)? + shift)?,
        None => shift,
    };
    Ok((w2, b2))
}

/// `y[n, c] = x[n, c] * scale[c] + shift[c]` for NCHW `x`, one pass.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    if !fast(x) {
        return x
            .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?);
    }
    let scale = scale.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let shift = shift.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    x.contiguous()?.apply_op1(ChannelAffine { scale, shift })
}

struct ChannelAffine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "memprune-channel-affine"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l.shape().dims4()?;
        let hw = (h * w).max(1);
        let xs = cpu_slice(s, l)?;
        let mut y = vec![0f32; xs.len()];
        y.par_chunks_mut(hw)
            .zip(xs.par_chunks(hw))
            .enumerate()
            .with_min_len(16)
            .for_each(|(i, (d, s))| {
                let (a, b) = (self.scale[i % c], self.shift[i % c]);
                d.iter_mut().zip(s).for_each(|(d, s)| *d = s * a + b);
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let c = arg.dim(1)?;
        let zero = Tensor::zeros(c, DType::F32, arg.device())?;
        let scale = Tensor::from_vec(self.scale.clone(), c, arg.device())?;
        Ok(Some(channel_affine(grad, &scale, &zero)?))
    }
}
