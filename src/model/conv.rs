//! The convolution every memprune model runs through.
//!
//! Inputs and outputs are NCHW candle tensors. This is the single place the models
//! call, so a faster kernel replaces it for measure, train, probe and fine-tune at once.
//!
//! On the CPU with `f32`, the convolution lowers to GEMM through the `gemm` crate:
//! a chunk of `nb` images is unfolded (im2col) into a `(C_in*KH*KW, nb*OH*OW)` matrix
//! `col`, and per group `Y = W · col`; bias and ReLU are applied in the pass that
//! scatters `Y` back to NCHW. The backward pass is two GEMMs per chunk as well
//! (`dW += dY · colᵀ`, `dcol = Wᵀ · dY` followed by col2im), never a direct
//! transposed convolution. Chunks run in parallel on rayon's pool (so
//! `RAYON_NUM_THREADS` applies), each with a single-threaded GEMM; when there are too
//! few chunks to share, chunks run one by one and the GEMM itself is parallel.
//!
//! Two forward algorithms do less arithmetic where im2col's GEMM would waste it:
//! [`winograd`] (F(2x2, 3x3), 2.25x fewer multiplications for 3x3 kernels of stride 1) and
//! [`small_map`] (maps with fewer pixels than kernel taps, as one dense product: 9x fewer on
//! a 1x1 map). The backward pass is always im2col's. `MEMPRUNE_CONV=im2col` sends every
//! forward through im2col, `MEMPRUNE_CONV=stock` every convolution through candle.
//!
//! Other devices and dtypes fall back to candle's stock `conv2d`.

mod small_map;
mod winograd;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage,
    Tensor,
};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Geometry of a 2-D convolution (square kernels, symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        ConvParams {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// `y = conv(x, w) + b`, `x`: (N, C_in, H, W), `w`: (C_out, C_in / groups, KH, KW),
/// `b`: (C_out,). Differentiable in `x`, `w` and `b`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: ConvParams) -> Result<Tensor> {
    conv_impl(x, w, b, p, false, None)
}

/// Inference: `relu(conv(x, w) + b)` when `relu`, else `conv(x, w) + b`. The models
/// fold BatchNorm into `w` and `b` before calling this. Bias and ReLU are applied in
/// the same pass that writes the GEMM result out (and the op is still differentiable).
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    p: ConvParams,
    relu: bool,
) -> Result<Tensor> {
    conv_impl(x, w, Some(b), p, relu, None)
}

/// Inference: [`conv2d_bias_act`] and a 2x2 max pool of stride 2 in one pass, where the
/// conv runs as Winograd F(2x2, 3x3) (its 2x2 output tiles are the pool's windows) and no
/// gradient is tracked (the fused op has no backward); `None` elsewhere. Only the pooled
/// map is written. `pool::conv2d_bias_act_max_pool2` falls back to the two
/// ops.
pub fn conv2d_bias_act_max_pool2_fused(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    p: ConvParams,
    relu: bool,
) -> Result<Option<Tensor>> {
    let fused = use_fast_path(x, w, Some(b))
        && !(x.track_op() || w.track_op() || b.track_op())
        && b.dims() == [w.dim(0)?]
        && Geom::new(x.dims(), w.dims(), p)
            .is_ok_and(|g| algorithm(&g) == ForwardAlgorithm::Winograd && g.oh >= 2 && g.ow >= 2);
    if !fused {
        return Ok(None);
    }
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    Ok(Some(x.apply_op3(&w, &b, ConvPoolOp3 { p, relu })?))
}

/// [`conv2d_bias_act`] with the forward algorithm given instead of chosen (an algorithm
/// that does not apply to the geometry falls back to im2col): for benchmarks and tests
/// that compare the algorithms in one process.
pub fn conv2d_bias_act_using(
    algorithm: ForwardAlgorithm,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    p: ConvParams,
    relu: bool,
) -> Result<Tensor> {
    conv_impl(x, w, Some(b), p, relu, Some(algorithm))
}

