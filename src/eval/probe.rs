//! The linear probe: top-1 accuracy of a multinomial logistic regression on frozen features.
//!
//! Features are the encoder's `pool` tap (the representation, before any projection head)
//! of the clean images (no augmentation), computed in eval mode (BatchNorm running
//! statistics). Each feature is standardised with the training split's mean and standard
//! deviation. The classifier (weights + bias) is fitted full-batch by Adam on the mean
//! cross-entropy plus `l2 / 2 * |W|^2`, from zero, for a fixed number of steps: no
//! randomness at all, so the same features give the same accuracy. Feature caching is left to
//! the caller: [`encoder_features`] and [`fit`] are public.

use crate::data::augment::AugmentConfig;
use crate::data::{ImageSet, Normalization};
use crate::model::Encoder;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ProbeSettings {
    /// Full-batch Adam steps.
    pub steps: usize,
    pub lr: f64,
    /// L2 penalty on the weights (not the bias).
    pub l2: f64,
    /// Images per encoder forward pass (memory only).
    pub batch: usize,
    /// Input normalisation; default: the data set's usual one.
    pub normalization: Option<Normalization>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            steps: 1000,
            lr: 0.01,
            l2: 1e-4,
            batch: 500,
            normalization: None,
        }
    }
}

impl ProbeSettings {
    /// Refuses settings that would fit nothing (0 steps) or give NaN weights (a NaN, infinite
    /// or non-positive rate, a negative or NaN penalty), naming `probe`'s flags.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("--steps must be at least 1, got 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a finite number > 0, got {}", self.lr);
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            bail!("--l2 must be a finite number >= 0, got {}", self.l2);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Top-1 accuracy on the test split, in [0, 1].
    pub test_accuracy: f64,
    pub train_accuracy: f64,
    pub train_points: usize,
    pub test_points: usize,
    pub features: usize,
    pub classes: usize,
    /// Final training objective (cross-entropy + L2 term).
    pub final_loss: f64,
}

fn norm_for(set: &ImageSet, s: &ProbeSettings) -> Normalization {
    s.normalization
        .clone()
        .unwrap_or_else(|| Normalization::default_for(set.kind, set.channels))
}

fn clean_images(set: &ImageSet, norm: &Normalization, points: &[usize]) -> Result<Tensor> {
    crate::train::clean_tensor(&AugmentConfig::identity(), norm, set, points)
}

/// Pooled features (N, d) of every image of `set` (clean, eval mode).
pub fn encoder_features(
    encoder: &Encoder,
    set: &ImageSet,
    settings: &ProbeSettings,
) -> Result<Tensor> {
    per_image(encoder, set, settings, |x| Ok(encoder.features(x)?))
}

/// act_u of every unit of `encoder.layers[layer]` for every image of `set`, (N, units), clean,
/// eval mode: what UnitMem reads of that layer, for one view that is the image itself.
pub fn encoder_unit_acts(
    encoder: &Encoder,
    set: &ImageSet,
    settings: &ProbeSettings,
    layer: usize,
) -> Result<Tensor> {
    encoder.require_known_heads("act_u of attention heads", Some(&[layer]))?;
    per_image(encoder, set, settings, |x| {
        let mut acts = encoder.forward_unit_acts(x)?;
        if layer >= acts.len() {
            bail!("layer {layer} of an encoder with {} layers", acts.len());
        }
        Ok(acts.swap_remove(layer))
    })
}

