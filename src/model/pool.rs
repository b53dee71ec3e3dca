//! Max pooling for NCHW `f32` tensors on the CPU, with padding (as torchvision's
//! resnet stem needs) and a backward that routes each gradient to the first maximum of
//! its window (PyTorch's rule). Other devices/dtypes use candle's `max_pool2d`. Also the
//! conv followed by a 2x2 pool of ResNet9's pooled blocks, fused where the conv allows.

use crate::model::conv::{
    conv2d_bias_act, conv2d_bias_act_max_pool2_fused, cpu_slice, with_f32, ConvParams,
};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `max_pool2d(x, kernel, stride, padding)`, NCHW, padding counts as `-inf`.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if kernel == 0
        || stride == 0
        || h + 2 * padding < kernel
        || w + 2 * padding < kernel
        || padding * 2 > kernel
    {
        bail!("max_pool2d: bad geometry k={kernel} s={stride} p={padding} on {h}x{w}")
    }
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        // Candle's op has no padding: pad with -inf (which never wins a window) first.
        let x = if padding == 0 {
            x.clone()
        } else {
            let (n, c, h, w) = x.dims4()?;
            let side = |rows: usize, cols: usize| {
                Tensor::full(f32::NEG_INFINITY, (n, c, rows, cols), x.device())?.to_dtype(x.dtype())
            };
            let mid = Tensor::cat(&[&side(h, padding)?, x, &side(h, padding)?], 3)?;
            let full = side(padding, w + 2 * padding)?;
            Tensor::cat(&[&full, &mid, &full], 2)?
        };
        return x.max_pool2d_with_stride(kernel, stride);
    }
    x.contiguous()?.apply_op1(MaxPool {
        k: kernel,
        s: stride,
        p: padding,
    })
}

/// Inference: `max_pool2d(conv2d_bias_act(x, w, b, p, relu), 2, 2, 0)` (ResNet9's pooled
/// blocks), as one pass where the conv runs as Winograd
/// ([`conv2d_bias_act_max_pool2_fused`]), else the two ops one after the other: the same
/// bits either way.
pub fn conv2d_bias_act_max_pool2(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    p: ConvParams,
    relu: bool,
) -> Result<Tensor> {
    match conv2d_bias_act_max_pool2_fused(x, w, b, p, relu)? {
        Some(y) => Ok(y),
        None => max_pool2d(&conv2d_bias_act(x, w, b, p, relu)?, 2, 2, 0),
    }
}

struct MaxPool {
    k: usize,
    s: usize,
    p: usize,
}

impl MaxPool {
    fn out(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.p - self.k) / self.s + 1,
            (w + 2 * self.p - self.k) / self.s + 1,
        )
    }
    /// Calls `f(out_index, argmax_input_index, max)` for every output of one plane.
    #[inline]
    fn plane(&self, x: &[f32], h: usize, w: usize, mut f: impl FnMut(usize, usize, f32)) {
        let (oh, ow) = self.out(h, w);
        if self.k == 2 && self.s == 2 && self.p == 0 {
            for oy in 0..oh {
                let r0 = &x[2 * oy * w..][..w];
                let r1 = &x[(2 * oy + 1) * w..][..w];
                for ox in 0..ow {
                    let cands = [
                        (r0[2 * ox], 0),
                        (r0[2 * ox + 1], 1),
                        (r1[2 * ox], w),
                        (r1[2 * ox + 1], w + 1),
                    ];
                    let mut best = cands[0];
                    for c in &cands[1..] {
                        if c.0 > best.0 {
                            best = *c;
                        }
                    }
                    f(oy * ow + ox, 2 * oy * w + 2 * ox + best.1, best.0);
                }
            }
            return;
        }
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut bi) = (f32::NEG_INFINITY, usize::MAX);
                for i in 0..self.k {
                    let iy = (oy * self.s + i) as isize - self.p as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for j in 0..self.k {
                        let ix = (ox * self.s + j) as isize - self.p as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let idx = iy as usize * w + ix as usize;
                        let v = x[idx];
                        if v > best || bi == usize::MAX {
                            best = v;
                            bi = idx;
                        }
                    }
                }
                f(oy * ow + ox, bi, best);
            }
        }
    }
}

