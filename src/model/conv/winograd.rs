//! Winograd's minimal filtering F(2x2, 3x3) for 3x3 convolutions of stride 1 (Lavin &
//! Gray 2016, "Fast Algorithms for Convolutional Neural Networks").
//!
//! Each 2x2 block of outputs is `Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A`, with `d_c` the
//! 4x4 input tile of channel c and `g_c` the 3x3 kernel. The sum over channels is 16 GEMMs,
//! one per position ξ of the transformed tile: `M_ξ (C_out x T) = U_ξ (C_out x C_in) · V_ξ
//! (C_in x T)` over the T tiles of a chunk of images. That is 16 multiplications per 2x2
//! outputs where im2col's GEMM makes 36: 2.25x fewer. The transforms only add, subtract and
//! halve, so the outputs stay within about 1e-6 (relative) of im2col's. (F(4x4, 3x3), 4x
//! fewer multiplications, was tried and dropped: its larger transforms made the measure
//! benchmark slower on this machine, 86 against 104 UnitMem points/s, and its rounding
//! errors were ten times larger.)
//!
//! The transforms run on channels-last copies (the padded input, `V` and `M` as
//! `[ξ][tile][channel]`), so that each works on 16 channels at once with AVX-512, or eight
//! with AVX2, with the same bits either way (the transforms are written out as sums in a
//! fixed order: nothing for the compiler to fuse). On a Xeon with AVX-512 (where the GEMM
//! also runs 16 lanes wide and had left the transforms a large share), 16 lanes made the
//! Winograd layers of resnet18 about 1.1x faster than eight, and its forward about 10 %.
//!
//! Every tile is transformed on its own and the GEMM's result for a column does not depend
//! on how many columns it is given, so the output is the same bits for any batch size,
//! chunking or thread count.

use super::{biased, num_threads, parallelism, sgemm, with_scratch, write_biased, Geom, SendPtr};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Outputs per tile side, input tile side, and positions of a transformed tile.
const M: usize = 2;
const A: usize = M + 2;
const A2: usize = A * A;

/// Winograd applies to 3x3 kernels of stride 1, no dilation, one group, and enough channels
/// that the GEMMs (not the transforms) dominate.
pub(super) fn applies(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.s == 1 && g.d == 1 && g.g == 1 && g.c >= 16 && g.co >= 16
}

/// Tiles per image: the output in 2x2 blocks (the last row/column half empty when odd).
fn tiles(g: &Geom) -> (usize, usize) {
    (g.oh.div_ceil(M), g.ow.div_ceil(M))
}

/// Padded height and width of a chunk's channels-last input copy: the tiles at stride 2.
fn padded(g: &Geom) -> (usize, usize) {
    let (th, tw) = tiles(g);
    (M * th + 2, M * tw + 2)
}