/// Candle's own convolution (the reference and the fallback for other devices/dtypes).
pub fn conv2d_stock(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: ConvParams) -> Result<Tensor> {
    let y = x.conv2d(w, p.padding, p.stride, p.dilation, p.groups)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// `MEMPRUNE_CONV=stock` sends every convolution through candle's stock op: the way to
/// check any memprune result against the reference implementation.
pub fn stock_forced() -> bool {
    conv_env() == Some("stock")
}

/// `MEMPRUNE_CONV=im2col`: every forward through im2col and one GEMM (no Winograd, no
/// small-map product), the baseline the faster algorithms are measured and tested against.
fn im2col_forced() -> bool {
    conv_env() == Some("im2col")
}

fn conv_env() -> Option<&'static str> {
    static CONV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CONV.get_or_init(|| std::env::var("MEMPRUNE_CONV").ok())
        .as_deref()
}

/// The forward algorithms of the CPU op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAlgorithm {
    /// im2col and one GEMM: any geometry.
    Im2col,
    /// Winograd F(2x2, 3x3): 3x3 kernels of stride 1.
    Winograd,
    /// One dense product: maps with fewer pixels than kernel taps.
    SmallMap,
}

/// The forward algorithm the CPU op uses for this geometry: chosen from the shapes alone
/// (never the batch size or thread count), so a given layer always rounds the same way.
pub fn forward_algorithm(
    x_dims: &[usize],
    w_dims: &[usize],
    p: ConvParams,
) -> Result<ForwardAlgorithm> {
    let g = Geom::new(x_dims, w_dims, p)?;
    Ok(algorithm(&g))
}

fn algorithm(g: &Geom) -> ForwardAlgorithm {
    if im2col_forced() {
        ForwardAlgorithm::Im2col
    } else if small_map::applies(g) {
        ForwardAlgorithm::SmallMap
    } else if winograd::applies(g) {
        ForwardAlgorithm::Winograd
    } else {
        ForwardAlgorithm::Im2col
    }
}

fn use_fast_path(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    !stock_forced()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.is_none_or(|b| b.dtype() == DType::F32)
}