impl MaxPool {
    /// The forward's values only: `out[o]` = the window's maximum, found separably (along
    /// x per input row, then along y over those rows, which vectorises). Each pass keeps
    /// the first element of its window unless a later one is greater, so the result is
    /// [`MaxPool::plane`]'s bit for bit (NaNs and signed zeros included): the first
    /// maximum in row-major order.
    fn plane_values(&self, x: &[f32], h: usize, w: usize, rows: &mut [f32], out: &mut [f32]) {
        let (oh, ow) = self.out(h, w);
        let window = |o: usize, len: usize| {
            let lo = (o * self.s).saturating_sub(self.p);
            let hi = (o * self.s + self.k - self.p).min(len);
            (lo, hi)
        };
        let scan = |r: &[f32], ox: usize| {
            let (lo, hi) = window(ox, w);
            let mut acc = r[lo];
            for &v in &r[lo + 1..hi] {
                if v > acc {
                    acc = v;
                }
            }
            acc
        };
        // torchvision's stem (3, 2, 1): windows (2ox - 1, 2ox, 2ox + 1) = (odd[ox - 1],
        // even[ox], odd[ox]) of the row split by parity, the same scan but vectorised.
        let stem = self.k == 3 && self.s == 2 && self.p == 1;
        let half = w.div_ceil(2);
        let (mut even, mut odd) = (vec![0f32; half], vec![0f32; half]);
        for iy in 0..h {
            let r = &x[iy * w..][..w];
            let dst = &mut rows[iy * ow..][..ow];
            if stem && ow > 2 {
                for (q, (e, o)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                    *e = r[2 * q];
                    *o = if 2 * q + 1 < w { r[2 * q + 1] } else { 0.0 };
                }
                // Interior outputs: 1 <= ox with 2 ox + 1 < w.
                let hi = ow.min(w / 2);
                for ox in 1..hi {
                    let mut acc = odd[ox - 1];
                    if even[ox] > acc {
                        acc = even[ox];
                    }
                    if odd[ox] > acc {
                        acc = odd[ox];
                    }
                    dst[ox] = acc;
                }
                dst[0] = scan(r, 0);
                for (ox, d) in dst.iter_mut().enumerate().skip(hi.max(1)) {
                    *d = scan(r, ox);
                }
                continue;
            }
            if self.k == 2 && self.s == 2 && self.p == 0 {
                // ResNet9's pools: disjoint pairs, the same scan as a vectorisable select.
                for (d, pair) in dst.iter_mut().zip(r.chunks_exact(2)) {
                    *d = if pair[1] > pair[0] { pair[1] } else { pair[0] };
                }
                continue;
            }
            for (ox, d) in dst.iter_mut().enumerate() {
                *d = scan(r, ox);
            }
        }
        for oy in 0..oh {
            let (lo, hi) = window(oy, h);
            let dst = &mut out[oy * ow..][..ow];
            dst.copy_from_slice(&rows[lo * ow..][..ow]);
            for iy in lo + 1..hi {
                for (d, &v) in dst.iter_mut().zip(&rows[iy * ow..][..ow]) {
                    if v > *d {
                        *d = v;
                    }
                }
            }
        }
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "memprune-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = self.out(h, w);
        let xs = cpu_slice(s, l)?;
        let mut y = vec![0f32; n * c * oh * ow];
        if oh * ow > 0 {
            y.par_chunks_mut(oh * ow)
                .zip(xs.par_chunks(h * w))
                .with_min_len(8)
                .for_each_init(
                    || vec![0f32; h * ow],
                    |rows, (d, s)| self.plane_values(s, h, w, rows, d),
                );
        }
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let (oh, ow) = self.out(h, w);
        let dx = with_f32(arg, |xs| {
            with_f32(grad, |gs| {
                let mut dx = vec![0f32; n * c * h * w];
                if oh * ow > 0 {
                    dx.par_chunks_mut(h * w)
                        .zip(xs.par_chunks(h * w))
                        .zip(gs.par_chunks(oh * ow))
                        .with_min_len(8)
                        .for_each(|((d, s), g)| self.plane(s, h, w, |o, i, _| d[i] += g[o]));
                }
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, (n, c, h, w), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::MaxPool;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn the_separable_forward_gives_the_windowed_scans_bits() {
        // Values with ties, signed zeros and NaNs, where "first maximum" matters.
        let special = [0.0f32, -0.0, 1.0, 1.0, f32::NAN, -2.0, 3.5, -0.0];
        for (k, s, p) in [
            (3, 2, 1),
            (3, 1, 1),
            (2, 2, 0),
            (5, 2, 2),
            (3, 3, 0),
            (2, 1, 1),
        ] {
            for (h, w) in [
                (7, 7),
                (8, 5),
                (1, 3),
                (16, 16),
                (3, 1),
                (9, 6),
                (5, 4),
                (2, 2),
                (4, 9),
            ] {
                if h + 2 * p < k || w + 2 * p < k {
                    continue;
                }
                let x: Vec<f32> = (0..h * w).map(|i| special[(i * 5 + i / 3) % 8]).collect();
                let pool = MaxPool { k, s, p };
                let (oh, ow) = pool.out(h, w);
                let mut scan = vec![0f32; oh * ow];
                pool.plane(&x, h, w, |o, _, v| scan[o] = v);
                let mut rows = vec![0f32; h * ow];
                let mut sep = vec![0f32; oh * ow];
                pool.plane_values(&x, h, w, &mut rows, &mut sep);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&scan), bits(&sep), "k{k} s{s} p{p} on {h}x{w}");
            }
        }
    }

    #[test]
    fn the_fallback_for_other_devices_pads_with_minus_infinity_as_the_cpu_kernel() {
        // f64 takes the path other devices take (candle's op after -inf padding).
        let v: Vec<f32> = (0..2 * 3 * 7 * 7)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.5)
            .collect();
        let x = Tensor::from_vec(v, (2, 3, 7, 7), &Device::Cpu).unwrap();
        for (k, s, p) in [(3, 2, 1), (3, 1, 1), (2, 2, 0), (5, 2, 2)] {
            let fast = super::max_pool2d(&x, k, s, p).unwrap();
            let slow = super::max_pool2d(&x.to_dtype(DType::F64).unwrap(), k, s, p).unwrap();
            let a = fast.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = slow
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(fast.dims(), slow.dims(), "k{k} s{s} p{p}");
            assert_eq!(a, b, "k{k} s{s} p{p}");
        }
    }
}
