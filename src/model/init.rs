//! Seeded, deterministic initialisation of single layers, shared by the families' fresh
//! networks (`resnet9_init`, `resnet_init`) and the training heads.
//!
//! Conv weights: Kaiming normal, fan_out, gain sqrt(2) (torchvision's ResNet init).
//! BatchNorm: weight 1, bias 0, running mean 0, running variance 1. Linear layers:
//! PyTorch's default `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weight and bias. Every tensor
//! draws from its own stream keyed by (seed, tensor name), so adding a head never changes
//! the encoder's initial weights.

use crate::model::init_draws::{normals, rng_for};
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

fn cpu() -> Device {
    Device::Cpu
}

fn kaiming_conv(seed: u64, name: &str, cout: usize, cin: usize, k: usize) -> Result<Tensor> {
    let fan_out = (cout * k * k) as f64;
    let std = (2.0 / fan_out).sqrt() as f32;
    let v: Vec<f32> = normals(&mut rng_for(seed, name), cout * cin * k * k)
        .into_iter()
        .map(|x| x * std)
        .collect();
    Ok(Tensor::from_vec(v, (cout, cin, k, k), &cpu())?)
}

/// Adds `prefix.{weight,bias,running_mean,running_var}` of a fresh BatchNorm with `c` channels.
pub fn batch_norm(out: &mut BTreeMap<String, Tensor>, prefix: &str, c: usize) -> Result<()> {
    let d = cpu();
    out.insert(
        format!("{prefix}.weight"),
        Tensor::ones(c, candle_core::DType::F32, &d)?,
    );
    out.insert(
        format!("{prefix}.bias"),
        Tensor::zeros(c, candle_core::DType::F32, &d)?,
    );
    out.insert(
        format!("{prefix}.running_mean"),
        Tensor::zeros(c, candle_core::DType::F32, &d)?,
    );
    out.insert(
        format!("{prefix}.running_var"),
        Tensor::ones(c, candle_core::DType::F32, &d)?,
    );
    Ok(())
}

/// Adds `prefix.weight` (out, in) and, with `bias`, `prefix.bias` (out): PyTorch's default
/// Linear initialisation.
pub fn linear(
    out: &mut BTreeMap<String, Tensor>,
    seed: u64,
    prefix: &str,
    fan_in: usize,
    fan_out: usize,
    bias: bool,
) -> Result<()> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut rng = rng_for(seed, prefix);
    let w: Vec<f32> = (0..fan_in * fan_out)
        .map(|_| rng.uniform(-bound, bound) as f32)
        .collect();
    out.insert(
        format!("{prefix}.weight"),
        Tensor::from_vec(w, (fan_out, fan_in), &cpu())?,
    );
    if bias {
        let b: Vec<f32> = (0..fan_out)
            .map(|_| rng.uniform(-bound, bound) as f32)
            .collect();
        out.insert(
            format!("{prefix}.bias"),
            Tensor::from_vec(b, fan_out, &cpu())?,
        );
    }
    Ok(())
}

/// Adds a bias-free `{conv}.weight` (cout, cin, k, k) and the BatchNorm `bn` after it.
pub fn conv_bn(
    out: &mut BTreeMap<String, Tensor>,
    seed: u64,
    conv: &str,
    bn: &str,
    cout: usize,
    cin: usize,
    k: usize,
) -> Result<()> {
    let name = format!("{conv}.weight");
    out.insert(name.clone(), kaiming_conv(seed, &name, cout, cin, k)?);
    batch_norm(out, bn, cout)
}

/// Refuses widths whose widest 3x3 conv (`widest` to `widest * expansion` channels), with
/// its gradient and optimizer state, does not fit, before the network is built
/// (`--widths 1000000000,...` is one line, not an abort).
pub fn check_conv_fits(widths: &[usize], expansion: usize) -> Result<()> {
    let widest = widths.iter().copied().max().unwrap_or(0);
    let out = widest.saturating_mul(expansion);
    crate::data::limits::check_alloc(
        &format!("a 3x3 conv of {widest} to {out} channels (--widths), with its gradient and optimizer state,"),
        &[out, widest, 9, 4],
        4,
    )
}