fn conv_impl(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    p: ConvParams,
    relu: bool,
    alg: Option<ForwardAlgorithm>,
) -> Result<Tensor> {
    if !use_fast_path(x, w, b) {
        let y = conv2d_stock(x, w, b, p)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    // Validate the geometry up front so errors surface with the caller's shapes.
    Geom::new(x.dims(), w.dims(), p)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        None => x.apply_op2(&w, ConvOp2 { p, relu, alg }),
        Some(b) => {
            if b.dims() != [w.dim(0)?] {
                bail!(
                    "conv2d: bias shape {:?} for {} output channels",
                    b.dims(),
                    w.dim(0)?
                )
            }
            let b = b.contiguous()?;
            x.apply_op3(&w, &b, ConvOp3 { p, relu, alg })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Geometry

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    s: usize,
    pad: usize,
    d: usize,
    g: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(xd: &[usize], wd: &[usize], p: ConvParams) -> Result<Geom> {
        if xd.len() != 4 || wd.len() != 4 {
            bail!("conv2d: expected 4-d input and kernel, got {xd:?} and {wd:?}")
        }
        let (n, c, h, w) = (xd[0], xd[1], xd[2], xd[3]);
        let (co, cig, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
        let g = p.groups;
        if g == 0 || p.stride == 0 || p.dilation == 0 {
            bail!("conv2d: stride, dilation and groups must be positive: {p:?}")
        }
        if c % g != 0 || co % g != 0 || cig * g != c {
            bail!("conv2d: input {xd:?} / kernel {wd:?} do not match groups {g}")
        }
        let ekh = p.dilation * (kh - 1) + 1;
        let ekw = p.dilation * (kw - 1) + 1;
        if h + 2 * p.padding < ekh || w + 2 * p.padding < ekw || kh == 0 || kw == 0 {
            bail!("conv2d: kernel {wd:?} larger than padded input {xd:?} ({p:?})")
        }
        let oh = (h + 2 * p.padding - ekh) / p.stride + 1;
        let ow = (w + 2 * p.padding - ekw) / p.stride + 1;
        Ok(Geom {
            n,
            c,
            h,
            w,
            co,
            kh,
            kw,
            s: p.stride,
            pad: p.padding,
            d: p.dilation,
            g,
            oh,
            ow,
        })
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Rows of `col` per group.
    fn kg(&self) -> usize {
        self.c / self.g * self.kh * self.kw
    }
    fn ktot(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn cog(&self) -> usize {
        self.co / self.g
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == 1 && self.pad == 0
    }
    /// Images per chunk: enough columns for an efficient GEMM, and enough chunks for
    /// every thread.
    fn chunk_images(&self, nt: usize) -> usize {
        const TARGET_COLS: usize = 1024;
        let nb = TARGET_COLS.div_ceil(self.p()).clamp(1, self.n.max(1));
        nb.min(self.n.div_ceil(nt)).max(1)
    }
    /// Output-column range `[lo, hi)` along one axis whose input index
    /// `o * s + off` falls inside `[0, len)`.
    #[inline]
    fn valid_range(&self, off: isize, len: usize, out: usize) -> (usize, usize) {
        let s = self.s as isize;
        let lo = if off < 0 { ((-off) + s - 1) / s } else { 0 } as usize;
        let last = len as isize - 1 - off;
        let hi = if last < 0 { 0 } else { (last / s + 1) as usize };
        let lo = lo.min(out);
        (lo, hi.min(out).max(lo))
    }
}

// ---------------------------------------------------------------------------------------
// Scratch buffers and small helpers

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two thread-local scratch buffers of at least `la` and `lb` floats
/// (contents unspecified). Reused across calls so large buffers are not re-faulted.
fn with_scratch<R>(la: usize, lb: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            if a.len() < la {
                a.resize(la, 0.0);
            }
            if b.len() < lb {
                b.resize(lb, 0.0);
            }
            f(&mut a[..la], &mut b[..lb])
        }
        // Re-entered (a rayon task stolen while this thread waited): use fresh buffers.
        Err(_) => f(&mut vec![0.0; la], &mut vec![0.0; lb]),
    })
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// # Safety
    /// The caller guarantees the range is in bounds and not aliased by another thread.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

pub(crate) fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}

fn parallelism(nt: usize) -> Parallelism {
    if nt > 1 {
        Parallelism::Rayon(nt)
    } else {
        Parallelism::None
    }
}

/// `dst (m x n) [+]= lhs (m x k) · rhs (k x n)`, all f32, strides as (row, col).
///
/// Column j of the result has the same bits whatever `n` is (and whatever `par`), which is
/// what makes a convolution's output independent of the batch and the thread count. The
/// `gemm` crate alone does not promise that: for `m, n <= 64` it cuts k into blocks of 512
/// where larger problems get balanced blocks, and `n = 1` or `m·n <= 256` with both operands
/// k-contiguous take a GEMV or a dot-product kernel that sum in another order. So k is cut
/// here, in balanced blocks of at most 512 (the crate's own choice on this machine's
/// caches, so the same work), and those two shapes go through a row-major copy of `rhs`
/// with at least two columns.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.add(i * dst_rs + j * dst_cs) = 0.0;
                }
            }
        }
        return;
    }
    if n == 1 || (m * n <= 256 && lhs_cs == 1 && rhs_rs == 1) {
        let nn = n.max(2);
        let mut r = vec![0f32; k * nn];
        for kk in 0..k {
            for j in 0..n {
                r[kk * nn + j] = *rhs.add(kk * rhs_rs + j * rhs_cs);
            }
        }
        let mut d = vec![0f32; m * nn];
        if accumulate {
            for i in 0..m {
                for j in 0..n {
                    d[i * nn + j] = *dst.add(i * dst_rs + j * dst_cs);
                }
            }
        }
        sgemm_k_blocks(
            m,
            nn,
            k,
            d.as_mut_ptr(),
            nn,
            1,
            accumulate,
            lhs,
            lhs_rs,
            lhs_cs,
            r.as_ptr(),
            nn,
            1,
            par,
        );
        for i in 0..m {
            for j in 0..n {
                *dst.add(i * dst_rs + j * dst_cs) = d[i * nn + j];
            }
        }
        return;
    }
    sgemm_k_blocks(
        m, n, k, dst, dst_rs, dst_cs, accumulate, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, par,
    )
}

