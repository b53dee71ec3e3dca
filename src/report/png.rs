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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(channels: usize, side: usize, pixels: Vec<u8>) -> ImageSet {
        ImageSet {
            source: "test".into(),
            pixels,
            labels: None,
            class_names: None,
            channels,
            height: side,
            width: side,
            kind: crate::data::DatasetKind::Unknown,
            names: Default::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn small_gray_images_grow_by_nearest_neighbour() {
        // Two 28x28 images; the second has a gradient, so every pixel is distinct per row.
        let mut px = vec![0u8; 28 * 28];
        px.extend((0..28 * 28).map(|i| (i % 256) as u8));
        let s = set(1, 28, px);
        let img = image::load_from_memory(&png(&s, 1).unwrap())
            .unwrap()
            .to_luma8();
        assert_eq!(img.dimensions(), (84, 84));
        for y in 0..84u32 {
            for x in 0..84u32 {
                let src = s.image(1)[(y / 3 * 28 + x / 3) as usize];
                assert_eq!(img.get_pixel(x, y).0[0], src, "({x}, {y})");
            }
        }
        assert!(png(&s, 2).is_err());
    }

    #[test]
    fn planar_rgb_becomes_interleaved() {
        // 2x2 RGB, planar: R plane, G plane, B plane.
        let s = set(3, 2, vec![10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]);
        let img = image::load_from_memory(&png(&s, 0).unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (84, 84));
        assert_eq!(img.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(img.get_pixel(83, 0).0, [11, 21, 31]);
        assert_eq!(img.get_pixel(0, 83).0, [12, 22, 32]);
        assert_eq!(img.get_pixel(83, 83).0, [13, 23, 33]);
    }

    #[test]
    fn data_uris_are_base64_png() {
        let u = data_uri(&[0x89, b'P', b'N', b'G']);
        assert_eq!(u, "data:image/png;base64,iVBORw==");
    }
}
