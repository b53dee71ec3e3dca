//! A ViT's attention heads per block: shapes cannot say it (qkv is (3 x width, width)
//! whatever the split), so it comes from, in order: memprune's metadata
//! (`memprune.heads`, written on every rewrite), `--heads` or a policy's `heads:`, the
//! table of published ViT families below, and last a guess (width / 64, timm's usual head
//! width). Head-level operations (measuring heads as units, pruning heads) refuse a guess.

use anyhow::{bail, Result};

/// Where a ViT's head count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadsFrom {
    /// `memprune.heads` in the checkpoint's metadata.
    Metadata,
    /// `--heads` or a policy's `heads:`.
    Flag,
    /// The table of published families: the family's name.
    Table(&'static str),
    /// width / 64: a guess; head-level operations refuse it.
    Guess,
}

impl HeadsFrom {
    /// Words for the output: "from memprune's metadata", ...
    pub fn describe(&self) -> String {
        match self {
            HeadsFrom::Metadata => "from memprune's metadata".into(),
            HeadsFrom::Flag => "from --heads".into(),
            HeadsFrom::Table(name) => format!("from the table of published ViTs ({name})"),
            HeadsFrom::Guess => "GUESSED as width / 64 (set --heads or `heads:`)".into(),
        }
    }
}

/// One published ViT configuration: its width, its MLP width (`None`: any), and its heads.
#[derive(Debug, Clone, Copy)]
pub struct PublishedVit {
    pub name: &'static str,
    pub width: usize,
    pub mlp: Option<usize>,
    pub heads: usize,
}

/// The published ViT families with a class token (timm's `vision_transformer.py`, DeiT,
/// DINO, DINOv2, MAE), matched on width and MLP width; the depth is not compared (no family
/// changes its heads with depth, and truncated copies keep the head width). timm's
/// class-token-free variants (`vit_base_patch16_gap_224`: width 768 with 16 heads,
/// SigLIP, AIMv2) share widths with these and so are never matched from the table.
pub const PUBLISHED: &[PublishedVit] = &[
    PublishedVit {
        name: "ViT-Ti: timm vit_tiny, DeiT-Ti",
        width: 192,
        mlp: Some(768),
        heads: 3,
    },
    PublishedVit {
        name: "ViT-S: timm vit_small, DeiT-S, DINO, DINOv2 ViT-S/14",
        width: 384,
        mlp: Some(1536),
        heads: 6,
    },
    PublishedVit {
        name: "ViT-B: timm vit_base, DeiT-B, DINO, DINOv2 ViT-B/14, MAE ViT-B/16",
        width: 768,
        mlp: Some(3072),
        heads: 12,
    },
    PublishedVit {
        name: "ViT-L: timm vit_large, DINOv2 ViT-L/14, MAE ViT-L/16",
        width: 1024,
        mlp: Some(4096),
        heads: 16,
    },
    PublishedVit {
        name: "ViT-H: timm vit_huge, MAE ViT-H/14",
        width: 1280,
        mlp: Some(5120),
        heads: 16,
    },
    PublishedVit {
        name: "ViT-g: timm vit_giant_patch14",
        width: 1408,
        mlp: Some(6144),
        heads: 16,
    },
    PublishedVit {
        name: "ViT-G: timm vit_gigantic_patch14",
        width: 1664,
        mlp: Some(8192),
        heads: 16,
    },
    PublishedVit {
        name: "ViT-g/14: DINOv2 vit_giant2",
        width: 1536,
        mlp: None,
        heads: 24,
    },
];

/// The published family a ViT of this shape is, if any (class token required).
pub fn published(width: usize, mlp: usize, class_token: bool) -> Option<&'static PublishedVit> {
    if !class_token {
        return None;
    }
    PUBLISHED
        .iter()
        .find(|p| p.width == width && p.mlp.is_none_or(|m| m == mlp))
}

