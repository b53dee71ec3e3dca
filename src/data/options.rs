//! How a data path becomes the sets a command reads: where the unseen (test) points come
//! from when an image folder has no `test/` subfolder, and how images of mixed sizes are
//! made one size. The same flags on every command that reads data (`--test-data`,
//! `--holdout`, `--resize`, `--crop`).

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::resize::Prep;

/// The data flags of a command (see the module doc).
#[derive(clap::Args, Debug, Clone, Default, serde::Serialize)]
pub struct DataOptions {
    /// The unseen points (the control's, the probe's test split): an image folder (class
    /// subfolders, labelled by the training split's class list), or a data set whose test
    /// split is read. Default: the test split of --data (its `test/` subfolder).
    #[arg(long, value_name = "DIR")]
    pub test_data: Option<PathBuf>,
    /// An image folder without train/ and test/ subfolders: hold out this fraction of its
    /// images (0 < F < 1, drawn by --holdout-seed) as the unseen test split; the rest is the
    /// training split. They must be images the encoder did not train on.
    #[arg(long, value_name = "F")]
    pub holdout: Option<f64>,
    /// Seed of the --holdout draw.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub holdout_seed: u64,
    /// Resize every image's shorter side to N pixels (torchvision's Resize(N), bilinear,
    /// antialiased), before --crop. Default: images as stored when they all have one size,
    /// else the checkpoint's input size (--resize and --crop of 224 for an ImageNet-stem
    /// ResNet; a ViT's from its position embedding).
    #[arg(long, value_name = "N")]
    pub resize: Option<usize>,
    /// Crop the centre NxN of every image (torchvision's CenterCrop(N)), after --resize.
    #[arg(long, value_name = "N")]
    pub crop: Option<usize>,
    /// The side mixed-size image folders get by default, and why: set from the checkpoint.
    #[arg(skip)]
    #[serde(skip)]
    pub default_size: Option<(usize, String)>,
}

impl DataOptions {
    pub fn prep(&self) -> Prep {
        Prep {
            resize: self.resize,
            crop: self.crop,
        }
    }

    /// These options with the default size of `encoder` (its input size).
    pub fn for_encoder(&self, encoder: &crate::model::Encoder) -> DataOptions {
        DataOptions {
            default_size: encoder.input_size(),
            ..self.clone()
        }
    }

    /// Refuses sides of 0 and a hold-out fraction outside (0, 1).
    pub fn validate(&self) -> Result<()> {
        self.prep().validate()?;
        if let Some(f) = self.holdout {
            if !(f > 0.0 && f < 1.0) {
                bail!("--holdout {f}: the held-out fraction must lie strictly between 0 and 1");
            }
            if self.test_data.is_some() {
                bail!("--holdout and --test-data both give the unseen points: choose one");
            }
        }
        Ok(())
    }

    /// The settings as recorded in JSON outputs (absent ones left out).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The line a command refuses with when an image folder has no test split.
pub fn no_test_split(path: &std::path::Path) -> String {
    format!(
        "{}: an image folder without train/ and test/ subfolders has no unseen points (its \
         test split would be its training images): give --test-data DIR, put the training \
         and unseen images in train/ and test/ subfolders, or hold out a fraction with \
         --holdout F",
        path.display()
    )
}

/// The data line commands print: where the points come from, how the images were made and
/// the normalisation, with where each choice came from. `custom`: the user set --mean/--std.
pub fn data_line(
    set: &super::ImageSet,
    split: &str,
    normalization: &super::Normalization,
    custom: bool,
) -> String {
    let fmt = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let origin = if custom {
        "--mean/--std".to_string()
    } else {
        match set.kind {
            super::DatasetKind::Folder | super::DatasetKind::Unknown if set.channels == 3 => {
                "ImageNet's, the default for RGB images; set --mean/--std".into()
            }
            super::DatasetKind::Folder | super::DatasetKind::Unknown => {
                "the default for unknown data; set --mean/--std".into()
            }
            k => format!("{k:?}'s, the default for this data set; set --mean/--std"),
        }
    };
    let mut how = vec![format!(
        "{} images, {}x{}x{}",
        set.len(),
        set.channels,
        set.height,
        set.width
    )];
    how.extend(set.notes.iter().cloned());
    format!(
        "data: {} ({split} split: {}); normalisation mean [{}] std [{}] ({origin})",
        set.source,
        how.join("; "),
        fmt(&normalization.mean),
        fmt(&normalization.std)
    )
}
