//! A convolution followed by BatchNorm: the building block of every ResNet.

use crate::checkpoint::Checkpoint;
use crate::model::batch_norm::fold_batch_norm;
use crate::model::conv::{conv2d, conv2d_bias_act, ConvParams};
use crate::model::pool::{conv2d_bias_act_max_pool2, max_pool2d};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// PyTorch's default BatchNorm epsilon; checkpoints do not store it.
pub const BN_EPS: f64 = 1e-5;

/// How BatchNorm runs in a forward pass.
#[derive(Debug, Default)]
pub enum Mode {
    /// Running statistics, folded into the conv: inference.
    #[default]
    Eval,
    /// Batch statistics (training). Each ConvBn appends its batch mean and unbiased batch
    /// variance, with its BatchNorm name, so the trainer can update the running statistics.
    Train(Vec<BatchStats>),
}

/// The statistics of one BatchNorm over one training batch.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// e.g. `block3.bn`
    pub bn_name: String,
    pub mean: Tensor,
    /// Unbiased (n - 1), as PyTorch uses for the running variance.
    pub var: Tensor,
}

/// One conv (with or without a bias) + BatchNorm, with the tensor names it was read from.
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// Name of the conv weight, e.g. `block3.conv.weight` or `layer1.0.conv1.weight`.
    pub conv_name: String,
    /// Prefix of the BatchNorm tensors, e.g. `block3.bn` or `layer1.0.bn1`.
    pub bn_name: String,
    pub params: ConvParams,
    /// (C_out, C_in / groups, K, K)
    pub weight: Tensor,
    /// The conv's bias and its name, when it has one (the authors' ResNet9).
    pub conv_bias: Option<(String, Tensor)>,
    pub bn_weight: Tensor,
    pub bn_bias: Tensor,
    pub bn_mean: Tensor,
    pub bn_var: Tensor,
    /// BatchNorm folded into the conv for inference: `w * s`, `beta - mean * s` with
    /// `s = gamma / sqrt(var + eps)`, computed in f64.
    pub folded_weight: Tensor,
    pub folded_bias: Tensor,
    /// Frozen for fine-tuning: training-mode forwards use the folded weights (running
    /// statistics, no gradient to the weights, nothing recorded).
    pub frozen: bool,
}

impl ConvBn {
    /// Reads `conv_name` and `bn_name.{weight,bias,running_mean,running_var}`; `in_channels`
    /// is what the previous layer produces, checked against the weight's shape.
    pub fn load(
        ckpt: &Checkpoint,
        conv_name: &str,
        bn_name: &str,
        in_channels: usize,
        params: ConvParams,
    ) -> Result<ConvBn> {
        let weight = ckpt.get(conv_name)?.clone();
        let dims = weight.dims().to_vec();
        if dims.len() != 4 {
            bail!(
                "{}: tensor `{conv_name}` has shape {dims:?}, expected a 4-d conv weight",
                ckpt.path.display()
            );
        }
        if dims.contains(&0) {
            bail!(
                "{}: tensor `{conv_name}` has shape {dims:?}: a conv needs at least one output channel, input channel and kernel tap",
                ckpt.path.display()
            );
        }
        if dims[1] * params.groups != in_channels {
            bail!(
                "{}: tensor `{conv_name}` has shape {dims:?}: it takes {} input channels but the layer before gives {in_channels}",
                ckpt.path.display(),
                dims[1] * params.groups
            );
        }
        let c = dims[0];
        let v = |s: &str| ckpt.get_shaped(&format!("{bn_name}.{s}"), &[c]).cloned();
        let (bn_weight, bn_bias, bn_mean, bn_var) = (
            v("weight")?,
            v("bias")?,
            v("running_mean")?,
            v("running_var")?,
        );
        // Finite values: Checkpoint::check_loaded, for every family in one place.
        if bn_var
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .any(|&x| x < 0.0)
        {
            bail!(
                "{}: `{bn_name}.running_var` has negative entries",
                ckpt.path.display()
            );
        }
        let (folded_weight, folded_bias) =
            fold_bn(&weight, &bn_weight, &bn_bias, &bn_mean, &bn_var)?;
        Ok(ConvBn {
            conv_name: conv_name.to_string(),
            bn_name: bn_name.to_string(),
            params,
            weight,
            conv_bias: None,
            bn_weight,
            bn_bias,
            bn_mean,
            bn_var,
            folded_weight,
            folded_bias,
            frozen: false,
        })
    }

