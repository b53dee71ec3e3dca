//! The SSL augmentation `Aug` of docs/METRICS.md ("Augmentations"), reproducible per view.
//!
//! Pipeline (torchvision's SimCLR recipe, every probability and strength configurable):
//! RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter) ->
//! RandomGrayscale -> Normalize. Pixels are `f32` in [0, 1] (byte / 255) throughout.
//!
//! **Reproducibility.** View `v` of point `i` is a pure function of `(seed, i, v)` (and of
//! the config and the image): its random numbers come from a generator keyed by a hash of
//! those three values ([`super::rng`]), never from a shared stream. So views are
//! bit-identical whatever the thread count, batch composition or order, and two encoders
//! (LayerMem's `f` and `g`) see exactly the same views. All parameters are drawn in a fixed
//! order whether or not they are used (crop, flip, jitter gate, jitter order, the four
//! jitter factors, grayscale gate), so changing e.g. `jitter_p` does not change crops.
//!
//! **Semantics vs torchvision.** Crop parameters follow `RandomResizedCrop.get_params`
//! exactly (10 tries with uniform scale and log-uniform ratio, Python's round-half-even,
//! then the central-crop fallback). Resampling is bilinear with half-pixel centres
//! (`align_corners=False`, source coordinates clamped at 0 and the crop edge) and NO
//! antialiasing (torchvision >= 0.17 antialiases downscaling of tensors by default;
//! SimCLR-era code on PIL does not matter much for crops that are mostly upscaled).
//! ColorJitter applies brightness/contrast/saturation/hue in a random order, as
//! torchvision: brightness = blend with black, contrast = blend with the mean of the
//! grayscale image, saturation = blend with the grayscale image, hue = shift of H in HSV
//! (torchvision's tensor `_rgb2hsv`/`_hsv2rgb`), each clamped to [0, 1]. Unlike PIL,
//! nothing is re-quantised to bytes between steps. Grayscale uses ITU-R 601-2 luma
//! (0.299 R + 0.587 G + 0.114 B, as PIL's `convert("L")`), replicated to 3 channels. For
//! single-channel data saturation, hue and grayscale are no-ops. Finally `(x - mean) / std`.

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::{ImageSet, Normalization};

/// Domain tag so view draws never share a stream with other draws.
const AUGMENT_TAG: u64 = 0x4155_474D_454E_5401; // "AUGMENT"

/// Augmentation settings; defaults are the paper's CIFAR setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Output side S (views are C×S×S); default: the image side (min of height, width).
    pub size: Option<usize>,
    /// RandomResizedCrop area fraction range.
    pub crop_scale: (f32, f32),
    /// RandomResizedCrop aspect-ratio (width / height) range.
    pub crop_ratio: (f32, f32),
    /// Probability of a horizontal flip.
    pub flip_p: f32,
    /// Probability of applying ColorJitter.
    pub jitter_p: f32,
    /// Brightness factor drawn from [max(0, 1 - b), 1 + b].
    pub brightness: f32,
    /// Contrast factor drawn from [max(0, 1 - c), 1 + c].
    pub contrast: f32,
    /// Saturation factor drawn from [max(0, 1 - s), 1 + s].
    pub saturation: f32,
    /// Hue shift drawn from [-h, h] (fraction of the hue circle), h in [0, 0.5].
    pub hue: f32,
    /// Probability of converting to grayscale.
    pub grayscale_p: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            size: None,
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
        }
    }
}

impl AugmentConfig {
    /// No randomness at all: the full image, resized to `size` if given, normalised.
    pub fn identity() -> Self {
        AugmentConfig {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            flip_p: 0.0,
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..Self::default()
        }
    }

