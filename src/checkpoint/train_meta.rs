//! What `memprune train` records in a checkpoint's metadata, and the checks that read it.
//!
//! Keys (all values are strings, JSON where structured): `memprune.split`
//! (`shared+candidates`, `shared+independent` or `all`), `memprune.split_seed`,
//! `memprune.data_hash`, `memprune.data_points`, `memprune.candidates` (JSON list of the
//! candidate indices, in f only).

use crate::checkpoint::keys;
use crate::checkpoint::Checkpoint;
use anyhow::{bail, Result};

/// The candidate indices stored in f's metadata (`memprune.candidates`), if any.
/// For a g (shared + independent), its independent points: the points it saw and f did not.
pub fn candidates(ckpt: &Checkpoint) -> Result<Option<Vec<usize>>> {
    let key = if ckpt.metadata.contains_key(keys::CANDIDATES) {
        keys::CANDIDATES
    } else {
        keys::INDEPENDENT
    };
    point_list(ckpt, key)
}

/// g's independent points (the points it trained on and f did not) when g is a reference
/// trained by memprune on shared + independent: the symmetric control of LayerMem.
pub fn independent_points(g: &Checkpoint) -> Result<Option<Vec<usize>>> {
    if g.metadata.get(keys::SPLIT).map(String::as_str) != Some("shared+independent") {
        return Ok(None);
    }
    candidates(g)
}

/// The list of point indices under metadata `key`: present, non-empty and without
/// duplicates (an empty list would measure nothing, a duplicate would count twice).
fn point_list(ckpt: &Checkpoint, key: &str) -> Result<Option<Vec<usize>>> {
    let shown = ckpt.path.display();
    let Some(v) = ckpt.metadata_json(key)? else {
        return Ok(None);
    };
    let v: Vec<usize> = serde_json::from_value(v).map_err(|e| {
        anyhow::anyhow!("{shown}: metadata `{key}` is not a list of point indices: {e}")
    })?;
    if v.is_empty() {
        bail!("{shown}: metadata `{key}` is an empty list of points");
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = v.iter().find(|&&p| !seen.insert(p)) {
        bail!("{shown}: metadata `{key}` lists point {d} twice");
    }
    Ok(Some(v))
}

/// Refuses a LayerMem pair whose recorded splits do not fit: f must be trained on shared +
/// candidates and g on shared + independent of the same split (seed, data). Checkpoints that
/// record no split (trained elsewhere) are the user's responsibility and pass.
pub fn check_reference(f: &Checkpoint, g: &Checkpoint) -> Result<()> {
    let get = |c: &Checkpoint, k: &str| c.metadata.get(k).cloned();
    let (sf, sg) = (get(f, keys::SPLIT), get(g, keys::SPLIT));
    if sf.is_none() || sg.is_none() {
        return Ok(());
    }
    let (fp, gp) = (f.path.display(), g.path.display());
    // f on shared + candidates against g on shared + independent, or the roles swapped
    // (g scored on its independent points against f): both score points one saw and the
    // other did not.
    let pair = (sf.as_deref().unwrap_or(""), sg.as_deref().unwrap_or(""));
    let ok = matches!(
        pair,
        ("shared+candidates", "shared+independent") | ("shared+independent", "shared+candidates")
    );
    if !ok {
        if pair.0 != "shared+candidates" && pair.0 != "shared+independent" {
            bail!("{fp}: trained on split `{}`, but LayerMem's model must be trained on shared+candidates (or shared+independent, against a shared+candidates reference)", pair.0);
        }
        let want = if pair.0 == "shared+candidates" {
            "shared+independent"
        } else {
            "shared+candidates"
        };
        bail!("{gp}: trained on split `{}`, but LayerMem's reference for {fp} (`{}`) must be trained on {want}", pair.1, pair.0);
    }
    for key in [keys::SPLIT_SEED, keys::DATA_HASH, keys::DATA_POINTS] {
        if get(f, key) != get(g, key) {
            bail!("{gp}: `{key}` is {:?} but {fp} has {:?}: the two encoders come from different splits", get(g, key), get(f, key));
        }
    }
    Ok(())
}

/// The points of `set` that the checkpoint was trained on, from its recorded split
/// (`memprune.split`, `memprune.split_seed`), when its `memprune.data_hash` is this set's.
pub fn training_points(
    ckpt: &Checkpoint,
    set: &crate::data::ImageSet,
) -> Result<Option<Vec<usize>>> {
    let m = &ckpt.metadata;
    let (Some(split), Some(seed), Some(hash)) = (
        m.get(keys::SPLIT),
        m.get(keys::SPLIT_SEED),
        m.get(keys::DATA_HASH),
    ) else {
        return Ok(None);
    };
    let Some(kind) = crate::train::split::SplitKind::from_name(split) else {
        bail!(
            "{}: unknown `memprune.split` {split:?}",
            ckpt.path.display()
        );
    };
    let seed: u64 = seed.parse().map_err(|_| {
        anyhow::anyhow!(
            "{}: `memprune.split_seed` {seed:?} is not an integer",
            ckpt.path.display()
        )
    })?;
    if *hash != crate::train::data_hash(set) {
        return Ok(None);
    }
    Ok(Some(
        crate::train::split::split(set.len(), seed).train_points(kind),
    ))
}

/// The planted (known atypical) points recorded in `memprune.planted`, if any.
pub fn planted(ckpt: &Checkpoint) -> Result<Option<Vec<usize>>> {
    point_list(ckpt, keys::PLANTED)
}

/// Whether `set` is the data the checkpoint records training on (`memprune.data_hash`):
/// `None` when it records no hash (trained elsewhere: the user's responsibility).
pub fn trained_on(ckpt: &Checkpoint, set: &crate::data::ImageSet) -> Option<bool> {
    let hash = ckpt.metadata.get(keys::DATA_HASH)?;
    Some(*hash == crate::train::data_hash(set))
}

/// Refuses to use the point indices a checkpoint records (`what`: its candidates) on data
/// other than the data it was trained on: they would name other images.
pub fn check_recorded_points(
    ckpt: &Checkpoint,
    set: &crate::data::ImageSet,
    what: &str,
) -> Result<()> {
    if trained_on(ckpt, set) == Some(false) {
        bail!(
            "{}: its recorded {what} index the data it was trained on (memprune.data_hash), \
             not {} (another hash): they would name other images; choose this data's points \
             with --range START..END or --indices FILE",
            ckpt.path.display(),
            set.source
        );
    }
    Ok(())
}

/// The planted points of [`planted`], when `set` is the data the checkpoint trained on (or
/// it records no data hash); `None` on other data, where the indices name other images.
pub fn planted_on(ckpt: &Checkpoint, set: &crate::data::ImageSet) -> Result<Option<Vec<usize>>> {
    if trained_on(ckpt, set) == Some(false) {
        return Ok(None);
    }
    planted(ckpt)
}