/// `G g` for one kernel column (or row) `g`, in f64.
fn g_1d(g: [f64; 3]) -> [f64; A] {
    let [g0, g1, g2] = g;
    [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
}

/// `Bᵀ d` for one column (or row) `d` of an input tile.
#[inline(always)]
fn bt_1d(d: [f32; A]) -> [f32; A] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `Aᵀ m` for one column (or row) `m` of a transformed output tile.
#[inline(always)]
fn at_1d(m: [f32; A]) -> [f32; M] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// `U = G g Gᵀ` for every (output, input) channel pair, as `[ξ][C_out][C_in]`, computed in
/// f64 and rounded once.
fn transform_kernel(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let plane = co * ci;
    let mut u = vec![0f32; A2 * plane];
    for o in 0..co {
        for c in 0..ci {
            let k = &w[(o * ci + c) * 9..][..9];
            // t = G g (4 x 3), column by column.
            let mut t = [[0f64; 3]; A];
            for j in 0..3 {
                let col = g_1d([k[j] as f64, k[3 + j] as f64, k[6 + j] as f64]);
                for i in 0..A {
                    t[i][j] = col[i];
                }
            }
            for (i, r) in t.iter().enumerate() {
                let row = g_1d(*r);
                for j in 0..A {
                    u[(i * A + j) * plane + o * ci + c] = row[j] as f32;
                }
            }
        }
    }
    u
}

/// Images `b0..b0+nb` of `x` as `[b][py][px][c]`, shifted by the padding, zero elsewhere.
/// Per image row, the (C x W) block of NCHW is transposed in 8x8 blocks, so that loads
/// and stores both run along memory.
#[inline(always)]
fn pad_channels_last_body(x: &[f32], g: &Geom, b0: usize, nb: usize, xp: &mut [f32]) {
    let (ph, pw) = padded(g);
    let (hw, c) = (g.h * g.w, g.c);
    xp.fill(0.0);
    let wmax = g.w.min(pw.saturating_sub(g.pad));
    for b in 0..nb {
        let img = &x[(b0 + b) * c * hw..][..c * hw];
        for iy in 0..g.h {
            let py = iy + g.pad;
            if py >= ph {
                break;
            }
            let drow = ((b * ph + py) * pw + g.pad) * c;
            let src = |ch: usize| &img[ch * hw + iy * g.w..][..g.w];
            let mut c0 = 0;
            while c0 + 8 <= c {
                let mut ix0 = 0;
                while ix0 + 8 <= wmax {
                    let blk: [[f32; 8]; 8] = std::array::from_fn(|k| {
                        let r = &src(c0 + k)[ix0..ix0 + 8];
                        [r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]
                    });
                    for k in 0..8 {
                        let out = &mut xp[drow + (ix0 + k) * c + c0..][..8];
                        for (l, o) in out.iter_mut().enumerate() {
                            *o = blk[l][k];
                        }
                    }
                    ix0 += 8;
                }
                for ix in ix0..wmax {
                    for l in 0..8 {
                        xp[drow + ix * c + c0 + l] = src(c0 + l)[ix];
                    }
                }
                c0 += 8;
            }
            for ch in c0..c {
                let r = src(ch);
                for ix in 0..wmax {
                    xp[drow + ix * c + ch] = r[ix];
                }
            }
        }
    }
}

/// `Bᵀ d B` for lanes `0..N`: `d[i * 4 + j]` holds pixel (i, j) of the tile.
#[inline(always)]
fn input_lanes<const N: usize>(d: &[[f32; N]; A2]) -> [[f32; N]; A2] {
    let mut t = [[0f32; N]; A2];
    for i in 0..A {
        for l in 0..N {
            let r = bt_1d(std::array::from_fn(|j| d[i * A + j][l]));
            for j in 0..A {
                t[i * A + j][l] = r[j];
            }
        }
    }
    let mut v = [[0f32; N]; A2];
    for j in 0..A {
        for l in 0..N {
            let c = bt_1d(std::array::from_fn(|i| t[i * A + j][l]));
            for i in 0..A {
                v[i * A + j][l] = c[i];
            }
        }
    }
    v
}

/// `Aᵀ M A` for lanes `0..N`: output `(i, j)` of the 2x2 block at `[i * 2 + j]`.
#[inline(always)]
fn output_lanes<const N: usize>(mt: &[[f32; N]; A2]) -> [[f32; N]; 4] {
    // s = Aᵀ M: 2 x 4.
    let mut s = [[0f32; N]; 8];
    for j in 0..A {
        for l in 0..N {
            let c = at_1d(std::array::from_fn(|i| mt[i * A + j][l]));
            for i in 0..M {
                s[i * A + j][l] = c[i];
            }
        }
    }
    let mut y = [[0f32; N]; 4];
    for i in 0..M {
        for l in 0..N {
            let r = at_1d(std::array::from_fn(|j| s[i * A + j][l]));
            for j in 0..M {
                y[i * M + j][l] = r[j];
            }
        }
    }
    y
}

/// `V = Bᵀ d B` of every tile of the padded chunk, as `[ξ][T][C_in]`; `L` channels at a
/// time (16 with AVX-512, 8 with AVX2), then 8, then one by one.
#[inline(always)]
fn transform_input_body<const L: usize>(xp: &[f32], g: &Geom, nb: usize, v: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (ph, pw) = padded(g);
    let (ci, t_all) = (g.c, nb * th * tw);
    let plane = t_all * ci;
    for b in 0..nb {
        for ty in 0..th {
            for tx in 0..tw {
                let t = (b * th + ty) * tw + tx;
                let base: [usize; A2] =
                    std::array::from_fn(|k| ((b * ph + M * ty + k / A) * pw + M * tx + k % A) * ci);
                let mut c0 = 0;
                while c0 + L <= ci {
                    input_block::<L>(xp, &base, c0, v, plane, t * ci);
                    c0 += L;
                }
                while c0 + 8 <= ci {
                    input_block::<8>(xp, &base, c0, v, plane, t * ci);
                    c0 += 8;
                }
                for c in c0..ci {
                    input_block::<1>(xp, &base, c, v, plane, t * ci);
                }
            }
        }
    }
}

/// Channels `c0..c0 + N` of one tile: `d` gathered from the tile's 16 pixels, `Bᵀ d B`
/// written to the 16 planes of `v`.
#[inline(always)]
fn input_block<const N: usize>(
    xp: &[f32],
    base: &[usize; A2],
    c0: usize,
    v: &mut [f32],
    plane: usize,
    at: usize,
) {
    let mut d = [[0f32; N]; A2];
    for (dk, &bk) in d.iter_mut().zip(base) {
        dk.copy_from_slice(&xp[bk + c0..bk + c0 + N]);
    }
    for (k, row) in input_lanes::<N>(&d).iter().enumerate() {
        v[k * plane + at + c0..][..N].copy_from_slice(row);
    }
}

/// `Y = Aᵀ M A` (plus bias, then ReLU) of every tile, from `M` as `[ξ][T][C_out]`, written
/// into the chunk's NCHW output. A row of tiles is staged as (C_out, 2, 2·tiles) first, so
/// that the scattered writes stay in L1 and the output is written along its rows.
///
/// With `pool`, each tile's 2x2 outputs are one window of a 2x2 max pool of stride 2, and
/// only the pooled map, `(oh / 2, ow / 2)`, is written: the same selects in the same order
/// as [`crate::model::pool::max_pool2d`] on the full output, so the same bits, without
/// writing the full map and reading it back.
#[inline(always)]
fn transform_output_body<const L: usize>(
    m: &[f32],
    g: &Geom,
    nb: usize,
    bias: Option<&[f32]>,
    relu: bool,
    pool: bool,
    y: &mut [MaybeUninit<f32>],
) {
    let (th, tw) = tiles(g);
    let (co, t_all) = (g.co, nb * th * tw);
    let plane = t_all * co;
    // Staged rows per tile row and their width: two of 2·tw outputs, or one pooled row.
    let (rows, sw) = if pool { (1, tw) } else { (M, M * tw) };
    let (oh, ow) = if pool {
        (g.oh / M, g.ow / M)
    } else {
        (g.oh, g.ow)
    };
    let p = oh * ow;
    let mut stage = vec![0f32; co * rows * sw];
    // The pooled blocks add the bias per lane: zeros stand in for none.
    let zeros = if pool && bias.is_none() {
        vec![0f32; co]
    } else {
        Vec::new()
    };
    let bias_pooled = bias.unwrap_or(&zeros);
    for b in 0..nb {
        for ty in 0..th {
            if pool && ty >= oh {
                break;
            }
            for tx in 0..tw {
                let t = (b * th + ty) * tw + tx;
                let mut o0 = 0;
                macro_rules! block {
                    ($n:expr, $o:expr) => {{
                        let at = t * co + $o;
                        let st = &mut stage[$o * rows * sw..];
                        if pool {
                            output_block_pooled::<$n>(
                                m,
                                plane,
                                at,
                                &bias_pooled[$o..],
                                relu,
                                st,
                                sw,
                                tx,
                            )
                        } else {
                            output_block::<$n>(m, plane, at, st, sw, tx)
                        }
                    }};
                }
                while o0 + L <= co {
                    block!(L, o0);
                    o0 += L;
                }
                while o0 + 8 <= co {
                    block!(8, o0);
                    o0 += 8;
                }
                for o in o0..co {
                    block!(1, o);
                }
            }
            for o in 0..co {
                for i in 0..rows {
                    let oy = rows * ty + i;
                    if oy >= oh {
                        break;
                    }
                    let src = &stage[o * rows * sw + i * sw..][..ow];
                    let dst = &mut y[(b * co + o) * p + oy * ow..][..ow];
                    if pool {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            d.write(s);
                        }
                    } else {
                        write_biased(dst, src, bias.map_or(0.0, |bs| bs[o]), relu);
                    }
                }
            }
        }
    }
}