    /// Checks every field; the error names the field and the rule it breaks.
    /// Reads an augment file (bounded, see [`crate::input::read_yaml`]); errors name it.
    pub fn load(path: &std::path::Path) -> Result<AugmentConfig> {
        let text = crate::input::read_yaml(path, "an augment file")?;
        serde_yaml::from_str::<AugmentConfig>(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn validate(&self) -> Result<()> {
        let all = [
            ("crop_scale.0", self.crop_scale.0),
            ("crop_scale.1", self.crop_scale.1),
            ("crop_ratio.0", self.crop_ratio.0),
            ("crop_ratio.1", self.crop_ratio.1),
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
            ("hue", self.hue),
            ("grayscale_p", self.grayscale_p),
        ];
        if let Some((name, v)) = all.iter().find(|(_, v)| !v.is_finite()) {
            bail!("augment: {name} = {v} is not finite");
        }
        for (name, v) in [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("augment: probability {name} = {v} is not in [0, 1]");
            }
        }
        let (a, b) = self.crop_scale;
        if !(a > 0.0 && a <= b && b <= 1.0) {
            bail!("augment: crop_scale ({a}, {b}) must satisfy 0 < min <= max <= 1");
        }
        let (a, b) = self.crop_ratio;
        if !(a > 0.0 && a <= b) {
            bail!("augment: crop_ratio ({a}, {b}) must satisfy 0 < min <= max");
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if v < 0.0 {
                bail!("augment: {name} = {v} must be >= 0");
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            bail!("augment: hue = {} is not in [0, 0.5]", self.hue);
        }
        if self.size == Some(0) {
            bail!("augment: size must be > 0");
        }
        Ok(())
    }

    /// The output side S for images of `set`.
    pub fn output_size(&self, set: &ImageSet) -> usize {
        self.size.unwrap_or(set.height.min(set.width))
    }

    /// Values in one view of `set`: C × S × S.
    pub fn view_len(&self, set: &ImageSet) -> usize {
        let s = self.output_size(set);
        set.channels * s * s
    }
}

/// A crop box in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// The colour-jitter draw: application order (0 brightness, 1 contrast, 2 saturation,
/// 3 hue) and factors; `None` where the strength is 0 (torchvision skips those).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub order: [u8; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

/// Everything random about one view, drawn by [`sample_params`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    pub crop: CropBox,
    pub flip: bool,
    /// `Some` when colour jitter is applied to this view.
    pub jitter: Option<Jitter>,
    pub grayscale: bool,
}

/// torchvision's `RandomResizedCrop.get_params` for an image of `height` × `width`.
pub fn sample_crop(
    rng: &mut Rng,
    height: usize,
    width: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
) -> CropBox {
    let area = (height * width) as f64;
    let (lr0, lr1) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0 as f64, scale.1 as f64);
        let aspect = rng.uniform(lr0, lr1).exp();
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.below((height - h + 1) as u64) as usize;
            let left = rng.below((width - w + 1) as u64) as usize;
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    // Central-crop fallback.
    let in_ratio = width as f64 / height as f64;
    let (rmin, rmax) = (ratio.0 as f64, ratio.1 as f64);
    let (h, w) = if in_ratio < rmin {
        let w = width;
        (
            ((w as f64 / rmin).round_ties_even() as usize).clamp(1, height),
            w,
        )
    } else if in_ratio > rmax {
        let h = height;
        (
            h,
            ((h as f64 * rmax).round_ties_even() as usize).clamp(1, width),
        )
    } else {
        (height, width)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// Draws the random parameters of view `view` of `point` (a pure function of its inputs).
pub fn sample_params(
    cfg: &AugmentConfig,
    height: usize,
    width: usize,
    seed: u64,
    point: usize,
    view: u64,
) -> ViewParams {
    let mut rng = Rng::from_key(&[AUGMENT_TAG, seed, point as u64, view]);
    let crop = sample_crop(&mut rng, height, width, cfg.crop_scale, cfg.crop_ratio);
    let flip = rng.next_f64() < cfg.flip_p as f64;
    let apply_jitter = rng.next_f64() < cfg.jitter_p as f64;
    let mut order = [0u8, 1, 2, 3];
    for i in (1..4).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let mut factor = |strength: f32| {
        let s = strength as f64;
        let f = rng.uniform((1.0 - s).max(0.0), 1.0 + s) as f32;
        (strength > 0.0).then_some(f)
    };
    let brightness = factor(cfg.brightness);
    let contrast = factor(cfg.contrast);
    let saturation = factor(cfg.saturation);
    let h = rng.uniform(-(cfg.hue as f64), cfg.hue as f64) as f32;
    let hue = (cfg.hue > 0.0).then_some(h);
    let grayscale = rng.next_f64() < cfg.grayscale_p as f64;
    let jitter = apply_jitter.then_some(Jitter {
        order,
        brightness,
        contrast,
        saturation,
        hue,
    });
    ViewParams {
        crop,
        flip,
        jitter,
        grayscale,
    }
}

/// Bilinear (half-pixel centres, no antialias) resize of `crop` of image `img`
/// (planar C × H × W bytes) to C × S × S values in [0, 1].
fn resized_crop(
    img: &[u8],
    c: usize,
    h: usize,
    w: usize,
    crop: CropBox,
    s: usize,
    out: &mut [f32],
) {
    let plane_in = h * w;
    if crop.height == s && crop.width == s {
        for ch in 0..c {
            for y in 0..s {
                let row = ch * plane_in + (crop.top + y) * w + crop.left;
                for x in 0..s {
                    out[(ch * s + y) * s + x] = img[row + x] as f32 / 255.0;
                }
            }
        }
        return;
    }
    // Source coordinate for output index o: (o + 0.5) * in / out - 0.5, clamped at 0.
    let coeffs = |n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f64 / s as f64;
        (0..s)
            .map(|o| {
                let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (src - i0 as f64) as f32)
            })
            .collect()
    };
    let xs = coeffs(crop.width);
    let ys = coeffs(crop.height);
    for ch in 0..c {
        let base = ch * plane_in;
        for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
            let r0 = base + (crop.top + y0) * w + crop.left;
            let r1 = base + (crop.top + y1) * w + crop.left;
            for (ox, &(x0, x1, lx)) in xs.iter().enumerate() {
                let p = |r: usize, x: usize| img[r + x] as f32 / 255.0;
                let top = (1.0 - lx) * p(r0, x0) + lx * p(r0, x1);
                let bot = (1.0 - lx) * p(r1, x0) + lx * p(r1, x1);
                out[(ch * s + oy) * s + ox] = (1.0 - ly) * top + ly * bot;
            }
        }
    }
}

fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn blend(x: f32, other: f32, f: f32) -> f32 {
    (f * x + (1.0 - f) * other).clamp(0.0, 1.0)
}

/// Mean of the grayscale image (or of the single channel), as contrast's blend target.
fn gray_mean(buf: &[f32], c: usize, plane: usize) -> f32 {
    let sum: f64 = if c == 3 {
        (0..plane)
            .map(|k| luma(buf[k], buf[plane + k], buf[2 * plane + k]) as f64)
            .sum()
    } else {
        buf.iter().map(|&v| v as f64).sum()
    };
    let n = if c == 3 { plane } else { buf.len() };
    (sum / n.max(1) as f64) as f32
}

/// torchvision `_rgb2hsv` on one pixel.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0) % 1.0, s, maxc)
}

/// torchvision `_hsv2rgb` on one pixel.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

fn apply_jitter(j: &Jitter, buf: &mut [f32], c: usize, plane: usize) {
    for &op in &j.order {
        match op {
            0 => {
                if let Some(f) = j.brightness {
                    buf.iter_mut().for_each(|v| *v = blend(*v, 0.0, f));
                }
            }
            1 => {
                if let Some(f) = j.contrast {
                    let m = gray_mean(buf, c, plane);
                    buf.iter_mut().for_each(|v| *v = blend(*v, m, f));
                }
            }
            2 => {
                if let (Some(f), 3) = (j.saturation, c) {
                    let (r, rest) = buf.split_at_mut(plane);
                    let (g, b) = rest.split_at_mut(plane);
                    for k in 0..plane {
                        let l = luma(r[k], g[k], b[k]);
                        r[k] = blend(r[k], l, f);
                        g[k] = blend(g[k], l, f);
                        b[k] = blend(b[k], l, f);
                    }
                }
            }
            _ => {
                if let (Some(shift), 3) = (j.hue, c) {
                    let (r, rest) = buf.split_at_mut(plane);
                    let (g, b) = rest.split_at_mut(plane);
                    for k in 0..plane {
                        let (h, s, v) = rgb_to_hsv(r[k], g[k], b[k]);
                        let h = (h + shift).rem_euclid(1.0);
                        (r[k], g[k], b[k]) = hsv_to_rgb(h, s, v);
                    }
                }
            }
        }
    }
}