/// [`sgemm`] in balanced blocks of at most 512 along k, each accumulated onto the last.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_k_blocks(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    par: Parallelism,
) {
    const MAX_KC: usize = 512;
    let blocks = k.div_ceil(MAX_KC);
    let kc = k.div_ceil(blocks);
    let mut k0 = 0;
    while k0 < k {
        let kb = kc.min(k - k0);
        gemm::gemm(
            m,
            n,
            kb,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate || k0 > 0,
            lhs.add(k0 * lhs_cs),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.add(k0 * rhs_rs),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
        k0 += kb;
    }
}

pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("memprune op: expected a contiguous tensor"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => Ok(f(cpu_slice(cs, l)?)),
        _ => bail!("memprune op: expected a CPU tensor"),
    }
}

// ---------------------------------------------------------------------------------------
// im2col / col2im

/// Unfolds images `b0..b0+nb` of `x` into `col` (`ktot x nb*P`, row `(c, i, j)`,
/// column `(b, oy, ox)`).
fn im2col(x: &[f32], g: &Geom, b0: usize, nb: usize, col: &mut [f32], par: bool) {
    let (kk, p) = (g.kh * g.kw, g.p());
    let nc = nb * p;
    let hw = g.h * g.w;
    let per_channel = |c: usize, rows: &mut [f32]| {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut rows[(i * g.kw + j) * nc..][..nc];
                let offx = (j * g.d) as isize - g.pad as isize;
                let (lo, hi) = g.valid_range(offx, g.w, g.ow);
                for b in 0..nb {
                    let src = &x[((b0 + b) * g.c + c) * hw..][..hw];
                    let dst = &mut row[b * p..(b + 1) * p];
                    for oy in 0..g.oh {
                        let iy = (oy * g.s + i * g.d) as isize - g.pad as isize;
                        let drow = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                        if iy < 0 || iy >= g.h as isize {
                            drow.fill(0.0);
                            continue;
                        }
                        let srow = &src[iy as usize * g.w..][..g.w];
                        drow[..lo].fill(0.0);
                        drow[hi..].fill(0.0);
                        if g.s == 1 {
                            let st = (lo as isize + offx) as usize;
                            drow[lo..hi].copy_from_slice(&srow[st..st + hi - lo]);
                        } else {
                            for (ox, v) in drow[lo..hi].iter_mut().enumerate() {
                                *v = srow[(((ox + lo) * g.s) as isize + offx) as usize];
                            }
                        }
                    }
                }
            }
        }
    };
    if par {
        col[..g.c * kk * nc]
            .par_chunks_mut(kk * nc)
            .enumerate()
            .for_each(|(c, rows)| per_channel(c, rows));
    } else {
        for (c, rows) in col[..g.c * kk * nc].chunks_mut(kk * nc).enumerate() {
            per_channel(c, rows)
        }
    }
}

/// Folds `col` back, adding into `dx` (images `0..nb` of the chunk, already zeroed).
fn col2im(col: &[f32], g: &Geom, nb: usize, dx: &mut [f32], par: bool) {
    let p = g.p();
    let nc = nb * p;
    let hw = g.h * g.w;
    let kk = g.kh * g.kw;
    let ptr = SendPtr(dx.as_mut_ptr());
    // One task per input channel: it owns that channel's plane in every image.
    let per_channel = move |c: usize| {
        let ptr = ptr;
        let rows = &col[c * kk * nc..][..kk * nc];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &rows[(i * g.kw + j) * nc..][..nc];
                let offx = (j * g.d) as isize - g.pad as isize;
                let (lo, hi) = g.valid_range(offx, g.w, g.ow);
                for b in 0..nb {
                    // SAFETY: plane (b, c) is written only by the task for channel c.
                    let dst = unsafe { ptr.slice((b * g.c + c) * hw, hw) };
                    let src = &row[b * p..(b + 1) * p];
                    for oy in 0..g.oh {
                        let iy = (oy * g.s + i * g.d) as isize - g.pad as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let drow = &mut dst[iy as usize * g.w..][..g.w];
                        let srow = &src[oy * g.ow..(oy + 1) * g.ow];
                        if g.s == 1 {
                            let st = (lo as isize + offx) as usize;
                            for (d, s) in drow[st..st + hi - lo].iter_mut().zip(&srow[lo..hi]) {
                                *d += *s;
                            }
                        } else {
                            for ox in lo..hi {
                                drow[((ox * g.s) as isize + offx) as usize] += srow[ox];
                            }
                        }
                    }
                }
            }
        }
    };
    if par {
        (0..g.c).into_par_iter().for_each(per_channel);
    } else {
        (0..g.c).for_each(per_channel);
    }
}

