//! Reading partial results and merging them (`memprune merge`): each partial is checked
//! against its own run ([`validate::check`]) before anything is sized from it, then the
//! partials are checked to belong together and their states merged (see [`super::partial`]).
//! Apart from the format ([`super::partial`]) so that the format and its checks
//! ([`super::validate`]) do not import each other.

use crate::shard::partial::{Partial, Run, State, FORMAT, VERSION};
use crate::shard::validate;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

impl Partial {
    /// Reads a partial and checks its digest and every invariant its own run implies; any
    /// problem is one error naming the file. The read is bounded
    /// ([`crate::input::MAX_PARTIAL_BYTES`]) and streams, so a device or a pipe fails at its
    /// first byte that is not JSON.
    pub fn read(path: &Path) -> Result<Partial> {
        let what = "a partial result";
        let r = crate::input::open_bounded(path, crate::input::MAX_PARTIAL_BYTES, what)?;
        let v: serde_json::Value =
            serde_json::from_reader(std::io::BufReader::new(r)).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a memprune partial result (not JSON, or cut short: {e})",
                    path.display()
                )
            })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            bail!(
                "{}: not a memprune partial result (no \"format\": \"{FORMAT}\")",
                path.display()
            );
        }
        let version = v.get("version").and_then(|f| f.as_u64());
        if version != Some(VERSION as u64) {
            bail!(
                "{}: partial format version {}; this memprune reads version {VERSION} (measure the shard again)",
                path.display(),
                version.map_or("(none)".to_string(), |x| x.to_string())
            );
        }
        let p: Partial = serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("{}: malformed partial result: {e}", path.display()))?;
        if p.digest != p.content_digest() {
            bail!(
                "{}: its digest does not match its contents (edited or damaged after memprune wrote it; measure the shard again)",
                path.display()
            );
        }
        validate::check(&p)
            .map_err(|e| anyhow::anyhow!("{}: shard {}: {e}", path.display(), p.shard))?;
        Ok(p)
    }
}

/// The first field (dotted path) where two JSON values differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, &path),
                    _ => Some(path),
                }
            })
        }
        _ if a == b => None,
        _ => Some(if at.is_empty() {
            "(all)".into()
        } else {
            at.into()
        }),
    }
}

/// Merges the partials of one run: every shard exactly once, all of the same run (see the
/// module docs); any problem is one error naming the file.
pub fn merge(parts: Vec<(PathBuf, Partial)>) -> Result<(Run, State)> {
    let Some((first_path, first)) = parts.first() else {
        bail!("merge needs at least one partial result");
    };
    // Read partials are checked already; checked again here for partials made otherwise,
    // and before the count sizes anything.
    for (path, p) in &parts {
        validate::check(p)
            .map_err(|e| anyhow::anyhow!("{}: shard {}: {e}", path.display(), p.shard))?;
    }
    let n = first.shard.count;
    let mut by_index: Vec<Option<usize>> = vec![None; n];
    let first_run = serde_json::to_value(&first.run)?;
    for (k, (path, p)) in parts.iter().enumerate() {
        if p.memprune_version != first.memprune_version {
            bail!(
                "{}: measured by memprune {}, {} by {}: shards must come from the same version",
                path.display(),
                p.memprune_version,
                first_path.display(),
                first.memprune_version
            );
        }
        if p.run != first.run {
            let field = first_difference(&first_run, &serde_json::to_value(&p.run)?, "")
                .unwrap_or_else(|| "(all)".into());
            bail!(
                "{}: not a shard of the same run as {} (`{field}` differs: another checkpoint, data, settings or seed)",
                path.display(),
                first_path.display()
            );
        }
        if p.shard.count != n {
            bail!(
                "{}: shard {} of a run in {} shards, but {} is shard {}",
                path.display(),
                p.shard,
                p.shard.count,
                first_path.display(),
                first.shard
            );
        }
        if let Some(other) = by_index[p.shard.index] {
            bail!(
                "{}: shard {} again (also {}): shards overlap",
                path.display(),
                p.shard,
                parts[other].0.display()
            );
        }
        by_index[p.shard.index] = Some(k);
    }
    let missing: Vec<usize> = (0..n).filter(|&i| by_index[i].is_none()).collect();
    if !missing.is_empty() {
        bail!(
            "shard{} {} of {n} missing (given: {} partial{} of the run in {})",
            if missing.len() == 1 { "" } else { "s" },
            list_some(&missing, 8),
            parts.len(),
            if parts.len() == 1 { "" } else { "s" },
            first_path.display()
        );
    }
    let mut order = by_index.into_iter().flatten().map(|k| &parts[k]);
    let mut state = order.next().expect("n >= 1").1.state.clone();
    for (path, p) in order {
        merge_state(&mut state, &p.state).map_err(|e| {
            anyhow::anyhow!(
                "{}: shard {}: {e} (as {})",
                path.display(),
                p.shard,
                first_path.display()
            )
        })?;
    }
    Ok((first.run.clone(), state))
}

/// `0, 1, 2` or, past `most`, `0, 1, 2, ... and 997 more`.
fn list_some(v: &[usize], most: usize) -> String {
    let shown: Vec<String> = v.iter().take(most).map(|i| i.to_string()).collect();
    if v.len() > most {
        format!("{}, ... and {} more", shown.join(", "), v.len() - most)
    } else {
        shown.join(", ")
    }
}

fn merge_state(a: &mut State, b: &State) -> Result<()> {
    fn opt<T>(
        x: &mut Option<T>,
        y: &Option<T>,
        f: impl Fn(&mut T, &T) -> Result<()>,
    ) -> Result<()> {
        match (x, y) {
            (Some(x), Some(y)) => f(x, y),
            (None, None) => Ok(()),
            _ => bail!("one shard has a control and another not"),
        }
    }
    match (a, b) {
        (
            State::Unit { train, unseen },
            State::Unit {
                train: t,
                unseen: u,
            },
        ) => {
            train.merge(t)?;
            opt(unseen, u, |x, y| x.merge(y))
        }
        (
            State::Class { train, unseen },
            State::Class {
                train: t,
                unseen: u,
            },
        ) => {
            train.merge(t)?;
            opt(unseen, u, |x, y| x.merge(y))
        }
        (
            State::Layer { points, control },
            State::Layer {
                points: p,
                control: c,
            },
        ) => {
            points.extend_from_slice(p);
            opt(control, c, |x, y| {
                x.extend_from_slice(y);
                Ok(())
            })
        }
        _ => bail!("shards of different metrics"),
    }
}
