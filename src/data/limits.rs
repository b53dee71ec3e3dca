//! Bounds on sizes that come from user numbers (`--views`, an augment file's `size`,
//! `--batch`): checked, without overflow, against the memory the machine has before
//! anything is allocated, so a typo is one clear error instead of an abort.

use anyhow::{bail, Result};

/// Bytes of memory available now (`MemAvailable` in /proc/meminfo); None where unknown.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Where the machine does not say: 64 GiB.
const UNKNOWN_LIMIT: u64 = 64 << 30;

/// Fails unless `dims` (elements of `elem_bytes` each) fit in memory; `what` names the
/// allocation and the options that size it.
pub fn check_alloc(what: &str, dims: &[usize], elem_bytes: usize) -> Result<()> {
    let limit = mem_available().unwrap_or(UNKNOWN_LIMIT);
    let bytes = dims
        .iter()
        .try_fold(elem_bytes as u64, |a, &d| a.checked_mul(d as u64));
    match bytes {
        Some(b) if b <= limit => Ok(()),
        Some(b) => bail!(
            "{what} would need {:.1} GB, more than the {:.1} GB of memory available",
            b as f64 / 1e9,
            limit as f64 / 1e9
        ),
        None => bail!("{what} would need more memory than can be addressed"),
    }
}

/// The view tensors of a measurement: a step holds at most `batch` views (a point with more
/// views than that streams them through in batches; a LayerMem pair needs 2) of
/// `channels` x `size` x `size` f32, and never more than all `points` x `views`;
/// `--dump-views` holds all of them at once.
pub fn check_views(
    points: usize,
    views: usize,
    batch: usize,
    channels: usize,
    size: usize,
    dump: bool,
) -> Result<()> {
    let step = batch.max(2).min(points.saturating_mul(views)).max(1);
    check_alloc(
        &format!(
            "one step of {step} views of {channels}x{size}x{size} (--views, --batch, augment size)"
        ),
        &[step, channels, size, size],
        4,
    )?;
    if dump {
        check_alloc(
            &format!("--dump-views of {points} points x {views} views (--views) of {channels}x{size}x{size}"),
            &[points, views, channels, size, size],
            4,
        )?;
    }
    Ok(())
}