/// `memprune.heads`, strictly: one positive count, or one per block, comma-separated.
pub fn parse_metadata(path: &str, s: &str, depth: usize) -> Result<Vec<usize>> {
    let bad = |why: &str| -> anyhow::Error {
        anyhow::anyhow!(
            "{path}: metadata `memprune.heads` is `{s}`: {why}; expected one positive head count or {depth} of them (one per block) separated by commas, such as `6` or `6,6,5`"
        )
    };
    let t = s.trim();
    if t.starts_with('[') || t.ends_with(']') {
        return Err(bad("brackets are not part of the format"));
    }
    let mut heads = Vec::new();
    for part in t.split(',') {
        let p = part.trim();
        match p.parse::<usize>() {
            Ok(0) => return Err(bad("a block with 0 heads")),
            Ok(h) => heads.push(h),
            Err(_) => return Err(bad(&format!("`{p}` is not a positive whole number"))),
        }
    }
    match heads.len() {
        1 => Ok(vec![heads[0]; depth]),
        n if n == depth => Ok(heads),
        n => Err(bad(&format!("{n} counts for {depth} blocks"))),
    }
}

/// The heads per block and where they came from.
pub fn resolve(
    path: &str,
    metadata: Option<&str>,
    given: Option<usize>,
    width: usize,
    mlp: usize,
    depth: usize,
    class_token: bool,
) -> Result<(Vec<usize>, HeadsFrom)> {
    if given == Some(0) {
        bail!("{path}: --heads / `heads:` must be at least 1");
    }
    if let Some(s) = metadata {
        let heads = parse_metadata(path, s, depth)?;
        if let Some(g) = given {
            if heads.iter().any(|&h| h != g) {
                bail!("{path}: --heads / `heads:` says {g}, but the checkpoint's metadata `memprune.heads` records `{s}` (written when it was rewritten): drop --heads / `heads:`");
            }
        }
        return Ok((heads, HeadsFrom::Metadata));
    }
    if let Some(g) = given {
        return Ok((vec![g; depth], HeadsFrom::Flag));
    }
    if let Some(p) = published(width, mlp, class_token) {
        return Ok((vec![p.heads; depth], HeadsFrom::Table(p.name)));
    }
    if width.is_multiple_of(64) {
        return Ok((vec![width / 64; depth], HeadsFrom::Guess));
    }
    bail!(
        "{path}: the head count cannot be read from shapes, width {width} is no published ViT's and is not a multiple of 64: give --heads (or `heads:` in a policy)"
    )
}

/// The one line a head-level operation refuses a guessed count with.
pub fn guess_refusal(path: &str, width: usize, heads: usize, what: &str) -> String {
    format!(
        "{path}: {what} needs the true attention head count, and {heads} is only a guess from the width ({width} / 64; no metadata, and width {width} is no published ViT's): give --heads (or `heads:` in a policy)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_metadata_is_one_clear_line_each() {
        for s in [
            "abc",
            "-1",
            "4.0",
            "4,4,4,4,4,4,abc",
            "[4,4,4,4,4,3]",
            "",
            "0",
            "4,4",
        ] {
            let e = parse_metadata("m.safetensors", s, 6)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`memprune.heads`"), "{s}: {e}");
            assert!(e.contains("m.safetensors"), "{s}: {e}");
            assert_eq!(e.lines().count(), 1, "{s}: {e}");
        }
        assert_eq!(parse_metadata("m", "4", 3).unwrap(), vec![4, 4, 4]);
        assert_eq!(parse_metadata("m", " 4, 3 ,2", 3).unwrap(), vec![4, 3, 2]);
    }

    #[test]
    fn the_table_knows_mae_vit_h_and_the_order_holds() {
        let r = |m: Option<&str>, g, w, mlp, cls| resolve("m", m, g, w, mlp, 32, cls).unwrap();
        assert_eq!(r(None, None, 1280, 5120, true).0[0], 16);
        assert!(matches!(
            r(None, None, 1280, 5120, true).1,
            HeadsFrom::Table(_)
        ));
        assert_eq!(r(None, None, 1408, 6144, true).0[0], 16);
        assert_eq!(r(None, None, 768, 3072, true).0[0], 12);
        // No class token (timm's gap variants): not from the table.
        assert_eq!(r(None, None, 768, 3072, false).1, HeadsFrom::Guess);
        assert_eq!(
            r(None, None, 128, 512, true),
            (vec![2; 32], HeadsFrom::Guess)
        );
        assert_eq!(
            r(None, Some(4), 128, 512, true),
            (vec![4; 32], HeadsFrom::Flag)
        );
        assert_eq!(r(Some("4"), Some(4), 128, 512, true).1, HeadsFrom::Metadata);
        assert!(resolve("m", Some("4"), Some(2), 128, 512, 32, true).is_err());
        assert!(resolve("m", None, None, 100, 400, 2, true).is_err());
    }
}