    /// The conv's bias `name` (shape (C_out,)), folded with the BatchNorm.
    pub fn with_conv_bias(mut self, ckpt: &Checkpoint, name: &str) -> Result<ConvBn> {
        let b = ckpt.get_shaped(name, &[self.out_channels()])?.clone();
        let f = |t: &Tensor| t.to_dtype(DType::F64);
        let (w, fb) = fold_batch_norm(
            &f(&self.weight)?,
            Some(&f(&b)?),
            &f(&self.bn_weight)?,
            &f(&self.bn_bias)?,
            &f(&self.bn_mean)?,
            &f(&self.bn_var)?,
            BN_EPS,
        )?;
        self.folded_weight = w.to_dtype(DType::F32)?;
        self.folded_bias = fb.to_dtype(DType::F32)?;
        self.conv_bias = Some((name.to_string(), b));
        Ok(self)
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    /// Inference forward with the folded weights: `relu(bn(conv(x)))` or, without `relu`,
    /// `bn(conv(x))`.
    pub fn forward_eval(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        conv2d_bias_act(x, &self.folded_weight, &self.folded_bias, self.params, relu)
    }

    /// Forward in either mode: eval uses the folded weights; train normalises with the
    /// batch statistics (biased variance, as PyTorch) and records them in `mode`.
    pub fn forward(&self, x: &Tensor, relu: bool, mode: &mut Mode) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Eval => self.forward_eval(x, relu),
            Mode::Train(_) if self.frozen => self.forward_eval(x, relu),
            Mode::Train(stats) => {
                let y = conv2d(
                    x,
                    &self.weight,
                    self.conv_bias.as_ref().map(|(_, b)| b),
                    self.params,
                )?;
                let (y, mean, var) = batch_norm_train(&y, &self.bn_weight, &self.bn_bias, relu)?;
                stats.push(BatchStats {
                    bn_name: self.bn_name.clone(),
                    mean,
                    var,
                });
                Ok(y)
            }
        }
    }

    /// [`ConvBn::forward`] followed by a 2x2 max pool of stride 2; at inference the conv
    /// and the pool run as one op where they can (see [`conv2d_bias_act_max_pool2`]).
    pub fn forward_max_pool2(
        &self,
        x: &Tensor,
        relu: bool,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Train(_) if !self.frozen => max_pool2d(&self.forward(x, relu, mode)?, 2, 2, 0),
            _ => conv2d_bias_act_max_pool2(
                x,
                &self.folded_weight,
                &self.folded_bias,
                self.params,
                relu,
            ),
        }
    }

    /// Output side for an input side.
    pub fn out_size(&self, size: usize) -> usize {
        let p = self.params;
        let k = self.kernel();
        (size + 2 * p.padding - p.dilation * (k - 1) - 1) / p.stride + 1
    }

    /// Multiply-accumulates per image for an input of side `size`.
    pub fn macs(&self, size: usize) -> u64 {
        let d = self.weight.dims();
        let o = self.out_size(size) as u64;
        o * o * (d[0] * d[1] * d[2] * d[3]) as u64
    }

    /// Parameters of the conv and the BatchNorm affine (running statistics are buffers).
    pub fn params(&self) -> usize {
        let bias = self.conv_bias.as_ref().map_or(0, |_| self.out_channels());
        self.weight.elem_count() + bias + 2 * self.out_channels()
    }

    /// The names of every tensor this block reads, including `num_batches_tracked`.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut v = vec![self.conv_name.clone()];
        v.extend(self.conv_bias.iter().map(|(n, _)| n.clone()));
        for s in [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ] {
            v.push(format!("{}.{s}", self.bn_name));
        }
        v
    }
}

/// Folds eval-mode BatchNorm into the preceding conv, in f64 (exact up to rounding).
pub fn fold_bn(
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let f = |t: &Tensor| t.to_dtype(DType::F64);
    let (w, b) = fold_batch_norm(
        &f(w)?,
        None,
        &f(gamma)?,
        &f(beta)?,
        &f(mean)?,
        &f(var)?,
        BN_EPS,
    )?;
    Ok((w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?))
}

/// Training-mode BatchNorm over (N, H, W) per channel, then ReLU if `relu`: returns the
/// output and the batch mean and unbiased variance (detached, for the running statistics).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    relu: bool,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let m = (x.elem_count() / x.dim(1)?) as f64;
    let (y, mean, biased) =
        crate::model::batch_norm::batch_norm_train(x, gamma, beta, BN_EPS, relu)?;
    Ok((y, mean, (biased * (m / (m - 1.0).max(1.0)))?))
}