/// `Aᵀ M A` of one tile for lanes `0..N`, `M` read from the 16 planes of `m` at `at`.
#[inline(always)]
fn tile_outputs<const N: usize>(m: &[f32], plane: usize, at: usize) -> [[f32; N]; 4] {
    let mut mv = [[0f32; N]; A2];
    for (k, mk) in mv.iter_mut().enumerate() {
        mk.copy_from_slice(&m[k * plane + at..][..N]);
    }
    output_lanes::<N>(&mv)
}

/// [`output_block`] followed by bias, ReLU and the 2x2 max pool of the tile: one pooled
/// output per channel, at `stage[l · sw + tx]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_block_pooled<const N: usize>(
    m: &[f32],
    plane: usize,
    at: usize,
    bias: &[f32],
    relu: bool,
    stage: &mut [f32],
    sw: usize,
    tx: usize,
) {
    let out = tile_outputs::<N>(m, plane, at);
    let bias: &[f32; N] = bias[..N].try_into().expect("N biases");
    let act = |k: usize| -> [f32; N] { std::array::from_fn(|l| biased(out[k][l], bias[l], relu)) };
    let (a, b, c, d) = (act(0), act(1), act(2), act(3));
    // max_pool2d's order: each row's pair, then the rows.
    let pooled: [f32; N] = std::array::from_fn(|l| {
        let top = if b[l] > a[l] { b[l] } else { a[l] };
        let bottom = if d[l] > c[l] { d[l] } else { c[l] };
        if bottom > top {
            bottom
        } else {
            top
        }
    });
    for (l, &v) in pooled.iter().enumerate() {
        stage[l * sw + tx] = v;
    }
}