// ---------------------------------------------------------------------------------------
// Forward

fn conv_fwd(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    relu: bool,
    alg: Option<ForwardAlgorithm>,
) -> Vec<f32> {
    let alg = match alg {
        Some(ForwardAlgorithm::SmallMap) if small_map::applies(g) => ForwardAlgorithm::SmallMap,
        Some(ForwardAlgorithm::Winograd) if winograd::applies(g) => ForwardAlgorithm::Winograd,
        Some(_) => ForwardAlgorithm::Im2col,
        None => algorithm(g),
    };
    match alg {
        ForwardAlgorithm::SmallMap => small_map::forward(x, w, bias, g, relu),
        ForwardAlgorithm::Winograd => winograd::forward(x, w, bias, g, relu, false),
        ForwardAlgorithm::Im2col => im2col_fwd(x, w, bias, g, relu),
    }
}

fn im2col_fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geom, relu: bool) -> Vec<f32> {
    let p = g.p();
    let nt = num_threads();
    let nb = g.chunk_images(nt);
    let per_img = g.co * p;
    if g.n == 0 || per_img == 0 {
        return Vec::new();
    }
    // Every element is written once by the chunks (no zeroing first).
    let mut y: Vec<f32> = Vec::with_capacity(g.n * per_img);
    let ys = &mut y.spare_capacity_mut()[..g.n * per_img];
    let nchunks = g.n.div_ceil(nb);
    if nt > 1 && nchunks >= nt {
        ys.par_chunks_mut(nb * per_img)
            .enumerate()
            .for_each(|(ci, ych)| {
                fwd_chunk(x, w, bias, g, ci * nb, ych.len() / per_img, ych, relu, 1)
            });
    } else {
        for (ci, ych) in ys.chunks_mut(nb * per_img).enumerate() {
            fwd_chunk(x, w, bias, g, ci * nb, ych.len() / per_img, ych, relu, nt)
        }
    }
    // SAFETY: fwd_chunk wrote all of its chunk, and the chunks cover the output.
    unsafe { y.set_len(g.n * per_img) };
    y
}

