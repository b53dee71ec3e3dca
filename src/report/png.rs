//! Data-set images as PNG data URIs for the HTML report: small images upscaled with
//! nearest-neighbour (so that 28x28 pixels stay visible as pixels), large ones scaled down.

use crate::data::ImageSet;
use anyhow::{bail, Context, Result};
use image::imageops::FilterType;

/// The side an image is shown at, about: small images grow by an integer factor to at least
/// this, larger ones shrink to it.
pub const SHOWN_SIDE: usize = 84;

/// Image `i` of `set` as PNG bytes, resized for the report (see the module docs).
pub fn png(set: &ImageSet, i: usize) -> Result<Vec<u8>> {
    if i >= set.len() {
        bail!(
            "{}: point {i} is outside the data ({} points)",
            set.source,
            set.len()
        );
    }
    let (w, h, c) = (set.width as u32, set.height as u32, set.channels);
    let px = set.image(i);
    let plane = (w * h) as usize;
    let img: image::DynamicImage = match c {
        1 => image::GrayImage::from_raw(w, h, px.to_vec())
            .context("image buffer")?
            .into(),
        3 => {
            // Planar CHW -> interleaved RGB.
            let rgb: Vec<u8> = (0..plane)
                .flat_map(|p| [px[p], px[plane + p], px[2 * plane + p]])
                .collect();
            image::RgbImage::from_raw(w, h, rgb)
                .context("image buffer")?
                .into()
        }
        _ => {
            // Other channel counts: the first channel, as gray.
            image::GrayImage::from_raw(w, h, px[..plane].to_vec())
                .context("image buffer")?
                .into()
        }
    };
    let side = w.max(h) as usize;
    let img = if side < SHOWN_SIDE {
        let k = SHOWN_SIDE.div_ceil(side.max(1)) as u32;
        img.resize_exact(w * k, h * k, FilterType::Nearest)
    } else if side > SHOWN_SIDE {
        img.resize(SHOWN_SIDE as u32, SHOWN_SIDE as u32, FilterType::Triangle)
    } else {
        img
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .with_context(|| format!("{}: point {i}: cannot encode as PNG", set.source))?;
    Ok(out.into_inner())
}

/// `bytes` as a `data:image/png;base64,...` URI.
pub fn data_uri(bytes: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::encode(bytes))
}
