//! Image folders: `root/<class>/<image>.{png,jpg,jpeg}`, one subfolder per class.
//!
//! Class subfolders sorted by name give the label order (as torchvision's `ImageFolder`);
//! files inside a class are sorted by name too, so the point indices are stable across
//! machines. Hidden entries (starting with `.`) and other extensions are skipped. Images are
//! used as stored when they all have one size (a point is exactly the file's pixels);
//! otherwise they are resized and centre-cropped ([`Prep`]) as the user or the checkpoint's
//! input size says. The set is grayscale when every file is 8-bit single-channel (L8),
//! otherwise RGB (alpha is dropped). A test split's labels index the training split's class
//! list (one list for every split); a class the training split lacks is refused.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;

use super::resize::Prep;
use super::{DatasetKind, ImageSet, PointNames};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of `dir` that satisfy `keep`.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| anyhow!("{}: cannot list: {e}", dir.display()))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e
            .map_err(|e| anyhow!("{}: cannot list: {e}", dir.display()))?
            .path();
        if !hidden(&p) && keep(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The class subfolders of `root`, sorted by name.
pub fn class_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    sorted_entries(root, |p| p.is_dir())
}

struct Decoded {
    rgb: Vec<u8>, // planar CHW, 3 channels
    gray: bool,
    w: u32,
    h: u32,
}