/// Images `b0..b0 + nb` into `y` (all of it is written).
#[allow(clippy::too_many_arguments)]
fn fwd_chunk(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    b0: usize,
    nb: usize,
    y: &mut [MaybeUninit<f32>],
    relu: bool,
    nt: usize,
) {
    let p = g.p();
    let nc = nb * p;
    let (kg, cog) = (g.kg(), g.cog());
    let direct = nb == 1; // GEMM straight into y: it is already (C_out, P).
    let skip_im2col = nb == 1 && g.is_pointwise();
    let col_len = if skip_im2col { 0 } else { g.ktot() * nc };
    let tmp_len = if direct { 0 } else { g.co * nc };
    with_scratch(col_len, tmp_len, |col, tmp| {
        let col: &[f32] = if skip_im2col {
            &x[b0 * g.c * g.h * g.w..][..g.c * g.h * g.w]
        } else {
            im2col(x, g, b0, nb, col, nt > 1);
            col
        };
        let out: *mut f32 = if direct {
            y.as_mut_ptr() as *mut f32
        } else {
            tmp.as_mut_ptr()
        };
        for gi in 0..g.g {
            // Not accumulating: the GEMM writes every element of its rows of `out`.
            unsafe {
                sgemm(
                    cog,
                    nc,
                    kg,
                    out.add(gi * cog * nc),
                    nc,
                    1,
                    false,
                    w.as_ptr().add(gi * cog * kg),
                    kg,
                    1,
                    col.as_ptr().add(gi * kg * nc),
                    nc,
                    1,
                    parallelism(nt),
                )
            }
        }
        // Epilogue: bias + activation, in place when direct, else with the scatter back
        // from the chunk's (C_out, nb·P) product to NCHW.
        if direct {
            // SAFETY: the groups' GEMMs wrote all C_out x P elements of `y`.
            let y = unsafe { std::slice::from_raw_parts_mut(out, y.len()) };
            for o in 0..g.co {
                let bo = bias.map_or(0.0, |b| b[o]);
                let dst = &mut y[o * p..][..p];
                if relu {
                    dst.iter_mut().for_each(|d| *d = (*d + bo).max(0.0))
                } else if bo != 0.0 {
                    dst.iter_mut().for_each(|d| *d += bo)
                }
            }
            return;
        }
        for b in 0..nb {
            for o in 0..g.co {
                let bo = bias.map_or(0.0, |b| b[o]);
                let dst = &mut y[(b * g.co + o) * p..][..p];
                write_biased(dst, &tmp[o * nc + b * p..][..p], bo, relu);
            }
        }
    })
}

/// `dst = src + bias`, then ReLU if `relu`: the epilogue that writes a forward's output
/// once, into memory not yet initialised.
#[inline(always)]
fn write_biased(dst: &mut [MaybeUninit<f32>], src: &[f32], bias: f32, relu: bool) {
    if relu {
        dst.iter_mut().zip(src).for_each(|(d, &s)| {
            d.write(biased(s, bias, true));
        })
    } else {
        dst.iter_mut().zip(src).for_each(|(d, &s)| {
            d.write(biased(s, bias, false));
        })
    }
}

/// `s + bias`, then ReLU if `relu`: one output of the forward epilogue.
#[inline(always)]
fn biased(s: f32, bias: f32, relu: bool) -> f32 {
    if relu {
        (s + bias).max(0.0)
    } else {
        s + bias
    }
}

// ---------------------------------------------------------------------------------------
// Backward

struct Grads {
    dx: Option<Vec<f32>>,
    dw: Option<Vec<f32>>,
    db: Option<Vec<f32>>,
}

/// Gradients of `y = act(conv(x, w) + b)` given `dy`; `y` is needed when `relu`.
#[allow(clippy::too_many_arguments)]
fn conv_bwd(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    y: Option<&[f32]>,
    g: &Geom,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> Grads {
    let p = g.p();
    let nt = num_threads();
    let nb = g.chunk_images(nt);
    let nchunks = g.n.div_ceil(nb);
    let chw = g.c * g.h * g.w;
    let mut dx = if need_dx {
        vec![0f32; g.n * chw]
    } else {
        Vec::new()
    };
    let dxp = SendPtr(dx.as_mut_ptr());
    let wlen = g.co * g.kg();
    // Contiguous runs of chunks, one per thread when chunks are plentiful.
    let (nparts, inner_nt) = if nt > 1 && nchunks >= nt {
        (nt, 1)
    } else {
        (1, nt)
    };
    let part = |pi: usize| -> (Vec<f32>, Vec<f32>) {
        let c0 = nchunks * pi / nparts;
        let c1 = nchunks * (pi + 1) / nparts;
        let mut dw = if need_dw {
            vec![0f32; wlen]
        } else {
            Vec::new()
        };
        let mut db = if need_db {
            vec![0f32; g.co]
        } else {
            Vec::new()
        };
        for ci in c0..c1 {
            let b0 = ci * nb;
            let nbc = nb.min(g.n - b0);
            // SAFETY: images b0..b0+nbc belong to this chunk only.
            let dxc = if need_dx {
                Some(unsafe { dxp.slice(b0 * chw, nbc * chw) })
            } else {
                None
            };
            bwd_chunk(
                x,
                w,
                dy,
                y,
                g,
                b0,
                nbc,
                dxc,
                need_dw.then_some(&mut dw[..]),
                need_db.then_some(&mut db[..]),
                inner_nt,
            );
        }
        let _ = p;
        (dw, db)
    };
    let parts: Vec<(Vec<f32>, Vec<f32>)> = if nparts > 1 {
        (0..nparts).into_par_iter().map(part).collect()
    } else {
        vec![part(0)]
    };
    let mut it = parts.into_iter();
    let (mut dw, mut db) = it.next().unwrap_or_default();
    for (dw2, db2) in it {
        dw.iter_mut().zip(&dw2).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&db2).for_each(|(a, b)| *a += b);
    }
    Grads {
        dx: need_dx.then_some(dx),
        dw: need_dw.then_some(dw),
        db: need_db.then_some(db),
    }
}

