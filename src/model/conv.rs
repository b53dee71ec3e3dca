//! The convolution every memprune model runs through.
//!
//! Inputs and outputs are NCHW candle tensors. This is the single place the models
//! call, so a faster kernel replaces it for measure, train, probe and fine-tune at once.

use candle_core::{Result, Tensor};

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
    let y = x.conv2d(w, p.padding, p.stride, p.dilation, p.groups)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// Inference: `relu(conv(x, w) + b)` when `relu`, else `conv(x, w) + b`. The models
/// fold BatchNorm into `w` and `b` before calling this.
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    p: ConvParams,
    relu: bool,
) -> Result<Tensor> {
    let y = conv2d(x, w, Some(b), p)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// The mean of each channel over its spatial positions: (N, C, H, W) -> (N, C).
pub fn channel_means(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}
