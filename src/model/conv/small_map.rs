//! Convolutions of small feature maps (1x1, 2x2, 1x2: fewer input pixels than kernel taps)
//! as one dense matrix product, with no im2col.
//!
//! On such a map most of im2col's columns are padding: a 3x3 kernel on a 1x1 map meets
//! one pixel, so 8 of its 9 taps multiply zeros. Instead, the convolution is written as
//! the linear map it is, `Y (N x C_out·P) = X (N x C_in·HW) · Kᵀ`, where row `(o, q)` of
//! `K` holds, for every input pixel `(c, r)`, the kernel tap that connects `r` to output
//! pixel `q` (0 where none does). `X` and `Y` are the NCHW tensors as they lie in memory.
//! The product costs `C_out·P·C_in·HW` multiplications against im2col's
//! `C_out·P·C_in·KH·KW`: 9x fewer on 1x1 maps, 2.25x fewer on 2x2 maps.
//!
//! The GEMM runs with the images as its columns, whose results do not depend on how many
//! columns there are: the same bits for any batch size or thread count.

use super::{num_threads, parallelism, sgemm, Geom};
use rayon::prelude::*;

/// Largest `K` built (floats): 16 Mi (64 MiB), beyond which im2col is used.
const MAX_MATRIX: usize = 1 << 24;

/// Used when the input map has fewer pixels than the kernel has taps.
pub(super) fn applies(g: &Geom) -> bool {
    let hw = g.h * g.w;
    g.g == 1 && hw < g.kh * g.kw && g.co * g.p() * g.c * hw <= MAX_MATRIX
}

/// `K`: (C_out·P) x (C_in·HW), row-major; built in parallel over output channels (it is
/// as large as one image's product, and a serial build left the other threads idle).
fn dense_kernel(w: &[f32], g: &Geom) -> Vec<f32> {
    let (hw, p) = (g.h * g.w, g.p());
    let cols = g.c * hw;
    let mut k = vec![0f32; g.co * p * cols];
    k.par_chunks_mut(p * cols)
        .enumerate()
        .for_each(|(o, rows)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let row = &mut rows[(oy * g.ow + ox) * cols..][..cols];
                    for i in 0..g.kh {
                        let iy = (oy * g.s + i * g.d) as isize - g.pad as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        for j in 0..g.kw {
                            let ix = (ox * g.s + j * g.d) as isize - g.pad as isize;
                            if ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                            let r = iy as usize * g.w + ix as usize;
                            for c in 0..g.c {
                                row[c * hw + r] = w[((o * g.c + c) * g.kh + i) * g.kw + j];
                            }
                        }
                    }
                }
            }
        });
    k
}

/// The forward pass: `act(conv(x, w) + b)`, NCHW.
pub(super) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    relu: bool,
) -> Vec<f32> {
    let (hw, p) = (g.h * g.w, g.p());
    let (rows, cols) = (g.co * p, g.c * hw);
    if g.n == 0 || rows == 0 {
        return Vec::new();
    }
    let k = dense_kernel(w, g);
    // Not accumulating, the GEMM writes every element: no zeroing first.
    let mut y: Vec<f32> = Vec::with_capacity(g.n * rows);
    // Yᵀ (rows x N) = K (rows x cols) · Xᵀ (cols x N); Yᵀ's column b is image b of y.
    // SAFETY: y has room for rows x N, all of which the GEMM writes before set_len.
    unsafe {
        sgemm(
            rows,
            g.n,
            cols,
            y.as_mut_ptr(),
            1,
            rows,
            false,
            k.as_ptr(),
            cols,
            1,
            x.as_ptr(),
            1,
            cols,
            parallelism(num_threads()),
        );
        y.set_len(g.n * rows);
    }
    if bias.is_some() || relu {
        y.par_chunks_mut(rows).for_each(|img| {
            for (o, plane) in img.chunks_mut(p).enumerate() {
                let bo = bias.map_or(0.0, |b| b[o]);
                for v in plane {
                    let s = *v + bo;
                    *v = if relu { s.max(0.0) } else { s };
                }
            }
        });
    }
    y
}
