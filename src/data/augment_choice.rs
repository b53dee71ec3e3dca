//! Which augmentation a command makes its views with, and where that choice came from.
//!
//! docs/METRICS.md defines `Aug` as the distribution the encoder was trained with, so every
//! command that makes views (measure unit/class/layer, report, policies, the experiments)
//! resolves it here, in this order:
//!
//! 1. the augmentation the user gave (`--augment FILE`, a policy's `metrics.augment`);
//! 2. the one the checkpoint records (`memprune.augment`, written by `memprune train`);
//!    for a pair (LayerMem's f and g) both must record the same one, else the command is
//!    refused (both encoders must see the same views, and neither would be a guess);
//! 3. the reference's recorded one when only the reference records one;
//! 4. memprune's default, the SimCLR recipe of docs/METRICS.md, for a checkpoint trained
//!    elsewhere.
//!
//! The caller prints [`ChosenAugment::line`] as the first line of its output and writes
//! [`ChosenAugment::source`] beside the configuration in its JSON settings.

use super::augment::AugmentConfig;
use crate::checkpoint::keys;
use crate::checkpoint::Checkpoint;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::path::Path;

/// The metadata key `memprune train` records the augmentation under.
pub const KEY: &str = keys::AUGMENT;

/// An augmentation the user gave, and where (e.g. `--augment aug.yaml`).
#[derive(Debug, Clone)]
pub struct GivenAugment {
    pub config: AugmentConfig,
    pub from: String,
}

impl GivenAugment {
    /// Reads an augmentation YAML file (`--augment FILE`); errors name the file.
    pub fn from_file(path: &Path) -> Result<GivenAugment> {
        // One reader for augment files: bounded in size, aliases and nesting (src/input.rs).
        let config = AugmentConfig::load(path)?;
        config
            .validate()
            .with_context(|| path.display().to_string())?;
        Ok(GivenAugment {
            config,
            from: format!("--augment {}", path.display()),
        })
    }

    /// `--augment FILE` when given.
    pub fn from_flag(path: Option<&Path>) -> Result<Option<GivenAugment>> {
        path.map(GivenAugment::from_file).transpose()
    }
}

/// The augmentation chosen, with where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct ChosenAugment {
    pub config: AugmentConfig,
    /// Where the choice came from, in words (the JSON settings' `augment_source`).
    pub source: String,
}

impl ChosenAugment {
    /// The choice a `--json` settings object records (`augment`, `augment_source`), if any.
    pub fn of_settings(settings: &serde_json::Value) -> Option<ChosenAugment> {
        Some(ChosenAugment {
            config: serde_json::from_value(settings.get("augment")?.clone()).ok()?,
            source: settings.get("augment_source")?.as_str()?.to_string(),
        })
    }

    /// The line every command that makes views prints first.
    pub fn line(&self) -> String {
        format!("augmentation: {} ({})", describe(&self.config), self.source)
    }
}

/// The augmentation `ckpt` records (`memprune.augment`), if any; a record that is not a
/// valid augmentation is refused with one line naming the file.
pub fn recorded(ckpt: &Checkpoint) -> Result<Option<AugmentConfig>> {
    let Some(text) = ckpt.metadata.get(KEY) else {
        return Ok(None);
    };
    let shown = ckpt.path.display();
    let config: AugmentConfig = serde_json::from_str(text)
        .map_err(|e| anyhow!("{shown}: metadata `{KEY}` is not an augmentation: {e}"))?;
    config
        .validate()
        .map_err(|e| anyhow!("{shown}: metadata `{KEY}`: {e}"))?;
    Ok(Some(config))
}

/// Resolves the augmentation of a command on encoder `f` (and LayerMem's reference `g`):
/// see the module documentation for the order.
pub fn choose(
    given: Option<GivenAugment>,
    f: &Checkpoint,
    g: Option<&Checkpoint>,
) -> Result<ChosenAugment> {
    let rec_f = recorded(f)?;
    let rec_g = g.map(recorded).transpose()?.flatten();
    if let Some(given) = given {
        given
            .config
            .validate()
            .with_context(|| given.from.clone())?;
        return Ok(ChosenAugment {
            config: given.config,
            source: format!("from {}", given.from),
        });
    }
    match (rec_f, rec_g, g) {
        (Some(a), Some(b), Some(g)) if a != b => bail!(
            "{}: trained with another augmentation than {} ({} against {}): both encoders must see the same views; choose them with --augment FILE (a policy: metrics.augment)",
            g.path.display(),
            f.path.display(),
            describe(&b),
            describe(&a)
        ),
        (Some(a), _, _) => Ok(ChosenAugment {
            config: a,
            source: format!("recorded in {} ({KEY})", f.path.display()),
        }),
        (None, Some(b), Some(g)) => Ok(ChosenAugment {
            config: b,
            source: format!(
                "recorded in the reference {} ({KEY}); {} records none",
                g.path.display(),
                f.path.display()
            ),
        }),
        _ => Ok(ChosenAugment {
            config: AugmentConfig::default(),
            source: format!(
                "memprune's SimCLR default: {} records no `{KEY}`; give the encoder's own with --augment FILE",
                f.path.display()
            ),
        }),
    }
}