fn normalise(norm: &Normalization, buf: &mut [f32], plane: usize) {
    for (ch, chunk) in buf.chunks_exact_mut(plane).enumerate() {
        let (m, sd) = (norm.mean[ch], norm.std[ch]);
        chunk.iter_mut().for_each(|v| *v = (*v - m) / sd);
    }
}

fn check_out(cfg: &AugmentConfig, norm: &Normalization, set: &ImageSet, out: &[f32]) -> usize {
    let s = cfg.output_size(set);
    assert_eq!(
        out.len(),
        set.channels * s * s,
        "view buffer must hold C*S*S values"
    );
    assert_eq!(
        norm.mean.len(),
        set.channels,
        "normalisation channels != data channels"
    );
    s
}

/// Renders a view with already-drawn parameters into `out` (C × S × S, normalised).
pub fn render(
    params: &ViewParams,
    norm: &Normalization,
    set: &ImageSet,
    point: usize,
    size: usize,
    out: &mut [f32],
) {
    let (c, s) = (set.channels, size);
    let plane = s * s;
    resized_crop(
        set.image(point),
        c,
        set.height,
        set.width,
        params.crop,
        s,
        out,
    );
    if params.flip {
        out.chunks_exact_mut(s).for_each(|row| row.reverse());
    }
    if let Some(j) = &params.jitter {
        apply_jitter(j, out, c, plane);
    }
    if params.grayscale && c == 3 {
        for k in 0..plane {
            let l = luma(out[k], out[plane + k], out[2 * plane + k]);
            (out[k], out[plane + k], out[2 * plane + k]) = (l, l, l);
        }
    }
    normalise(norm, out, plane);
}

/// Writes view `view` of `point` (normalised, C × S × S) into `out`; a pure function of
/// `(cfg, norm, image, seed, point, view)`. `cfg` should have passed
/// [`AugmentConfig::validate`].
///
/// Panics if `out.len() != cfg.view_len(set)` or `norm` does not have `set.channels` values.
pub fn view(
    cfg: &AugmentConfig,
    norm: &Normalization,
    set: &ImageSet,
    point: usize,
    seed: u64,
    view: u64,
    out: &mut [f32],
) {
    let s = check_out(cfg, norm, set, out);
    let p = sample_params(cfg, set.height, set.width, seed, point, view);
    render(&p, norm, set, point, s, out);
}

/// The un-augmented image: the whole image, bilinearly resized to S × S when its size
/// differs, normalised. No randomness. Panics as [`view`].
pub fn clean(
    cfg: &AugmentConfig,
    norm: &Normalization,
    set: &ImageSet,
    point: usize,
    out: &mut [f32],
) {
    let s = check_out(cfg, norm, set, out);
    let crop = CropBox {
        top: 0,
        left: 0,
        height: set.height,
        width: set.width,
    };
    let p = ViewParams {
        crop,
        flip: false,
        jitter: None,
        grayscale: false,
    };
    render(&p, norm, set, point, s, out);
}

/// Many views at once, in parallel (rayon): item `k` = `(point, view)` fills
/// `out[k * L..(k + 1) * L]` with `L = cfg.view_len(set)`. Bit-identical to calling
/// [`view`] on each item, whatever the pool size.
pub fn views_batch(
    cfg: &AugmentConfig,
    norm: &Normalization,
    set: &ImageSet,
    items: &[(usize, u64)],
    seed: u64,
) -> Vec<f32> {
    let len = cfg.view_len(set);
    let mut out = vec![0f32; items.len() * len];
    out.par_chunks_mut(len.max(1))
        .zip(items.par_iter())
        .for_each(|(buf, &(point, v))| view(cfg, norm, set, point, seed, v, buf));
    out
}

/// Clean images of many points at once, in parallel; layout as [`views_batch`].
pub fn clean_batch(
    cfg: &AugmentConfig,
    norm: &Normalization,
    set: &ImageSet,
    points: &[usize],
) -> Vec<f32> {
    let len = cfg.view_len(set);
    let mut out = vec![0f32; points.len() * len];
    out.par_chunks_mut(len.max(1))
        .zip(points.par_iter())
        .for_each(|(buf, &point)| clean(cfg, norm, set, point, buf));
    out
}
