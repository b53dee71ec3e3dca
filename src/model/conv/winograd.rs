//! Winograd's minimal filtering F(2x2, 3x3) for 3x3 convolutions of stride 1 (Lavin &
//! Gray 2016, "Fast Algorithms for Convolutional Neural Networks").
//!
//! Each 2x2 block of outputs is `Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A`, with `d_c` the
//! 4x4 input tile of channel c and `g_c` the 3x3 kernel. The sum over channels is 16 GEMMs,
//! one per position ξ of the 4x4 transformed tile: `M_ξ (C_out x T) = U_ξ (C_out x C_in) ·
//! V_ξ (C_in x T)` over the T tiles of a chunk of images. That is 16 multiplications per
//! 2x2 outputs where im2col's GEMM makes 36: 2.25x fewer, at the price of rounding a few
//! ulps differently (the transforms only add and halve).
//!
//! The transforms run on channels-last copies (the padded input, `V` and `M` as
//! `[ξ][tile][channel]`), so that each works on eight channels at once; AVX2 is used when
//! the CPU has it, with the same bits either way (the transforms only add, subtract and
//! halve: nothing to fuse).
//!
//! Every tile is transformed on its own and the GEMM's result for a column does not depend
//! on how many columns it is given, so the output is the same bits for any batch size,
//! chunking or thread count.

use super::{num_threads, parallelism, sgemm, with_scratch, Geom, SendPtr};
use rayon::prelude::*;

/// F(2x2, 3x3) applies to 3x3 kernels of stride 1, no dilation, one group, and enough
/// channels that the GEMMs (not the transforms) dominate.
pub(super) fn applies(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.s == 1 && g.d == 1 && g.g == 1 && g.c >= 16 && g.co >= 16
}

/// Tiles per image: the output in 2x2 blocks (the last row/column half empty when odd).
fn tiles(g: &Geom) -> (usize, usize) {
    (g.oh.div_ceil(2), g.ow.div_ceil(2))
}

