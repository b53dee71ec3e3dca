//! torchvision's evaluation preprocessing of clean images: `Resize(N)` (the shorter side to
//! N, the other in proportion, bilinear with antialiasing as PIL does) and `CenterCrop(N)`.
//!
//! Resizing uses the `image` crate's triangle (bilinear) filter, which widens its support
//! when shrinking as PIL's bilinear filter does; each channel plane is resized on its own.

use anyhow::{bail, Result};

/// The preprocessing of clean images: none, a shorter-side resize, a centre crop, or both
/// (resize first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prep {
    pub resize: Option<usize>,
    pub crop: Option<usize>,
}

impl Prep {
    pub fn is_none(&self) -> bool {
        self.resize.is_none() && self.crop.is_none()
    }

    /// Refuses a side of 0.
    pub fn validate(&self) -> Result<()> {
        if self.resize == Some(0) {
            bail!("--resize must be at least 1");
        }
        if self.crop == Some(0) {
            bail!("--crop must be at least 1");
        }
        Ok(())
    }

    /// The (width, height) of a `w` x `h` image after this preprocessing.
    pub fn output_size(&self, w: usize, h: usize) -> (usize, usize) {
        let (w, h) = match self.resize {
            Some(n) => shorter_side_to(w, h, n),
            None => (w, h),
        };
        match self.crop {
            Some(c) => (c, c),
            None => (w, h),
        }
    }

    /// A phrase for the data line, e.g. `shorter side resized to 256, centre crop 224`.
    pub fn describe(&self) -> String {
        match (self.resize, self.crop) {
            (Some(r), Some(c)) => format!("shorter side resized to {r}, centre crop {c}x{c}"),
            (Some(r), None) => format!("shorter side resized to {r}"),
            (None, Some(c)) => format!("centre crop {c}x{c}"),
            (None, None) => "as stored".into(),
        }
    }

    /// Planar `c` x `h` x `w` bytes after this preprocessing, with their (width, height).
    /// `what` names the image in errors (a crop larger than the image is refused: torchvision
    /// would pad it with black).
    pub fn apply(
        &self,
        planar: Vec<u8>,
        c: usize,
        w: usize,
        h: usize,
        what: &str,
    ) -> Result<(Vec<u8>, usize, usize)> {
        let (mut px, mut w, mut h) = (planar, w, h);
        if let Some(n) = self.resize {
            let (nw, nh) = shorter_side_to(w, h, n);
            if (nw, nh) != (w, h) {
                px = resize_planar(&px, c, w, h, nw, nh);
                (w, h) = (nw, nh);
            }
        }
        if let Some(k) = self.crop {
            if w < k || h < k {
                bail!(
                    "{what}: image is {w}x{h}{}, smaller than the centre crop {k}x{k} (--crop): \
                     give --resize {k} or more",
                    if self.resize.is_some() {
                        " after resizing"
                    } else {
                        ""
                    }
                );
            }
            // torchvision's CenterCrop: top = round((h - k) / 2), left = round((w - k) / 2).
            let top = ((h - k) as f64 / 2.0).round() as usize;
            let left = ((w - k) as f64 / 2.0).round() as usize;
            let mut out = Vec::with_capacity(c * k * k);
            for ch in 0..c {
                for y in top..top + k {
                    let row = (ch * h + y) * w;
                    out.extend_from_slice(&px[row + left..row + left + k]);
                }
            }
            (px, w, h) = (out, k, k);
        }
        Ok((px, w, h))
    }
}

/// torchvision's `Resize(n)` sizes: the shorter side becomes `n`, the longer
/// `int(n * long / short)`.
pub fn shorter_side_to(w: usize, h: usize, n: usize) -> (usize, usize) {
    if w <= h {
        (n, (n as u64 * h as u64 / w.max(1) as u64) as usize)
    } else {
        ((n as u64 * w as u64 / h.max(1) as u64) as usize, n)
    }
}

fn resize_planar(px: &[u8], c: usize, w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(c * nw * nh);
    for ch in 0..c {
        let plane = px[ch * w * h..(ch + 1) * w * h].to_vec();
        let img =
            image::GrayImage::from_raw(w as u32, h as u32, plane).expect("a plane of w x h bytes");
        let r = image::imageops::resize(
            &img,
            nw as u32,
            nh as u32,
            image::imageops::FilterType::Triangle,
        );
        out.extend_from_slice(r.as_raw());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_torchvision() {
        assert_eq!(shorter_side_to(306, 119, 224), (576, 224));
        assert_eq!(shorter_side_to(100, 200, 50), (50, 100));
        let p = Prep {
            resize: Some(224),
            crop: Some(224),
        };
        let (px, w, h) = p.apply(vec![7u8; 3 * 306 * 119], 3, 306, 119, "x").unwrap();
        assert_eq!((w, h, px.len()), (224, 224, 3 * 224 * 224));
        assert!(px.iter().all(|&v| v == 7));
    }

    #[test]
    fn centre_crop_takes_the_middle() {
        // A 4x1 row 0 1 2 3 (one channel, height 3): centre crop 1... of a 3x3 image.
        let px: Vec<u8> = (0..9).collect();
        let p = Prep {
            resize: None,
            crop: Some(1),
        };
        assert_eq!(p.apply(px, 1, 3, 3, "x").unwrap().0, vec![4]);
        let small = Prep {
            resize: None,
            crop: Some(5),
        };
        let e = small.apply(vec![0; 9], 1, 3, 3, "f.png").unwrap_err();
        assert!(e.to_string().contains("f.png: image is 3x3"), "{e}");
    }
}