/// Output channels `o0..o0 + N` of tile column `tx`: `Aᵀ M A` from the 16 planes of `m`
/// (at `at`) into `stage`, whose channel `o0 + l` starts at `l · 2 · sw`.
#[inline(always)]
fn output_block<const N: usize>(
    m: &[f32],
    plane: usize,
    at: usize,
    stage: &mut [f32],
    sw: usize,
    tx: usize,
) {
    let out = tile_outputs::<N>(m, plane, at);
    for i in 0..M {
        for j in 0..M {
            let col = i * sw + M * tx + j;
            for (l, &val) in out[i * M + j].iter().enumerate() {
                stage[l * M * sw + col] = val;
            }
        }
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The transforms, compiled for AVX-512 (16 channels at a time), for AVX2 (8) and for the
/// baseline CPU. Every lane does the same additions in the same order, so the width does
/// not change a bit.
macro_rules! dispatch {
    ($avx512:ident, $avx2:ident, $plain:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $avx512($($arg: $ty),*) {
            $body::<16>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) {
            $body::<8>($($arg),*)
        }

        fn $plain($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { $avx512($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU has AVX2.
                return unsafe { $avx2($($arg),*) };
            }
            $body::<8>($($arg),*)
        }
    };
}

#[inline(always)]
fn pad_body<const L: usize>(x: &[f32], g: &Geom, b0: usize, nb: usize, xp: &mut [f32]) {
    pad_channels_last_body(x, g, b0, nb, xp)
}

dispatch!(pad_avx512, pad_avx2, pad_channels_last, pad_body, (x: &[f32], g: &Geom, b0: usize, nb: usize, xp: &mut [f32]));
dispatch!(input_avx512, input_avx2, transform_input, transform_input_body, (xp: &[f32], g: &Geom, nb: usize, v: &mut [f32]));
dispatch!(output_avx512, output_avx2, transform_output, transform_output_body, (m: &[f32], g: &Geom, nb: usize, bias: Option<&[f32]>, relu: bool, pool: bool, y: &mut [MaybeUninit<f32>]));

/// Images per chunk: a chunk's padded input, `V` and `M` stay near 4 MiB, but with at least
/// 256 tiles (each GEMM packs its part of the kernel once per chunk, so fewer columns
/// would spend the time packing); and every thread gets a chunk when the batch allows.
fn chunk_images(g: &Geom, nt: usize) -> usize {
    const BUDGET_FLOATS: usize = 1 << 20;
    const MIN_TILES: usize = 256;
    let (th, tw) = tiles(g);
    let (ph, pw) = padded(g);
    let per_image = A2 * (g.c + g.co) * th * tw + ph * pw * g.c;
    let nb = (BUDGET_FLOATS / per_image.max(1)).max(MIN_TILES.div_ceil(th * tw));
    nb.min(g.n.div_ceil(nt)).max(1)
}

/// The forward pass: `act(conv(x, w) + b)`, NCHW; with `pool`, its 2x2 max pool of stride
/// 2, `(N, C_out, oh / 2, ow / 2)`.
pub(super) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    relu: bool,
    pool: bool,
) -> Vec<f32> {
    let per_img = if pool {
        g.co * (g.oh / M) * (g.ow / M)
    } else {
        g.co * g.p()
    };
    if g.n == 0 || per_img == 0 {
        return Vec::new();
    }
    // The output is written once, whole, by the output transform: no zeroing first.
    let mut y: Vec<f32> = Vec::with_capacity(g.n * per_img);
    let u = transform_kernel(w, g.co, g.c);
    let nt = num_threads();
    let nb = chunk_images(g, nt);
    let nchunks = g.n.div_ceil(nb);
    let (th, tw) = tiles(g);
    let (ph, pw) = padded(g);
    let chunk = |ci: usize, ych: &mut [MaybeUninit<f32>], gemm_threads: usize| {
        let nbc = ych.len() / per_img;
        let t_all = nbc * th * tw;
        let xp_len = nbc * ph * pw * g.c;
        with_scratch(xp_len + A2 * g.c * t_all, A2 * g.co * t_all, |a, m| {
            let (xp, v) = a.split_at_mut(xp_len);
            pad_channels_last(x, g, ci * nb, nbc, xp);
            transform_input(xp, g, nbc, v);
            let out = SendPtr(m.as_mut_ptr());
            for xi in 0..A2 {
                // M_ξ (C_out x T), stored [T][C_out] = U_ξ (C_out x C_in) · V_ξ (C_in x T),
                // stored [T][C_in].
                unsafe {
                    sgemm(
                        g.co,
                        t_all,
                        g.c,
                        out.0.add(xi * g.co * t_all),
                        1,
                        g.co,
                        false,
                        u.as_ptr().add(xi * g.co * g.c),
                        g.c,
                        1,
                        v.as_ptr().add(xi * g.c * t_all),
                        1,
                        g.c,
                        parallelism(gemm_threads),
                    )
                }
            }
            transform_output(m, g, nbc, bias, relu, pool, ych);
        })
    };
    if nt > 1 && nchunks >= nt {
        y.spare_capacity_mut()[..g.n * per_img]
            .par_chunks_mut(nb * per_img)
            .enumerate()
            .for_each(|(ci, ych)| chunk(ci, ych, 1));
    } else {
        for (ci, ych) in y.spare_capacity_mut()[..g.n * per_img]
            .chunks_mut(nb * per_img)
            .enumerate()
        {
            chunk(ci, ych, nt)
        }
    }
    // SAFETY: the output transform wrote every row of every channel of every image (its
    // tile rows cover 0..oh, or 0..oh / 2 pooled, each row whole), and the chunks cover
    // the images.
    unsafe { y.set_len(g.n * per_img) };
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::ConvParams;

    type OutputBody = fn(&[f32], &Geom, usize, Option<&[f32]>, bool, bool, &mut [MaybeUninit<f32>]);

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// 16, 8 and 1 lanes (AVX-512, AVX2 and the remainder loops) give the same bits, for
    /// channel counts that use each of them.
    #[test]
    fn lane_widths_give_the_same_bits() {
        for (c, co, h) in [(16, 16, 5), (24, 40, 6), (35, 19, 3), (64, 32, 4)] {
            let p = ConvParams {
                padding: 1,
                ..Default::default()
            };
            let g = Geom::new(&[2, c, h, h], &[co, c, 3, 3], p).unwrap();
            let (th, tw) = tiles(&g);
            let (ph, pw) = padded(&g);
            let t_all = 2 * th * tw;
            let xp = noise(2 * ph * pw * c, 1);
            let (mut v16, mut v8) = (vec![0f32; A2 * c * t_all], vec![0f32; A2 * c * t_all]);
            transform_input_body::<16>(&xp, &g, 2, &mut v16);
            transform_input_body::<8>(&xp, &g, 2, &mut v8);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&v16), bits(&v8), "input transform, {c} channels");
            let m = noise(A2 * co * t_all, 2);
            let bias = noise(co, 3);
            for pool in [false, true] {
                let per = if pool {
                    2 * co * (g.oh / 2) * (g.ow / 2)
                } else {
                    2 * co * g.p()
                };
                let out = |f: OutputBody| {
                    let mut y = vec![MaybeUninit::new(f32::NAN); per];
                    f(&m, &g, 2, Some(&bias), true, pool, &mut y);
                    y.iter()
                        .map(|v| unsafe { v.assume_init() })
                        .collect::<Vec<f32>>()
                };
                let y16 = out(transform_output_body::<16>);
                let y8 = out(transform_output_body::<8>);
                assert!(y8.iter().all(|v| !v.is_nan()), "every output is written");
                assert_eq!(bits(&y16), bits(&y8), "output transform, {co} channels");
                assert!(y8.iter().any(|&y| y > 0.0));
            }
        }
    }
}