#[allow(clippy::too_many_arguments)]
fn bwd_chunk(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    y: Option<&[f32]>,
    g: &Geom,
    b0: usize,
    nb: usize,
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    nt: usize,
) {
    let p = g.p();
    let nc = nb * p;
    let (kg, cog) = (g.kg(), g.cog());
    let per_img = g.co * p;
    with_scratch(g.ktot() * nc, g.co * nc, |col, dyc| {
        // Gather dY of the chunk as (C_out, nb*P), masking by the ReLU.
        for b in 0..nb {
            for o in 0..g.co {
                let src = &dy[(b0 + b) * per_img + o * p..][..p];
                let dst = &mut dyc[o * nc + b * p..][..p];
                match y {
                    Some(y) => {
                        let ys = &y[(b0 + b) * per_img + o * p..][..p];
                        for ((d, s), yv) in dst.iter_mut().zip(src).zip(ys) {
                            *d = if *yv > 0.0 { *s } else { 0.0 };
                        }
                    }
                    None => dst.copy_from_slice(src),
                }
            }
        }
        if let Some(db) = db {
            for (o, acc) in db.iter_mut().enumerate() {
                *acc += dyc[o * nc..(o + 1) * nc].iter().sum::<f32>();
            }
        }
        if let Some(dw) = dw {
            im2col(x, g, b0, nb, col, nt > 1);
            for gi in 0..g.g {
                unsafe {
                    sgemm(
                        cog,
                        kg,
                        nc,
                        dw.as_mut_ptr().add(gi * cog * kg),
                        kg,
                        1,
                        true,
                        dyc.as_ptr().add(gi * cog * nc),
                        nc,
                        1,
                        col.as_ptr().add(gi * kg * nc),
                        1,
                        nc,
                        parallelism(nt),
                    )
                }
            }
        }
        if let Some(dx) = dx {
            for gi in 0..g.g {
                unsafe {
                    sgemm(
                        kg,
                        nc,
                        cog,
                        col.as_mut_ptr().add(gi * kg * nc),
                        nc,
                        1,
                        false,
                        w.as_ptr().add(gi * cog * kg),
                        1,
                        kg,
                        dyc.as_ptr().add(gi * cog * nc),
                        nc,
                        1,
                        parallelism(nt),
                    )
                }
            }
            col2im(col, g, nb, dx, nt > 1);
        }
    })
}

// ---------------------------------------------------------------------------------------
// Custom ops

struct ConvOp2 {
    p: ConvParams,
    relu: bool,
    alg: Option<ForwardAlgorithm>,
}
struct ConvOp3 {
    p: ConvParams,
    relu: bool,
    alg: Option<ForwardAlgorithm>,
}

fn fwd_storage(
    p: ConvParams,
    relu: bool,
    alg: Option<ForwardAlgorithm>,
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
    b: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let g = Geom::new(x.1.dims(), w.1.dims(), p)?;
    let xs = cpu_slice(x.0, x.1)?;
    let ws = cpu_slice(w.0, w.1)?;
    let bs = match b {
        Some((s, l)) => Some(cpu_slice(s, l)?),
        None => None,
    };
    let y = conv_fwd(xs, ws, bs, &g, relu, alg);
    Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.oh, g.ow))))
}

