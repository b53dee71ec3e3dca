//! What one partial result must hold, from its own run alone: a shard of a bounded count,
//! the state of the run's metric with one entry per layer of `run.layers`, exactly the
//! shard's points (and control points), accumulators of consistent shapes, finite values
//! within their ranges, and maxima whose argmax is one of the shard's points. [`check`]
//! runs before anything is allocated from the partial's counts, so that an edited or
//! corrupted partial is one error and never a panic, an abort or wrong numbers.

use crate::metrics::class_mem::ClassMemAccumulator;
use crate::metrics::layer_mem::ssl_mem;
use crate::metrics::unit_mem::{LayerAccumulator, Reduce, UnitMemAccumulator};
use crate::shard::partial::{Metric, Partial, PointBits, Run, State};
use crate::shard::Shard;
use anyhow::{bail, ensure, Result};
use std::collections::HashSet;

/// The most shards a run may be split into (a merge holds one entry per shard).
pub const MAX_SHARDS: usize = 1 << 20;

/// Refuses a shard count above the points (a shard of no point measures nothing) or above
/// [`MAX_SHARDS`].
pub fn check_count(shard: Shard, points: usize) -> Result<()> {
    ensure!(
        shard.count >= 1 && shard.index < shard.count,
        "shard {}/{}: the index must be below the count, and the count at least 1",
        shard.index,
        shard.count
    );
    let most = points.clamp(1, MAX_SHARDS);
    ensure!(
        shard.count <= most,
        "shard {shard}: {} shards of a run of {points} points (at most {most}: one point or more per shard)",
        shard.count
    );
    Ok(())
}

/// Every invariant of one partial that its own run implies (the error names no file: the
/// reader adds it).
pub fn check(p: &Partial) -> Result<()> {
    let run = &p.run;
    check_count(p.shard, run.points.len())?;
    check_run(run)?;
    let pts = p.shard.take(&run.points);
    let ctrl = run.control_points.as_ref().map(|c| p.shard.take(c));
    let layers = run.layers.len();
    match (&p.state, run.metric) {
        (State::Unit { train, unseen }, Metric::Unit) => {
            check_unit(train, run, &pts, "")?;
            match (unseen, &ctrl) {
                (Some(u), Some(c)) => check_unit(u, run, c, "control ")?,
                (None, None) => {}
                _ => bail!("{}", control_mismatch(unseen.is_some())),
            }
        }
        (State::Class { train, unseen }, Metric::Class) => {
            check_class(train, layers, pts.len(), "")?;
            match (unseen, &ctrl) {
                (Some(u), Some(c)) => check_class(u, layers, c.len(), "control ")?,
                (None, None) => {}
                _ => bail!("{}", control_mismatch(unseen.is_some())),
            }
        }
        (State::Layer { points, control }, Metric::Layer) => {
            check_layer_points(points, layers, &pts, "")?;
            match (control, &ctrl) {
                (Some(c), Some(e)) => check_layer_points(c, layers, e, "control ")?,
                (None, None) => {}
                _ => bail!("{}", control_mismatch(control.is_some())),
            }
        }
        (_, m) => bail!(
            "its state is not that of its run's metric ({})",
            match m {
                Metric::Unit => "unit",
                Metric::Class => "class",
                Metric::Layer => "layer",
            }
        ),
    }
    Ok(())
}

fn control_mismatch(state_has: bool) -> &'static str {
    if state_has {
        "its state has control measurements but its run has no control points"
    } else {
        "its run has control points but its state no control measurements"
    }
}

fn check_run(run: &Run) -> Result<()> {
    ensure!(
        !run.layers.is_empty(),
        "its run names no layer (`run.layers`)"
    );
    let mut seen = HashSet::new();
    for l in &run.layers {
        ensure!(seen.insert(l), "its run names layer `{l}` twice");
    }
    ensure!(run.views >= 1, "its run has {} views", run.views);
    let distinct = |v: &[usize]| v.iter().collect::<HashSet<_>>().len() == v.len();
    ensure!(distinct(&run.points), "its run lists a point twice");
    if let Some(c) = &run.control_points {
        ensure!(distinct(c), "its run lists a control point twice");
    }
    Ok(())
}

