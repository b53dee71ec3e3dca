//! Data: image sets read from real files, point subsets, and the SSL augmentations.
//!
//! Images are kept as bytes (`u8`, planar NCHW) exactly as the files store them, so a
//! 60,000-image training set costs 47 MB however many points a run measures on.
//! Everything else (views, normalisation) is computed on demand from these bytes.

pub mod augment;
pub mod augment_choice;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod limits;
pub mod names;
pub mod normalize;
pub mod npy;
pub mod npy_images;
pub mod open;
pub mod options;
pub mod resize;
pub mod rng;
pub mod subset;

pub use augment::AugmentConfig;
pub use names::PointNames;
pub use normalize::Normalization;
pub use open::{open, Split};
pub use options::DataOptions;
pub use subset::Subset;

/// Which well-known dataset a set is, as far as memprune can tell from its files.
///
/// Used to pick default normalisation statistics; `Unknown`/`Folder` get ImageNet's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
    Cifar10,
    Cifar100,
    Folder,
    #[default]
    Unknown,
}

/// A set of images of one size, with optional labels, as read from disk.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Where the images came from (a file or folder path), for messages.
    pub source: String,
    /// Planar pixels: image `i`, channel `c`, row `y`, column `x` is at
    /// `((i * channels + c) * height + y) * width + x`.
    pub pixels: Vec<u8>,
    /// One label per image, when the source has them.
    pub labels: Option<Vec<u32>>,
    /// Class names in label order, when the source names them (image folders).
    pub class_names: Option<Vec<String>>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The dataset these images come from, when recognised (drives default normalisation).
    pub kind: DatasetKind,
    /// Each point's name in outputs (file path relative to the data root, or file#record).
    pub names: PointNames,
    /// How the images were made from the files, when not as stored (resized, cropped, a
    /// held-out part), one phrase each, for the data line.
    pub notes: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i` (planar CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The name of point `i` in outputs, else its index.
    pub fn point_name(&self, i: usize) -> String {
        self.names.get(i).unwrap_or_else(|| format!("#{i}"))
    }

    /// The points `keep` (in that order) as a set of their own.
    pub fn select(&self, keep: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(keep.len() * self.image_len());
        for &i in keep {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            source: self.source.clone(),
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| keep.iter().map(|&i| l[i]).collect()),
            class_names: self.class_names.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            kind: self.kind,
            names: self.names.select(keep),
            notes: self.notes.clone(),
        }
    }

    /// The label of image `i`, when the set has labels.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }
}