fn bwd_tensors(
    p: ConvParams,
    relu: bool,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    res: &Tensor,
    grad: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let g = Geom::new(x.dims(), w.dims(), p)?;
    let (need_dx, need_dw, need_db) = (x.track_op(), w.track_op(), b.is_some_and(|b| b.track_op()));
    let grads = with_f32(x, |xs| {
        with_f32(w, |ws| {
            with_f32(grad, |dys| {
                if relu {
                    with_f32(res, |ys| {
                        conv_bwd(xs, ws, dys, Some(ys), &g, need_dx, need_dw, need_db)
                    })
                } else {
                    Ok(conv_bwd(xs, ws, dys, None, &g, need_dx, need_dw, need_db))
                }
            })
        })
    })????;
    let dev = x.device();
    let dx = grads
        .dx
        .map(|v| Tensor::from_vec(v, x.shape(), dev))
        .transpose()?;
    let dw = grads
        .dw
        .map(|v| Tensor::from_vec(v, w.shape(), dev))
        .transpose()?;
    let db = grads
        .db
        .map(|v| Tensor::from_vec(v, g.co, dev))
        .transpose()?;
    Ok((dx, dw, db))
}

impl CustomOp2 for ConvOp2 {
    fn name(&self) -> &'static str {
        "memprune-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fwd_storage(self.p, self.relu, self.alg, (s1, l1), (s2, l2), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = bwd_tensors(self.p, self.relu, x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvOp3 {
    fn name(&self) -> &'static str {
        "memprune-conv2d-bias"
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
        fwd_storage(
            self.p,
            self.relu,
            self.alg,
            (s1, l1),
            (s2, l2),
            Some((s3, l3)),
        )
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        bwd_tensors(self.p, self.relu, x, w, Some(b), res, grad)
    }
}

/// Winograd conv, bias, ReLU and 2x2 max pool in one pass: forward only (see
/// [`conv2d_bias_act_max_pool2_fused`]).
struct ConvPoolOp3 {
    p: ConvParams,
    relu: bool,
}

impl CustomOp3 for ConvPoolOp3 {
    fn name(&self) -> &'static str {
        "memprune-conv2d-bias-max-pool2"
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
        let g = Geom::new(l1.dims(), l2.dims(), self.p)?;
        let (xs, ws, bs) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let y = winograd::forward(xs, ws, Some(bs), &g, self.relu, true);
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.n, g.co, g.oh / 2, g.ow / 2)),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Channel means

/// Mean over H and W of an NCHW tensor: (N, C, H, W) -> (N, C). Differentiable.
pub fn channel_means(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return x.mean((2, 3));
    }
    x.dims4()?;
    x.contiguous()?.apply_op1(ChannelMeans)
}

struct ChannelMeans;

impl CustomOp1 for ChannelMeans {
    fn name(&self) -> &'static str {
        "memprune-channel-means"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let xs = cpu_slice(s, l)?;
        let hw = h * w;
        let mut out = vec![0f32; n * c];
        let inv = 1.0 / hw as f32;
        let work = |(o, row): (&mut f32, &[f32])| *o = sum_f32(row) * inv;
        if hw > 0 {
            if n * c * hw > 1 << 16 {
                out.par_iter_mut()
                    .zip(xs.par_chunks(hw))
                    .with_min_len(64)
                    .for_each(work);
            } else {
                out.iter_mut().zip(xs.chunks(hw)).for_each(work);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let g = (grad.reshape((n, c, 1, 1))? / (h * w) as f64)?;
        Ok(Some(g.broadcast_as((n, c, h, w))?.contiguous()?))
    }
}

/// Sum with 8 independent accumulators (vectorizes, and is more accurate than serial).
#[inline]
pub(crate) fn sum_f32(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for ch in &mut chunks {
        for k in 0..16 {
            acc[k] += ch[k];
        }
    }
    let mut s: f32 = chunks.remainder().iter().sum();
    for a in acc {
        s += a;
    }
    s
}