/// `f64`s that are the sum of finite values.
fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

fn check_unit(acc: &UnitMemAccumulator, run: &Run, pts: &[usize], what: &str) -> Result<()> {
    ensure!(
        acc.reduce == run.reduce,
        "its {what}state's reduction is not its run's"
    );
    ensure!(
        acc.layers.len() == run.layers.len(),
        "its {what}state has {} layers where `run.layers` names {}",
        acc.layers.len(),
        run.layers.len()
    );
    let set: HashSet<usize> = pts.iter().copied().collect();
    for (a, name) in acc.layers.iter().zip(&run.layers) {
        check_unit_layer(a, acc.reduce, pts, &set)
            .map_err(|e| anyhow::anyhow!("{what}layer {name}: {e}"))?;
    }
    Ok(())
}

fn check_unit_layer(
    a: &LayerAccumulator,
    reduce: Reduce,
    pts: &[usize],
    set: &HashSet<usize>,
) -> Result<()> {
    let units = a.max.len();
    ensure!(units >= 1, "no unit");
    ensure!(
        a.argmax.len() == units && a.sum.len() == units,
        "{} maxima, {} argmaxes and {} sums (one each per unit)",
        units,
        a.argmax.len(),
        a.sum.len()
    );
    ensure!(
        a.points == pts.len(),
        "{} points where its shard has {}",
        a.points,
        pts.len()
    );
    ensure!(!pts.is_empty(), "a shard of no point");
    ensure!(finite(&a.max), "a maximum is not finite");
    ensure!(a.sum.iter().all(|s| s.is_finite()), "a sum is not finite");
    for u in 0..units {
        ensure!(
            set.contains(&a.argmax[u]),
            "unit {u}: its maximum is at point {}, which is not one of its shard's points",
            a.argmax[u]
        );
        if !a.signed {
            // Every value is >= 0: max <= sum <= n max.
            let (m, s) = (a.max[u], a.sum[u].value());
            let n = pts.len() as f64;
            ensure!(
                m >= 0.0 && s >= m * (1.0 - 1e-12) && s <= m * n * (1.0 + 1e-12),
                "unit {u}: a maximum of {m} and a sum of {s} over {} points cannot both hold (no value is negative)",
                pts.len()
            );
        }
    }
    match (reduce, &a.values) {
        (Reduce::Median, None) => bail!("no median values (`values`) in a median run"),
        (Reduce::Mean, Some(_)) => bail!("median values (`values`) in a mean run"),
        (Reduce::Mean, None) => {}
        (Reduce::Median, Some(v)) => {
            ensure!(
                v.len() == units,
                "median values of {} units where it has {units}",
                v.len()
            );
            for (u, vals) in v.iter().enumerate() {
                ensure!(
                    vals.len() == pts.len() && vals.iter().map(|x| x.0).eq(pts.iter().copied()),
                    "unit {u}: its median values are not one per point of its shard"
                );
                ensure!(
                    vals.iter().all(|x| x.1.is_finite()),
                    "unit {u}: a median value is not finite"
                );
                let (mut m, mut k) = (f64::NEG_INFINITY, usize::MAX);
                for &(p, x) in vals {
                    if x > m || (x == m && p < k) {
                        (m, k) = (x, p);
                    }
                }
                ensure!(
                    m.to_bits() == a.max[u].to_bits() && k == a.argmax[u],
                    "unit {u}: its maximum is not the maximum of its median values"
                );
                ensure!(
                    a.signed || vals.iter().all(|x| x.1 >= 0.0),
                    "unit {u}: a negative value in a layer marked unsigned"
                );
            }
        }
    }
    Ok(())
}

/// The most classes a ClassMem partial may hold (ImageNet-21k has 21,841).
const MAX_CLASSES: usize = 1 << 20;