/// A configuration in one short phrase, e.g. `crop scale 0.2-1, ratio 0.75-1.33, flip 0.5,
/// no colour jitter, no grayscale`.
pub fn describe(a: &AugmentConfig) -> String {
    let mut s = format!(
        "crop scale {}-{}, ratio {:.2}-{:.2}, flip {}",
        a.crop_scale.0, a.crop_scale.1, a.crop_ratio.0, a.crop_ratio.1, a.flip_p
    );
    if a.jitter_p > 0.0 {
        s += &format!(
            ", colour jitter p {} (brightness {}, contrast {}, saturation {}, hue {})",
            a.jitter_p, a.brightness, a.contrast, a.saturation, a.hue
        );
    } else {
        s += ", no colour jitter";
    }
    if a.grayscale_p > 0.0 {
        s += &format!(", grayscale p {}", a.grayscale_p);
    } else {
        s += ", no grayscale";
    }
    if let Some(size) = a.size {
        s += &format!(", size {size}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ckpt(name: &str, aug: Option<&AugmentConfig>) -> Checkpoint {
        let mut meta = BTreeMap::new();
        if let Some(a) = aug {
            meta.insert(KEY.to_string(), serde_json::to_string(a).unwrap());
        }
        Checkpoint::from_tensors(Path::new(name), BTreeMap::new(), meta)
    }

    fn mae() -> AugmentConfig {
        AugmentConfig {
            crop_scale: (0.2, 1.0),
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..AugmentConfig::default()
        }
    }

    #[test]
    fn recorded_augmentation_is_the_default() {
        let f = ckpt("f", Some(&mae()));
        let c = choose(None, &f, None).unwrap();
        assert_eq!(c.config, mae());
        assert!(c.source.contains("recorded in f"), "{}", c.source);
        assert!(c.line().starts_with("augmentation: crop scale 0.2-1,"));
        assert!(c.line().contains("no colour jitter"), "{}", c.line());
    }

    #[test]
    fn foreign_checkpoint_gets_simclr_and_says_so() {
        let c = choose(None, &ckpt("f", None), None).unwrap();
        assert_eq!(c.config, AugmentConfig::default());
        assert!(c.source.contains("SimCLR default"), "{}", c.source);
    }

    #[test]
    fn differing_pair_is_refused_unless_given() {
        let f = ckpt("f", Some(&mae()));
        let g = ckpt("g", Some(&AugmentConfig::default()));
        let e = choose(None, &f, Some(&g)).unwrap_err().to_string();
        assert!(e.contains("--augment"), "{e}");
        let given = GivenAugment {
            config: AugmentConfig::identity(),
            from: "--augment x.yaml".into(),
        };
        let c = choose(Some(given), &f, Some(&g)).unwrap();
        assert_eq!(c.config, AugmentConfig::identity());
        assert!(c.source.contains("--augment x.yaml"));
        // The same record on both: fine.
        let g2 = ckpt("g", Some(&mae()));
        assert_eq!(choose(None, &f, Some(&g2)).unwrap().config, mae());
        // Only the reference records one: that one, said.
        let c = choose(None, &ckpt("f", None), Some(&g2)).unwrap();
        assert_eq!(c.config, mae());
        assert!(c.source.contains("reference"), "{}", c.source);
    }

    #[test]
    fn bad_record_is_refused_naming_the_file() {
        let mut f = ckpt("model.safetensors", None);
        f.metadata
            .insert(KEY.into(), "{\"crop_scale\": [0.5, 0.1]}".into());
        let e = choose(None, &f, None).unwrap_err().to_string();
        assert!(
            e.starts_with("model.safetensors: metadata `memprune.augment`"),
            "{e}"
        );
    }
}