/// `U = G g Gᵀ` for every (output, input) channel pair, as `[ξ][C_out][C_in]`.
fn transform_kernel(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let plane = co * ci;
    let mut u = vec![0f32; 16 * plane];
    for o in 0..co {
        for c in 0..ci {
            let k = &w[(o * ci + c) * 9..][..9];
            // t = G g (4x3): rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2.
            let mut t = [[0f32; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (k[j], k[3 + j], k[6 + j]);
                t[0][j] = g0;
                t[1][j] = 0.5 * (g0 + g1 + g2);
                t[2][j] = 0.5 * (g0 - g1 + g2);
                t[3][j] = g2;
            }
            for (i, r) in t.iter().enumerate() {
                let row = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                for (j, v) in row.into_iter().enumerate() {
                    u[(i * 4 + j) * plane + o * ci + c] = v;
                }
            }
        }
    }
    u
}

/// Padded height and width of a chunk's channels-last input copy: the 4x4 tiles at stride 2.
fn padded(g: &Geom) -> (usize, usize) {
    let (th, tw) = tiles(g);
    (2 * th + 2, 2 * tw + 2)
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

/// `Bᵀ d B` for lanes `0..N` of 16 channel runs: `d[i * 4 + j]` is pixel (i, j) of the tile.
#[inline(always)]
fn input_lanes<const N: usize>(d: &[[f32; N]; 16]) -> [[f32; N]; 16] {
    let mut t = [[0f32; N]; 16];
    for i in 0..4 {
        for l in 0..N {
            let (a, b, c, e) = (
                d[i * 4][l],
                d[i * 4 + 1][l],
                d[i * 4 + 2][l],
                d[i * 4 + 3][l],
            );
            t[i * 4][l] = a - c;
            t[i * 4 + 1][l] = b + c;
            t[i * 4 + 2][l] = c - b;
            t[i * 4 + 3][l] = b - e;
        }
    }
    let mut v = [[0f32; N]; 16];
    for j in 0..4 {
        for l in 0..N {
            let (a, b, c, e) = (t[j][l], t[4 + j][l], t[8 + j][l], t[12 + j][l]);
            v[j][l] = a - c;
            v[4 + j][l] = b + c;
            v[8 + j][l] = c - b;
            v[12 + j][l] = b - e;
        }
    }
    v
}

/// `Aᵀ M A` for lanes `0..N`: the 2x2 outputs `[y00, y01, y10, y11]`.
#[inline(always)]
fn output_lanes<const N: usize>(m: &[[f32; N]; 16]) -> [[f32; N]; 4] {
    let mut s = [[0f32; N]; 8];
    for j in 0..4 {
        for l in 0..N {
            let (m0, m1, m2, m3) = (m[j][l], m[4 + j][l], m[8 + j][l], m[12 + j][l]);
            s[j][l] = m0 + m1 + m2;
            s[4 + j][l] = m1 - m2 - m3;
        }
    }
    let mut y = [[0f32; N]; 4];
    for i in 0..2 {
        for l in 0..N {
            let (a, b, c, e) = (
                s[i * 4][l],
                s[i * 4 + 1][l],
                s[i * 4 + 2][l],
                s[i * 4 + 3][l],
            );
            y[i * 2][l] = a + b + c;
            y[i * 2 + 1][l] = b - c - e;
        }
    }
    y
}

/// `V = Bᵀ d B` of every tile of the padded chunk, as `[ξ][T][C_in]`.
#[inline(always)]
fn transform_input_body(xp: &[f32], g: &Geom, nb: usize, v: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (ph, pw) = padded(g);
    let (ci, t_all) = (g.c, nb * th * tw);
    let plane = t_all * ci;
    for b in 0..nb {
        for ty in 0..th {
            for tx in 0..tw {
                let t = (b * th + ty) * tw + tx;
                let at = |k: usize| ((b * ph + 2 * ty + k / 4) * pw + 2 * tx + k % 4) * ci;
                let base: [usize; 16] = std::array::from_fn(at);
                let mut c0 = 0;
                while c0 + 8 <= ci {
                    let mut d = [[0f32; 8]; 16];
                    for (dk, &bk) in d.iter_mut().zip(&base) {
                        dk.copy_from_slice(&xp[bk + c0..bk + c0 + 8]);
                    }
                    for (k, row) in input_lanes(&d).iter().enumerate() {
                        v[k * plane + t * ci + c0..][..8].copy_from_slice(row);
                    }
                    c0 += 8;
                }
                for c in c0..ci {
                    let d: [[f32; 1]; 16] = std::array::from_fn(|k| [xp[base[k] + c]]);
                    for (k, row) in input_lanes(&d).iter().enumerate() {
                        v[k * plane + t * ci + c] = row[0];
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` (plus bias, then ReLU) of every tile, from `M` as `[ξ][T][C_out]`, written
/// into the chunk's NCHW output. A row of tiles is staged as (C_out, 2, 2·tiles) first, so
/// that the scattered writes stay in L1 and the output is written along its rows.
#[inline(always)]
fn transform_output_body(
    m: &[f32],
    g: &Geom,
    nb: usize,
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    let (th, tw) = tiles(g);
    let (co, t_all, p) = (g.co, nb * th * tw, g.p());
    let plane = t_all * co;
    let sw = 2 * tw;
    let mut stage = vec![0f32; co * 2 * sw];
    for b in 0..nb {
        for ty in 0..th {
            for tx in 0..tw {
                let t = (b * th + ty) * tw + tx;
                let mut o0 = 0;
                while o0 + 8 <= co {
                    let mut mv = [[0f32; 8]; 16];
                    for (k, mk) in mv.iter_mut().enumerate() {
                        let at = k * plane + t * co + o0;
                        mk.copy_from_slice(&m[at..at + 8]);
                    }
                    let out = output_lanes(&mv);
                    for (k, row) in out.iter().enumerate() {
                        let col = (k / 2) * sw + 2 * tx + k % 2;
                        for (l, &val) in row.iter().enumerate() {
                            stage[(o0 + l) * 2 * sw + col] = val;
                        }
                    }
                    o0 += 8;
                }
                for o in o0..co {
                    let mv: [[f32; 1]; 16] = std::array::from_fn(|k| [m[k * plane + t * co + o]]);
                    for (k, row) in output_lanes(&mv).iter().enumerate() {
                        stage[o * 2 * sw + (k / 2) * sw + 2 * tx + k % 2] = row[0];
                    }
                }
            }
            for o in 0..co {
                let bo = bias.map_or(0.0, |bs| bs[o]);
                for i in 0..2 {
                    let oy = 2 * ty + i;
                    if oy >= g.oh {
                        break;
                    }
                    let src = &stage[o * 2 * sw + i * sw..][..g.ow];
                    let dst = &mut y[(b * co + o) * p + oy * g.ow..][..g.ow];
                    if relu {
                        dst.iter_mut()
                            .zip(src)
                            .for_each(|(d, s)| *d = (s + bo).max(0.0));
                    } else {
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s + bo);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pad_channels_last_avx2(x: &[f32], g: &Geom, b0: usize, nb: usize, xp: &mut [f32]) {
    pad_channels_last_body(x, g, b0, nb, xp)
}

fn pad_channels_last(x: &[f32], g: &Geom, b0: usize, nb: usize, xp: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { pad_channels_last_avx2(x, g, b0, nb, xp) };
    }
    pad_channels_last_body(x, g, b0, nb, xp)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_input_avx2(xp: &[f32], g: &Geom, nb: usize, v: &mut [f32]) {
    transform_input_body(xp, g, nb, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_output_avx2(
    m: &[f32],
    g: &Geom,
    nb: usize,
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    transform_output_body(m, g, nb, bias, relu, y)
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

fn transform_input(xp: &[f32], g: &Geom, nb: usize, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { transform_input_avx2(xp, g, nb, v) };
    }
    transform_input_body(xp, g, nb, v)
}

fn transform_output(
    m: &[f32],
    g: &Geom,
    nb: usize,
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { transform_output_avx2(m, g, nb, bias, relu, y) };
    }
    transform_output_body(m, g, nb, bias, relu, y)
}

/// Images per chunk: a chunk's padded input, `V` and `M` stay near 4 MiB, but with at least
/// 256 tiles (each GEMM packs its 16th of the kernel once per chunk, so fewer columns
/// would spend the time packing); and every thread gets a chunk when the batch allows.
fn chunk_images(g: &Geom, nt: usize) -> usize {
    const BUDGET_FLOATS: usize = 1 << 20;
    const MIN_TILES: usize = 256;
    let (th, tw) = tiles(g);
    let (ph, pw) = padded(g);
    let per_image = 16 * (g.c + g.co) * th * tw + ph * pw * g.c;
    let nb = (BUDGET_FLOATS / per_image.max(1)).max(MIN_TILES.div_ceil(th * tw));
    nb.min(g.n.div_ceil(nt)).max(1)
}

/// The forward pass: `act(conv(x, w) + b)`, NCHW.
pub(super) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    relu: bool,
) -> Vec<f32> {
    let per_img = g.co * g.p();
    let mut y = vec![0f32; g.n * per_img];
    if g.n == 0 || per_img == 0 {
        return y;
    }
    let u = transform_kernel(w, g.co, g.c);
    let nt = num_threads();
    let nb = chunk_images(g, nt);
    let nchunks = g.n.div_ceil(nb);
    let (th, tw) = tiles(g);
    let (ph, pw) = padded(g);
    let chunk = |ci: usize, ych: &mut [f32], gemm_threads: usize| {
        let nbc = ych.len() / per_img;
        let t_all = nbc * th * tw;
        let xp_len = nbc * ph * pw * g.c;
        with_scratch(xp_len + 16 * g.c * t_all, 16 * g.co * t_all, |a, m| {
            let (xp, v) = a.split_at_mut(xp_len);
            pad_channels_last(x, g, ci * nb, nbc, xp);
            transform_input(xp, g, nbc, v);
            let out = SendPtr(m.as_mut_ptr());
            for xi in 0..16 {
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
            transform_output(m, g, nbc, bias, relu, ych);
        })
    };
    if nt > 1 && nchunks >= nt {
        y.par_chunks_mut(nb * per_img)
            .enumerate()
            .for_each(|(ci, ych)| chunk(ci, ych, 1));
    } else {
        for (ci, ych) in y.chunks_mut(nb * per_img).enumerate() {
            chunk(ci, ych, nt)
        }
    }
    y
}