fn check_class(acc: &ClassMemAccumulator, layers: usize, n: usize, what: &str) -> Result<()> {
    let c = acc.classes;
    ensure!(
        (1..=MAX_CLASSES).contains(&c),
        "its {what}state has {c} classes"
    );
    ensure!(
        acc.counts.len() == c,
        "its {what}state has {} class counts for {c} classes",
        acc.counts.len()
    );
    ensure!(
        acc.sums.len() == layers && acc.signed.len() == layers,
        "its {what}state has sums of {} layers and signs of {} where `run.layers` names {layers}",
        acc.sums.len(),
        acc.signed.len()
    );
    let total = acc.counts.iter().try_fold(0usize, |t, &k| t.checked_add(k));
    ensure!(
        total == Some(n),
        "its {what}state counts {} points where its shard has {n}",
        total.map_or("more than 2^64".into(), |t| t.to_string())
    );
    for (l, per_class) in acc.sums.iter().enumerate() {
        ensure!(
            per_class.len() == c,
            "its {what}state's layer {l} has sums of {} classes for {c}",
            per_class.len()
        );
        let units = per_class[0].len();
        ensure!(units >= 1, "its {what}state's layer {l} has no unit");
        for (k, s) in per_class.iter().enumerate() {
            ensure!(
                s.len() == units,
                "its {what}state's layer {l} has {} units in class {k} and {units} in class 0",
                s.len()
            );
            ensure!(
                s.iter().all(|x| x.is_finite()),
                "its {what}state's layer {l} has a sum that is not finite"
            );
            ensure!(
                acc.signed[l] || s.iter().all(|x| x.value() >= 0.0),
                "its {what}state's layer {l} has a negative sum in a layer marked unsigned"
            );
            ensure!(
                acc.counts[k] > 0 || s.iter().all(|x| x.value() == 0.0),
                "its {what}state's layer {l} has sums for class {k}, which has no point"
            );
        }
    }
    Ok(())
}

fn check_layer_points(v: &[PointBits], layers: usize, pts: &[usize], what: &str) -> Result<()> {
    ensure!(
        v.len() == pts.len() && v.iter().map(|x| x.point).eq(pts.iter().copied()),
        "its {what}state holds {} points that are not the {} of its shard",
        v.len(),
        pts.len()
    );
    for p in v {
        let at = |e: &str| format!("{what}point {}: {e}", p.point);
        ensure!(
            p.ssl_f.len() == layers && p.ssl_g.len() == layers && p.sslmem.len() == layers,
            "{}",
            at(&format!(
                "SSL_f, SSL_g and SSLMem' of {}, {} and {} layers where `run.layers` names {layers}",
                p.ssl_f.len(),
                p.ssl_g.len(),
                p.sslmem.len()
            ))
        );
        let halves = p.sslmem_first_half.len();
        ensure!(
            (halves == 0 || halves == layers) && p.sslmem_second_half.len() == halves,
            "{}",
            at("the half-view SSLMem' values are not one per layer")
        );
        // d is a distance between unit vectors: in [0, 2]; SSLMem' in [-1, 1].
        let in_range = |x: &[f64], lo: f64, hi: f64| x.iter().all(|v| (lo..=hi).contains(v));
        ensure!(
            in_range(&p.ssl_f, 0.0, 2.0) && in_range(&p.ssl_g, 0.0, 2.0),
            "{}",
            at("an SSL_f or SSL_g value outside [0, 2] (or not finite)")
        );
        ensure!(
            in_range(&p.sslmem_first_half, -1.0, 1.0) && in_range(&p.sslmem_second_half, -1.0, 1.0),
            "{}",
            at("a half-view SSLMem' outside [-1, 1] (or not finite)")
        );
        for l in 0..layers {
            ensure!(
                p.sslmem[l].to_bits() == ssl_mem(p.ssl_f[l], p.ssl_g[l]).to_bits(),
                "{}",
                at(&format!(
                    "layer {l}: SSLMem' {} is not (SSL_g - SSL_f) / (SSL_f + SSL_g) of its SSL_f and SSL_g",
                    p.sslmem[l]
                ))
            );
        }
    }
    Ok(())
}