/// Whether a JPEG's bytes run to the end-of-image marker after its first scan (the JPEG
/// decoder fills a file cut short with gray instead of failing). Walks the marker segments
/// from the start, so an EXIF thumbnail's own markers are skipped whole; inside scans a 0xFF
/// byte is stuffed, so 0xFF 0xD9 there is the end. Other formats: true.
fn jpeg_complete(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let m = b[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        if m == 0xD9 {
            return true; // no scan at all: the decoder's own error says so
        }
        if m == 0x01 || (0xD0..=0xD8).contains(&m) {
            i += 2;
            continue;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if m == 0xDA {
            return b
                .get(i + 2 + len..)
                .is_some_and(|rest| rest.windows(2).any(|w| w == [0xFF, 0xD9]));
        }
        i += 2 + len;
    }
    false
}

fn decode(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(&bytes) {
        bail!(
            "{}: a JPEG cut short (no end-of-image marker after its image data)",
            path.display()
        );
    }
    let img = reader
        .decode()
        .map_err(|e| anyhow!("{}: cannot decode image: {e}", path.display()))?;
    // 8- and 16-bit grayscale alike are one channel (into_rgb8 scales 16 bits to 8).
    let gray = matches!(img.color(), image::ColorType::L8 | image::ColorType::L16);
    let (w, h) = (img.width(), img.height());
    let rgb = img.into_rgb8();
    let plane = (w * h) as usize;
    let mut planar = vec![0u8; 3 * plane];
    for (k, px) in rgb.pixels().enumerate() {
        planar[k] = px[0];
        planar[plane + k] = px[1];
        planar[2 * plane + k] = px[2];
    }
    Ok(Decoded {
        rgb: planar,
        gray,
        w,
        h,
    })
}

/// How to read a folder: the class list its labels index, the root its point names are
/// relative to, and the preprocessing of its images.
#[derive(Debug, Clone, Default)]
pub struct FolderRead {
    /// The training split's sorted class names (labels index them); `None`: this folder's.
    pub classes: Option<Vec<String>>,
    /// Point names are file paths relative to this folder; `None`: the folder read.
    pub base: Option<PathBuf>,
    /// Resize / crop as the user asked.
    pub prep: Prep,
    /// The side a folder of mixed-size images is resized and centre-cropped to when the user
    /// asked for neither, and why (the checkpoint's input size).
    pub default_size: Option<(usize, String)>,
}

/// The sorted class names of the class subfolders of `root`.
pub fn class_names(root: &Path) -> Result<Vec<String>> {
    Ok(class_dirs(root)?
        .iter()
        .map(|c| {
            c.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect())
}

/// Reads an image-folder root (one subfolder per class), as stored. Decodes in parallel.
pub fn read_image_folder(root: &Path) -> Result<ImageSet> {
    read_image_folder_with(root, &FolderRead::default())
}

/// Reads an image-folder root (one subfolder per class) as `how` says. Decodes in parallel.
pub fn read_image_folder_with(root: &Path, how: &FolderRead) -> Result<ImageSet> {
    let own = class_names(root)?;
    if own.is_empty() {
        bail!("{}: no class subfolders", root.display());
    }
    let classes = how.classes.clone().unwrap_or_else(|| own.clone());
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for name in &own {
        let Some(label) = classes.iter().position(|c| c == name) else {
            bail!(
                "{}: class `{name}` is not among the training split's classes ({}): labels \
                 index the training split's sorted class names, so its images cannot be scored",
                root.join(name).display(),
                classes.join(", ")
            );
        };
        for f in sorted_entries(&root.join(name), |p| p.is_file() && is_image(p))? {
            files.push(f);
            labels.push(label as u32);
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no .png/.jpg/.jpeg images in its class subfolders",
            root.display()
        );
    }
    let sizes: Vec<(u32, u32)> = files
        .par_iter()
        .map(|f| {
            image::image_dimensions(f)
                .map_err(|e| anyhow!("{}: cannot decode image: {e}", f.display()))
        })
        .collect::<Result<_>>()?;
    let mixed = sizes.iter().position(|s| *s != sizes[0]);
    let (prep, why) = match (how.prep.is_none(), mixed, &how.default_size) {
        (false, _, _) => (how.prep, "--resize/--crop".to_string()),
        (true, None, _) => (Prep::default(), String::new()),
        (true, Some(_), Some((n, why))) => (
            Prep {
                resize: Some(*n),
                crop: Some(*n),
            },
            format!("images of several sizes: {why}, the default; --resize/--crop to change"),
        ),
        (true, Some(k), None) => bail!(
            "{}: image is {}x{}, expected {}x{} (the size of {}): images of different sizes \
             need --resize N and --crop N (the shorter side to N, then the centre NxN, as \
             torchvision's Resize and CenterCrop)",
            files[k].display(),
            sizes[k].0,
            sizes[k].1,
            sizes[0].0,
            sizes[0].1,
            files[0].display()
        ),
    };
    let decoded: Vec<Decoded> = files
        .par_iter()
        .map(|f| {
            let d = decode(f)?;
            let what = f.display().to_string();
            let (rgb, w, h) = prep.apply(d.rgb, 3, d.w as usize, d.h as usize, &what)?;
            Ok(Decoded {
                rgb,
                gray: d.gray,
                w: w as u32,
                h: h as u32,
            })
        })
        .collect::<Result<_>>()?;
    let (w, h) = (decoded[0].w, decoded[0].h);
    for (d, f) in decoded.iter().zip(&files) {
        if (d.w, d.h) != (w, h) {
            bail!(
                "{}: image is {}x{}{}, expected {w}x{h} (the size of {}): {}",
                f.display(),
                d.w,
                d.h,
                if prep.is_none() {
                    ""
                } else {
                    " after resizing"
                },
                files[0].display(),
                if prep.crop.is_none() {
                    "images of other proportions need --crop N too"
                } else {
                    "give --resize N and --crop N"
                }
            );
        }
    }
    let gray = decoded.iter().all(|d| d.gray);
    let plane = (w * h) as usize;
    let channels = if gray { 1 } else { 3 };
    let mut pixels = Vec::with_capacity(decoded.len() * channels * plane);
    for d in &decoded {
        pixels.extend_from_slice(&d.rgb[..channels * plane]);
    }
    let base = how.base.clone().unwrap_or_else(|| root.to_path_buf());
    let names = files
        .iter()
        .map(|f| {
            f.strip_prefix(&base)
                .unwrap_or(f)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let mut notes = Vec::new();
    if !prep.is_none() {
        notes.push(format!("{} ({why})", prep.describe()));
    }
    Ok(ImageSet {
        source: root.display().to_string(),
        pixels,
        labels: Some(labels),
        class_names: Some(classes),
        channels,
        height: h as usize,
        width: w as usize,
        kind: DatasetKind::Folder,
        names: PointNames::Each(names),
        notes,
    })
}
