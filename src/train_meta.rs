//! What `memprune train` records in a checkpoint's metadata, and the checks that read it.
//!
//! Keys (all values are strings, JSON where structured): `memprune.split`
//! (`shared+candidates`, `shared+independent` or `all`), `memprune.split_seed`,
//! `memprune.data_hash`, `memprune.data_points`, `memprune.candidates` (JSON list of the
//! candidate indices, in f only).

use crate::checkpoint::Checkpoint;
use anyhow::{bail, Result};

/// The candidate indices stored in f's metadata (`memprune.candidates`), if any.
pub fn candidates(ckpt: &Checkpoint) -> Result<Option<Vec<usize>>> {
    match ckpt.metadata_json("memprune.candidates")? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "{}: metadata `memprune.candidates` is not a list of point indices: {e}",
                ckpt.path.display()
            )
        }),
    }
}

/// Refuses a LayerMem pair whose recorded splits do not fit: f must be trained on shared +
/// candidates and g on shared + independent of the same split (seed, data). Checkpoints that
/// record no split (trained elsewhere) are the user's responsibility and pass.
pub fn check_reference(f: &Checkpoint, g: &Checkpoint) -> Result<()> {
    let get = |c: &Checkpoint, k: &str| c.metadata.get(k).cloned();
    let (sf, sg) = (get(f, "memprune.split"), get(g, "memprune.split"));
    if sf.is_none() || sg.is_none() {
        return Ok(());
    }
    let (fp, gp) = (f.path.display(), g.path.display());
    if sf.as_deref() != Some("shared+candidates") {
        bail!("{fp}: trained on split `{}`, but LayerMem's model must be trained on shared+candidates", sf.unwrap_or_default());
    }
    if sg.as_deref() != Some("shared+independent") {
        bail!("{gp}: trained on split `{}`, but LayerMem's reference must be trained on shared+independent", sg.unwrap_or_default());
    }
    for key in [
        "memprune.split_seed",
        "memprune.data_hash",
        "memprune.data_points",
    ] {
        if get(f, key) != get(g, key) {
            bail!("{gp}: `{key}` is {:?} but {fp} has {:?}: the two encoders come from different splits", get(g, key), get(f, key));
        }
    }
    Ok(())
}