/// `f` of every image of `set` in batches of `settings.batch`, concatenated along the first
/// axis, after checking that the images fit the encoder.
fn per_image(
    encoder: &Encoder,
    set: &ImageSet,
    settings: &ProbeSettings,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let norm = norm_for(set, settings);
    norm.validate(set.channels)?;
    if encoder.in_channels() != set.channels {
        bail!(
            "{}: the encoder takes {} channels, {} has {}",
            encoder.checkpoint.path.display(),
            encoder.in_channels(),
            set.source,
            set.channels
        );
    }
    encoder
        .check_input_size(AugmentConfig::identity().output_size(set))
        .map_err(|e| anyhow::anyhow!("{}: {e}", set.source))?;
    let mut parts = Vec::new();
    let all: Vec<usize> = (0..set.len()).collect();
    for chunk in all.chunks(settings.batch.max(1)) {
        let x = clean_images(set, &norm, chunk)?.to_device(&encoder.device)?;
        parts.push(f(&x)?.to_device(&Device::Cpu)?);
        crate::interrupt::check()?;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The normalised pixels (N, C*H*W) of every image: the raw-pixel baseline.
pub fn pixel_features(set: &ImageSet, settings: &ProbeSettings) -> Result<Tensor> {
    let norm = norm_for(set, settings);
    norm.validate(set.channels)?;
    let all: Vec<usize> = (0..set.len()).collect();
    Ok(clean_images(set, &norm, &all)?.flatten_from(1)?)
}

/// The labels of a set the probe is fitted or scored on (an error naming it when it has none).
pub fn labels_of(set: &ImageSet) -> Result<Vec<u32>> {
    match &set.labels {
        Some(l) => Ok(l.clone()),
        None => bail!("{}: the linear probe needs labels", set.source),
    }
}

/// Fits the probe on `train_x` (N, d) / `train_y` and scores it on the test features.
pub fn fit(
    train_x: &Tensor,
    train_y: &[u32],
    test_x: &Tensor,
    test_y: &[u32],
    settings: &ProbeSettings,
) -> Result<ProbeResult> {
    Ok(fit_head(train_x, train_y, test_x, test_y, settings)?.0)
}

/// A fitted probe as one linear layer on the raw features (the standardisation folded in):
/// `logits = x W^T + b`, `W` of shape (classes, d) as a `Linear` layer stores it.
#[derive(Debug, Clone)]
pub struct LinearHead {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// [`fit`], also returning the fitted classifier.
pub fn fit_head(
    train_x: &Tensor,
    train_y: &[u32],
    test_x: &Tensor,
    test_y: &[u32],
    settings: &ProbeSettings,
) -> Result<(ProbeResult, LinearHead)> {
    settings.validate()?;
    let dev = Device::Cpu;
    let (n, d) = train_x.dims2()?;
    if n != train_y.len() || test_x.dim(0)? != test_y.len() || test_x.dim(1)? != d {
        bail!("probe: features and labels disagree in shape");
    }
    if n == 0 || test_y.is_empty() {
        bail!("probe: no training or test points");
    }
    let classes = train_y
        .iter()
        .chain(test_y)
        .max()
        .map(|&m| m as usize + 1)
        .unwrap_or(0);
    // Standardise with the training statistics (f64 for the statistics).
    let x64 = train_x.to_dtype(DType::F64)?;
    let mean = x64.mean_keepdim(0)?;
    let std = x64.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?.sqrt()?;
    let std = std.maximum(1e-6)?;
    let standardise = |x: &Tensor| -> Result<Tensor> {
        Ok(x.to_dtype(DType::F64)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)?
            .to_dtype(DType::F32)?)
    };
    let xtr = standardise(train_x)?;
    let xte = standardise(test_x)?;
    let mut onehot = vec![0f32; n * classes];
    for (i, &y) in train_y.iter().enumerate() {
        onehot[i * classes + y as usize] = 1.0;
    }
    let y = Tensor::from_vec(onehot, (n, classes), &dev)?;
    let xt = xtr.t()?.contiguous()?;
    let mut w = Tensor::zeros((d, classes), DType::F32, &dev)?;
    let mut b = Tensor::zeros(classes, DType::F32, &dev)?;
    let (mut mw, mut vw) = (w.zeros_like()?, w.zeros_like()?);
    let (mut mb, mut vb) = (b.zeros_like()?, b.zeros_like()?);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    for t in 1..=settings.steps {
        let z = xtr.matmul(&w)?.broadcast_add(&b)?;
        let p = candle_nn::ops::softmax(&z, D::Minus1)?;
        let g = ((p - &y)? / n as f64)?;
        let gw = (xt.matmul(&g)? + (&w * settings.l2)?)?;
        let gb = g.sum(0)?;
        let lr_t = settings.lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32));
        mw = ((mw * b1)? + (&gw * (1.0 - b1))?)?;
        vw = ((vw * b2)? + (gw.sqr()? * (1.0 - b2))?)?;
        mb = ((mb * b1)? + (&gb * (1.0 - b1))?)?;
        vb = ((vb * b2)? + (gb.sqr()? * (1.0 - b2))?)?;
        w = (w - (mw.div(&(vw.sqrt()? + eps)?)? * lr_t)?)?;
        b = (b - (mb.div(&(vb.sqrt()? + eps)?)? * lr_t)?)?;
    }
    let z = xtr.matmul(&w)?.broadcast_add(&b)?;
    let logp = candle_nn::ops::log_softmax(&z, D::Minus1)?;
    let ce = -((logp * &y)?.sum_all()?.to_scalar::<f32>()? as f64) / n as f64;
    let reg = 0.5 * settings.l2 * w.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let acc = |x: &Tensor, ys: &[u32]| -> Result<f64> {
        let pred = x
            .matmul(&w)?
            .broadcast_add(&b)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        Ok(pred.iter().zip(ys).filter(|(a, b)| a == b).count() as f64 / ys.len() as f64)
    };
    let result = ProbeResult {
        test_accuracy: acc(&xte, test_y)?,
        train_accuracy: acc(&xtr, train_y)?,
        train_points: n,
        test_points: test_y.len(),
        features: d,
        classes,
        final_loss: ce + reg,
    };
    // ((x - mean) / std) w + b = x (w / std^T) + (b - (mean / std) w)
    let inv = std.recip()?.to_dtype(DType::F32)?; // (1, d)
    let w_raw = w.broadcast_mul(&inv.t()?)?; // (d, classes)
    let shift = mean.to_dtype(DType::F32)?.broadcast_mul(&inv)?.matmul(&w)?; // (1, classes)
    let head = LinearHead {
        weight: w_raw.t()?.contiguous()?,
        bias: (b.unsqueeze(0)? - shift)?.flatten_all()?,
    };
    Ok((result, head))
}

/// Linear-probe accuracy of a frozen `encoder`: fitted on `train`, scored on `test`.
pub fn probe_accuracy(
    encoder: &Encoder,
    train: &ImageSet,
    test: &ImageSet,
    settings: &ProbeSettings,
) -> Result<ProbeResult> {
    let (ytr, yte) = (labels_of(train)?, labels_of(test)?);
    let ftr = encoder_features(encoder, train, settings)?;
    let fte = encoder_features(encoder, test, settings)?;
    fit(&ftr, &ytr, &fte, &yte, settings)
}

/// The raw-pixel floor: the same probe on the normalised pixels.
pub fn raw_pixel_accuracy(
    train: &ImageSet,
    test: &ImageSet,
    settings: &ProbeSettings,
) -> Result<ProbeResult> {
    let (ytr, yte) = (labels_of(train)?, labels_of(test)?);
    fit(
        &pixel_features(train, settings)?,
        &ytr,
        &pixel_features(test, settings)?,
        &yte,
        settings,
    )
}
