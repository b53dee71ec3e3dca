//! The measure job: augmented views of data points -> encoder forward passes -> the
//! streaming metric accumulators of [`crate::metrics`].
//!
//! Points are processed in chunks of `batch` views. View `v` of point `i` depends only on
//! (seed, i, v), and each image's forward pass does not depend on the rest of its batch, so
//! the numbers are the same whatever the batch size or thread count.

use crate::data::augment::{self, AugmentConfig};
use crate::data::normalize::Normalization;
use crate::data::ImageSet;
use crate::metrics::class_mem::ClassMemAccumulator;
use crate::metrics::layer_mem::{self, normalized_distance, Pairing, PointScores};
use crate::metrics::unit_mem::{Reduce, UnitMemAccumulator, UnitMemLayer};
use crate::model::Encoder;
use crate::shard::partial::State;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How views are made and batched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewSettings {
    pub augment: AugmentConfig,
    pub normalization: Normalization,
    pub seed: u64,
    /// Views per forward pass (memory, not results).
    pub batch: usize,
}

impl ViewSettings {
    /// Side of the views for images of `set`: the augment's own rule (its `size`, else the
    /// shorter side), so that the tensor is shaped as the views are made.
    pub fn size(&self, set: &ImageSet) -> usize {
        self.augment.output_size(set)
    }

    /// The views `items` = (point, view index) as an (n, C, S, S) tensor.
    pub fn views(&self, set: &ImageSet, items: &[(usize, u64)]) -> Result<Tensor> {
        let s = self.size(set);
        let data = augment::views_batch(&self.augment, &self.normalization, set, items, self.seed);
        Ok(Tensor::from_vec(
            data,
            (items.len(), set.channels, s, s),
            &Device::Cpu,
        )?)
    }

    /// The clean (unaugmented, normalised) images of `points`.
    pub fn clean(&self, set: &ImageSet, points: &[usize]) -> Result<Tensor> {
        let s = self.size(set);
        let n = set.channels * s * s;
        let mut data = vec![0f32; points.len() * n];
        for (k, &p) in points.iter().enumerate() {
            augment::clean(
                &self.augment,
                &self.normalization,
                set,
                p,
                &mut data[k * n..(k + 1) * n],
            );
        }
        Ok(Tensor::from_vec(
            data,
            (points.len(), set.channels, s, s),
            &Device::Cpu,
        )?)
    }
}

/// Which points to measure on, as the user gave them (at most one of the three).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PointChoice {
    /// N points drawn at random (seeded).
    pub points: Option<usize>,
    /// `START..END`, global indices, END excluded.
    pub range: Option<String>,
    /// A file of indices.
    pub indices: Option<std::path::PathBuf>,
}

/// The points used when the user chooses none.
#[derive(Debug, Clone, Copy)]
pub enum DefaultPoints {
    /// N points drawn at random from the split.
    Random(usize),
    /// The first N candidate points stored in f's metadata by `memprune train` (points f
    /// trained on and g did not), else N random points. A user's `points` sets N.
    Candidates(usize),
    /// The encoder's own training points as its metadata records them (at most N, drawn at
    /// random), else N random points: [`default_unit_points`].
    Training(usize),
}

/// The global indices of the points to measure on.
pub fn choose_points(
    choice: &PointChoice,
    set: &ImageSet,
    split: crate::data::Split,
    encoder: &Encoder,
    seed: u64,
    default: DefaultPoints,
) -> Result<Vec<usize>> {
    use crate::data::Subset;
    let n = set.len();
    if let Some(r) = &choice.range {
        let (a, b) = r
            .split_once("..")
            .with_context(|| format!("range {r}: expected START..END"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("range {r}: `{s}` is not a non-negative integer"))
        };
        return Ok(Subset::range(parse(a)?, parse(b)?, n)?.indices);
    }
    if let Some(f) = &choice.indices {
        return Ok(Subset::from_file(f, n)?.indices);
    }
    let candidates = match default {
        DefaultPoints::Candidates(_) => {
            crate::checkpoint::train_meta::candidates(&encoder.checkpoint)?
        }
        DefaultPoints::Random(_) | DefaultPoints::Training(_) => None,
    };
    if let (Some(k), DefaultPoints::Training(_)) = (choice.points, default) {
        return default_unit_points(encoder, set, split, k, seed);
    }
    if let (Some(k), None) = (choice.points, &candidates) {
        return Ok(Subset::random(k, seed, n)?.indices);
    }
    match default {
        DefaultPoints::Candidates(k) => {
            let asked = choice.points;
            let k = asked.unwrap_or(k);
            if let Some(mut v) = candidates {
                crate::checkpoint::train_meta::check_recorded_points(
                    &encoder.checkpoint,
                    set,
                    "candidate points",
                )?;
                if asked.is_some_and(|a| a > v.len()) {
                    bail!(
                        "{} records {} candidate points; asked for {k}",
                        encoder.checkpoint.path.display(),
                        v.len()
                    );
                }
                if split != crate::data::Split::Train {
                    bail!("the candidate points in {} index the training split; use the train split or choose points", encoder.checkpoint.path.display());
                }
                if let Some(bad) = v.iter().find(|&&i| i >= n) {
                    bail!(
                        "{}: candidate point {bad} is outside {} ({n} points)",
                        encoder.checkpoint.path.display(),
                        set.source
                    );
                }
                v.truncate(k);
                return Ok(v);
            }
            Ok(Subset::random(k.min(n), seed, n)?.indices)
        }
        DefaultPoints::Random(k) => Ok(Subset::random(k.min(n), seed, n)?.indices),
        DefaultPoints::Training(k) => default_unit_points(encoder, set, split, k, seed),
    }
}

/// A progress bar of points on stderr when asked for ([`crate::progress::bar`]: on a
/// terminal a bar, elsewhere a line every few seconds).
pub fn progress_bar(len: usize, show: bool, what: &str) -> indicatif::ProgressBar {
    crate::progress::bar(len, show, what, "points")
}

fn check_input(encoder: &Encoder, set: &ImageSet, settings: &ViewSettings) -> Result<()> {
    if set.channels != encoder.in_channels() {
        bail!(
            "{}: images have {} channel(s) but {} expects {}",
            set.source,
            set.channels,
            encoder.checkpoint.path.display(),
            encoder.in_channels()
        );
    }
    if settings.batch == 0 {
        bail!("--batch must be at least 1");
    }
    encoder
        .check_input_size(settings.size(set))
        .with_context(|| set.source.to_string())
}

/// `settings` with the batch that fits memory: `--batch` as given, or when it is left at
/// the default ([`crate::defaults::BATCH`]) and this encoder's views would take more than
/// [`crate::defaults::BATCH_MEMORY`] (or half the memory available), the largest batch that
/// fits, said once on stderr. The batch does not change a number, only memory and speed.
pub fn fit_batch(
    encoder: &Encoder,
    set: &ImageSet,
    settings: &ViewSettings,
) -> Result<ViewSettings> {
    use crate::defaults::{BATCH, BATCH_MEMORY, BATCH_TAP_COPIES};
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    let mut out = settings.clone();
    if settings.batch != BATCH {
        return Ok(out);
    }
    let size = settings.size(set);
    let per_view = encoder.largest_tap(size)? as u64 * 4 * BATCH_TAP_COPIES;
    let available = crate::data::limits::mem_available().map(|a| a / 2);
    let budget = available.map_or(BATCH_MEMORY, |a| a.min(BATCH_MEMORY));
    let fits = (budget / per_view.max(1)).max(1) as usize;
    if fits < BATCH {
        out.batch = fits;
        if !SAID.swap(true, Ordering::Relaxed) {
            eprintln!(
                "batch: {fits} views per forward pass (the default {BATCH} lowered to fit {:.2} GB: {:.1} MB per {size}x{size} view through this {}, its largest layer's outputs x {BATCH_TAP_COPIES}; --batch sets it; results do not depend on it)",
                budget as f64 / 1e9,
                per_view as f64 / 1e6,
                encoder.arch_id()
            );
        }
    }
    Ok(out)
}

/// Calls `sink(point, mu)` for every point, in order, with `mu[l][u]` = the mean over `k`
/// views of unit `u`'s activation at layer `l` (docs/METRICS.md Eq. 5).
pub fn for_each_point_mean_acts(
    encoder: &Encoder,
    set: &ImageSet,
    points: &[usize],
    k: usize,
    settings: &ViewSettings,
    progress: &indicatif::ProgressBar,
    mut sink: impl FnMut(usize, Vec<Vec<f64>>) -> Result<()>,
) -> Result<()> {
    check_input(encoder, set, settings)?;
    encoder.require_known_heads("scoring attention heads (the `blockN.heads` layers)", None)?;
    let settings = &fit_batch(encoder, set, settings)?;
    if k == 0 {
        bail!("--views must be at least 1");
    }
    if k > settings.batch {
        // More views than a batch: each point's views stream through in batches, so memory
        // is bounded by --batch, not by K.
        for &p in points {
            sink(p, streamed_mean_acts(encoder, set, p, k, settings)?)?;
            progress.inc(1);
            crate::interrupt::check()?;
        }
        progress.finish_and_clear();
        return Ok(());
    }
    let per_chunk = settings.batch / k;
    for chunk in points.chunks(per_chunk) {
        let items: Vec<(usize, u64)> = chunk
            .iter()
            .flat_map(|&p| (0..k as u64).map(move |v| (p, v)))
            .collect();
        let x = settings.views(set, &items)?;
        for (mu, &p) in mean_acts_of_views(encoder, &x, k)?.into_iter().zip(chunk) {
            sink(p, mu)?;
        }
        progress.inc(chunk.len() as u64);
        crate::interrupt::check()?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Eq. 5 for one point whose `k` views are more than a batch: views `0..k` in batches of
/// `settings.batch`, summed in f64 in view order and divided by `k` at the end, the same
/// arithmetic as [`mean_acts_of_views`] on all of them at once (so the same numbers).
fn streamed_mean_acts(
    encoder: &Encoder,
    set: &ImageSet,
    p: usize,
    k: usize,
    settings: &ViewSettings,
) -> Result<Vec<Vec<f64>>> {
    let mut sums: Vec<Vec<f64>> = Vec::new();
    for (from, to) in view_batches(k, settings.batch) {
        let items: Vec<(usize, u64)> = (from..to).map(|v| (p, v as u64)).collect();
        let acts: Vec<Vec<Vec<f32>>> = encoder
            .forward_unit_acts(&settings.views(set, &items)?.to_device(&encoder.device)?)?
            .iter()
            .map(|t| t.to_vec2::<f32>())
            .collect::<candle_core::Result<_>>()?;
        if sums.is_empty() {
            sums = acts.iter().map(|l| vec![0f64; l[0].len()]).collect();
        }
        for (m, layer) in sums.iter_mut().zip(&acts) {
            for row in layer {
                for (a, &v) in m.iter_mut().zip(row) {
                    *a += v as f64;
                }
            }
        }
    }
    for m in &mut sums {
        m.iter_mut().for_each(|a| *a /= k as f64);
    }
    Ok(sums)
}

/// `0..n` in consecutive ranges of at most `batch` (at least 1).
fn view_batches(n: usize, batch: usize) -> impl Iterator<Item = (usize, usize)> {
    let b = batch.max(1);
    (0..n.div_ceil(b)).map(move |i| (i * b, ((i + 1) * b).min(n)))
}

/// `x` holds `k` consecutive views of each of several points; returns per point, per layer,
/// per unit the mean activation over its views (Eq. 5), accumulated in f64.
pub fn mean_acts_of_views(encoder: &Encoder, x: &Tensor, k: usize) -> Result<Vec<Vec<Vec<f64>>>> {
    let acts: Vec<Vec<Vec<f32>>> = encoder
        .forward_unit_acts(&x.to_device(&encoder.device)?)?
        .iter()
        .map(|t| t.to_vec2::<f32>())
        .collect::<candle_core::Result<_>>()?;
    let n = x.dim(0)? / k;
    Ok((0..n)
        .map(|pi| {
            acts.iter()
                .map(|layer| {
                    let mut m = vec![0f64; layer[0].len()];
                    for row in &layer[pi * k..(pi + 1) * k] {
                        for (a, &v) in m.iter_mut().zip(row) {
                            *a += v as f64;
                        }
                    }
                    m.iter_mut().for_each(|a| *a /= k as f64);
                    m
                })
                .collect()
        })
        .collect())
}

/// UnitMem of every unit of every layer of `encoder` on `points`.
pub fn unit_mem(
    encoder: &Encoder,
    set: &ImageSet,
    points: &[usize],
    k: usize,
    reduce: Reduce,
    settings: &ViewSettings,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<UnitMemLayer>> {
    let acc = unit_mem_accumulate(encoder, set, points, k, reduce, settings, progress)?;
    acc.finish(&layer_names(encoder))
}

/// The UnitMem accumulator over `points`, before [`UnitMemAccumulator::finish`]: what a shard
/// returns so that shards can be merged.
pub fn unit_mem_accumulate(
    encoder: &Encoder,
    set: &ImageSet,
    points: &[usize],
    k: usize,
    reduce: Reduce,
    settings: &ViewSettings,
    progress: &indicatif::ProgressBar,
) -> Result<UnitMemAccumulator> {
    let units: Vec<usize> = encoder.layers.iter().map(|l| l.units).collect();
    let mut acc = UnitMemAccumulator::with_floors(&units, &layer_floors(encoder), reduce);
    for_each_point_mean_acts(encoder, set, points, k, settings, progress, |p, mu| {
        acc.push(p, &mu);
        Ok(())
    })?;
    Ok(acc)
}

/// ClassMem of every unit of every layer, with the labels of `set`.
pub fn class_mem(
    encoder: &Encoder,
    set: &ImageSet,
    points: &[usize],
    k: usize,
    settings: &ViewSettings,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<UnitMemLayer>> {
    let labels = set.labels.as_ref().with_context(|| {
        format!(
            "{}: ClassMem needs labels and this data set has none",
            set.source
        )
    })?;
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let units: Vec<usize> = encoder.layers.iter().map(|l| l.units).collect();
    let mut acc = ClassMemAccumulator::with_floors(&units, &layer_floors(encoder), classes);
    for_each_point_mean_acts(encoder, set, points, k, settings, progress, |p, mu| {
        acc.push(labels[p] as usize, &mu)
    })?;
    acc.finish(&layer_names(encoder))
}

pub fn layer_names(encoder: &Encoder) -> Vec<String> {
    encoder.layers.iter().map(|l| l.name.clone()).collect()
}

/// What act_u of each layer is measured from (UnitMem and ClassMem on signed layers).
pub fn layer_floors(encoder: &Encoder) -> Vec<crate::model::act_floor::ActFloor> {
    encoder.layers.iter().map(|l| l.floor).collect()
}

/// The (point, view) items of one point for LayerMem: 2K views for `views` pairing (pair j =
/// views 2j, 2j+1), K for `clean`.
pub fn layer_mem_views(pairing: Pairing, k: usize) -> usize {
    match pairing {
        Pairing::Views => 2 * k,
        Pairing::Clean => k,
    }
}

/// Refuses a reference encoder whose layers differ from `f`'s.
pub fn check_pair(f: &Encoder, g: &Encoder) -> Result<()> {
    let names = |e: &Encoder| {
        e.layers
            .iter()
            .map(|l| (l.name.clone(), l.units))
            .collect::<Vec<_>>()
    };
    if f.arch_id() != g.arch_id() || names(f) != names(g) {
        bail!(
            "{}: the reference is a {} with layers that differ from {} ({}): LayerMem compares the same layers of two encoders",
            g.checkpoint.path.display(),
            g.describe(),
            f.checkpoint.path.display(),
            f.describe()
        );
    }
    Ok(())
}

/// SSLMem' (Eq. 1-2) of every point and layer, from which [`layer_mem::layer_mem`] makes
/// LayerMem and dLayerMem (Eq. 3-4); both encoders see identical views.
#[allow(clippy::too_many_arguments)]
pub fn layer_mem_points(
    f: &Encoder,
    g: &Encoder,
    set: &ImageSet,
    points: &[usize],
    k: usize,
    pairing: Pairing,
    settings: &ViewSettings,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<PointScores>> {
    check_input(f, set, settings)?;
    check_pair(f, g)?;
    let settings = &fit_batch(f, set, settings)?;
    if k == 0 {
        bail!("--views must be at least 1");
    }
    let v = layer_mem_views(pairing, k);
    let mut out = Vec::with_capacity(points.len());
    if v + 1 > settings.batch {
        // A point's views are more than a batch: they stream through in batches of whole
        // pairs, so memory is bounded by --batch, not by K.
        for &p in points {
            out.push(streamed_point_scores(f, g, set, p, k, pairing, settings)?);
            progress.inc(1);
            crate::interrupt::check()?;
        }
        progress.finish_and_clear();
        return Ok(out);
    }
    let per_chunk = settings.batch / (v + 1);
    for chunk in points.chunks(per_chunk) {
        let items: Vec<(usize, u64)> = chunk
            .iter()
            .flat_map(|&p| (0..v as u64).map(move |j| (p, j)))
            .collect();
        let mut x = settings.views(set, &items)?;
        if pairing == Pairing::Clean {
            x = Tensor::cat(&[&x, &settings.clean(set, chunk)?], 0)?;
        }
        out.extend(point_scores_of_views(f, g, &x, chunk, k, pairing)?);
        progress.inc(chunk.len() as u64);
        crate::interrupt::check()?;
    }
    progress.finish_and_clear();
    Ok(out)
}

/// Calls `f(layer, rows)` with each layer's output of `x` as soon as the forward pass has
/// computed it, flattened per image (`rows` holds the images one after another, `dim` floats
/// each): memory holds one layer's outputs at a time, not the network's.
fn for_each_tap_rows(e: &Encoder, x: &Tensor, mut f: impl FnMut(usize, TapRows)) -> Result<()> {
    e.forward_taps_each(&x.to_device(&e.device)?, &mut |l, t| {
        let n = t.dim(0)?;
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        let dim = data.len() / n.max(1);
        f(l, TapRows { data, dim });
        Ok(())
    })?;
    Ok(())
}

/// One layer's outputs, flattened per image.
struct TapRows {
    data: Vec<f32>,
    dim: usize,
}

impl std::ops::Index<usize> for TapRows {
    type Output = [f32];
    fn index(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The layer outputs of `x`, flattened per image: `rows[layer][image]`.
fn tap_rows(e: &Encoder, x: &Tensor) -> Result<Vec<TapRows>> {
    let mut out = Vec::new();
    for_each_tap_rows(e, x, |_, r| out.push(r))?;
    Ok(out)
}

/// Running sums of pair distances of one encoder at one layer: over all K pairs, and over
/// the first and second halves (the selection split of [`PointScores`]).
#[derive(Clone)]
struct PairSums {
    all: f64,
    first: f64,
    second: f64,
}

/// [`point_scores_of_views`] for one point whose views are more than a batch: pairs in
/// batches (a clean image forwarded once), distances summed in pair order from the same
/// starting value as `Iterator::sum`, so the numbers are those of all views at once.
fn streamed_point_scores(
    f: &Encoder,
    g: &Encoder,
    set: &ImageSet,
    p: usize,
    k: usize,
    pairing: Pairing,
    settings: &ViewSettings,
) -> Result<PointScores> {
    let nl = f.layers.len();
    let zero: f64 = std::iter::empty::<f64>().sum();
    let start = PairSums {
        all: zero,
        first: zero,
        second: zero,
    };
    let mut sums = [vec![start.clone(); nl], vec![start; nl]];
    let clean = match pairing {
        Pairing::Clean => {
            let x = settings.clean(set, &[p])?;
            Some([tap_rows(f, &x)?, tap_rows(g, &x)?])
        }
        Pairing::Views => None,
    };
    let h = k / 2;
    let per_pair = layer_mem_views(pairing, 1);
    for (from, to) in view_batches(k, (settings.batch / per_pair).max(1)) {
        let items: Vec<(usize, u64)> = (from * per_pair..to * per_pair)
            .map(|v| (p, v as u64))
            .collect();
        let x = settings.views(set, &items)?;
        for (e, (enc, acc)) in [f, g].into_iter().zip(sums.iter_mut()).enumerate() {
            for_each_tap_rows(enc, &x, |l, rows| {
                let s = &mut acc[l];
                for j in from..to {
                    let i = j - from;
                    let d = match &clean {
                        Some(c) => normalized_distance(&c[e][l][0], &rows[i]),
                        None => normalized_distance(&rows[2 * i], &rows[2 * i + 1]),
                    };
                    s.all += d;
                    if j < h {
                        s.first += d;
                    } else {
                        s.second += d;
                    }
                }
            })?;
        }
    }
    let mean = |x: f64, n: usize| x / n.max(1) as f64;
    let [sf, sg] = &sums;
    let ssl_f: Vec<f64> = sf.iter().map(|s| mean(s.all, k)).collect();
    let ssl_g: Vec<f64> = sg.iter().map(|s| mean(s.all, k)).collect();
    let half = |pick: fn(&PairSums) -> f64, n: usize| -> Vec<f64> {
        if h == 0 {
            return Vec::new();
        }
        sf.iter()
            .zip(sg)
            .map(|(a, b)| layer_mem::ssl_mem(mean(pick(a), n), mean(pick(b), n)))
            .collect()
    };
    Ok(PointScores {
        point: p,
        sslmem: ssl_f
            .iter()
            .zip(&ssl_g)
            .map(|(&a, &b)| layer_mem::ssl_mem(a, b))
            .collect(),
        sslmem_first_half: half(|s| s.first, h),
        sslmem_second_half: half(|s| s.second, k - h),
        ssl_f,
        ssl_g,
    })
}

/// Domain tag of the control points' draw (distinct from the measured points' draw).
const CONTROL_TAG: u64 = 0x434F_4E54_524F_4C00; // "CONTROL"

/// `n` points of `test` (the split neither encoder trained on) for a control: drawn at
/// random (seeded), sorted; all of them when the split has no more than `n`.
pub fn unseen_points(test: &ImageSet, n: usize, seed: u64) -> Result<Vec<usize>> {
    if test.is_empty() {
        bail!("{}: the test split is empty, so there are no unseen points for the control (use --no-control)", test.source);
    }
    let n = n.min(test.len());
    Ok(crate::data::Subset::random(
        n,
        crate::data::rng::hash_key(&[CONTROL_TAG, seed]),
        test.len(),
    )?
    .indices)
}

/// SSLMem' per layer of `points` from their views `x`: for `views` pairing, 2k consecutive
/// views per point (pair j = views 2j, 2j+1); for `clean`, k views per point followed by the
/// clean images of all points, in order.
pub fn point_scores_of_views(
    f: &Encoder,
    g: &Encoder,
    x: &Tensor,
    points: &[usize],
    k: usize,
    pairing: Pairing,
) -> Result<Vec<PointScores>> {
    let v = layer_mem_views(pairing, k);
    let nl = f.layers.len();
    let n_views = points.len() * v;
    // Per layer, the distance of every pair (point `pi`, pair `j`) at `pi * k + j`, each
    // layer's outputs reduced to these as soon as they are computed.
    let distances = |e: &Encoder| -> Result<Vec<Vec<f64>>> {
        let mut out = vec![Vec::new(); nl];
        for_each_tap_rows(e, x, |l, r| {
            out[l] = (0..points.len())
                .flat_map(|pi| (0..k).map(move |j| (pi, j)))
                .map(|(pi, j)| {
                    let base = pi * v;
                    match pairing {
                        Pairing::Views => {
                            normalized_distance(&r[base + 2 * j], &r[base + 2 * j + 1])
                        }
                        Pairing::Clean => normalized_distance(&r[n_views + pi], &r[base + j]),
                    }
                })
                .collect();
        })?;
        Ok(out)
    };
    let (rf, rg) = (distances(f)?, distances(g)?);
    // Mean distance over the pairs `js` (all K, or one half of them).
    let mean_d = |d: &Vec<f64>, pi: usize, js: std::ops::Range<usize>| -> f64 {
        let n = js.len().max(1) as f64;
        let total: f64 = js.map(|j| d[pi * k + j]).sum();
        total / n
    };
    let h = k / 2;
    Ok(points
        .iter()
        .enumerate()
        .map(|(pi, &p)| {
            let ssl_f: Vec<f64> = (0..nl).map(|l| mean_d(&rf[l], pi, 0..k)).collect();
            let ssl_g: Vec<f64> = (0..nl).map(|l| mean_d(&rg[l], pi, 0..k)).collect();
            let sslmem = ssl_f
                .iter()
                .zip(&ssl_g)
                .map(|(&a, &b)| layer_mem::ssl_mem(a, b))
                .collect();
            let half = |js: std::ops::Range<usize>| -> Vec<f64> {
                if h == 0 {
                    return Vec::new();
                }
                (0..nl)
                    .map(|l| {
                        layer_mem::ssl_mem(
                            mean_d(&rf[l], pi, js.clone()),
                            mean_d(&rg[l], pi, js.clone()),
                        )
                    })
                    .collect()
            };
            PointScores {
                point: p,
                ssl_f,
                ssl_g,
                sslmem,
                sslmem_first_half: half(0..h),
                sslmem_second_half: half(h..k),
            }
        })
        .collect())
}

/// Writes the exact views a run uses, so another implementation can recompute its numbers:
/// `points.npy` (int64, P), `views.npy` (float32, P x V x C x S x S), for `clean` pairing
/// also `clean.npy` (P x C x S x S), and `meta.json`.
pub fn dump_views(
    dir: &Path,
    set: &ImageSet,
    points: &[usize],
    views_per_point: usize,
    with_clean: bool,
    settings: &ViewSettings,
    meta: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let s = settings.size(set);
    let items: Vec<(usize, u64)> = points
        .iter()
        .flat_map(|&p| (0..views_per_point as u64).map(move |v| (p, v)))
        .collect();
    let data = augment::views_batch(
        &settings.augment,
        &settings.normalization,
        set,
        &items,
        settings.seed,
    );
    let pts: Vec<i64> = points.iter().map(|&p| p as i64).collect();
    crate::data::npy::write_npy_i64(&dir.join("points.npy"), &[points.len()], &pts)?;
    crate::data::npy::write_npy_f32(
        &dir.join("views.npy"),
        &[points.len(), views_per_point, set.channels, s, s],
        &data,
    )?;
    if with_clean {
        let clean = settings
            .clean(set, points)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        crate::data::npy::write_npy_f32(
            &dir.join("clean.npy"),
            &[points.len(), set.channels, s, s],
            &clean,
        )?;
    }
    std::fs::write(dir.join("meta.json"), serde_json::to_string_pretty(meta)?)
        .with_context(|| format!("{}: cannot write meta.json", dir.display()))?;
    Ok(())
}

/// The default points for UnitMem and ClassMem: the encoder's own training points when its
/// metadata records a split of this very data set (at most `max`, drawn at random, seeded),
/// else `max` random points of the split.
pub fn default_unit_points(
    encoder: &Encoder,
    set: &ImageSet,
    split: crate::data::Split,
    max: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let own = if split == crate::data::Split::Train {
        crate::checkpoint::train_meta::training_points(&encoder.checkpoint, set)?
    } else {
        None
    };
    match own {
        Some(v) if v.len() > max => {
            let pick = crate::data::Subset::random(max, seed, v.len())?.indices;
            Ok(pick.into_iter().map(|i| v[i]).collect())
        }
        Some(v) => Ok(v),
        None => Ok(crate::data::Subset::random(max.min(set.len()), seed, set.len())?.indices),
    }
}

/// Refuses a control of another size than the measured points (a maximum grows with N).
pub fn check_control_size(points: &[usize], unseen: Option<(&ImageSet, &[usize])>) -> Result<()> {
    if let Some((us, up)) = unseen {
        if up.len() != points.len() {
            bail!(
                "{}: the control needs as many unseen points as measured points ({}), the split has {}; use --points {} or --no-control",
                us.source,
                points.len(),
                up.len(),
                up.len()
            );
        }
    }
    Ok(())
}

/// The UnitMem (or ClassMem, `class`) accumulators of `points` and, when given, of the
/// control's unseen points: a run's [`State`], or a shard's part of it.
#[allow(clippy::too_many_arguments)]
pub fn unit_state(
    encoder: &Encoder,
    set: &ImageSet,
    points: &[usize],
    unseen: Option<(&ImageSet, &[usize])>,
    k: usize,
    reduce: Reduce,
    class: bool,
    settings: &ViewSettings,
    progress: bool,
) -> Result<State> {
    let what = if class { "ClassMem" } else { "UnitMem" };
    let units: Vec<usize> = encoder.layers.iter().map(|l| l.units).collect();
    if class {
        let run = |s: &ImageSet, p: &[usize], label: &str| -> Result<ClassMemAccumulator> {
            let labels = s.labels.as_ref().with_context(|| {
                format!(
                    "{}: ClassMem needs labels and this data set has none",
                    s.source
                )
            })?;
            let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
            let mut acc = ClassMemAccumulator::with_floors(&units, &layer_floors(encoder), classes);
            let pb = progress_bar(p.len(), progress, label);
            for_each_point_mean_acts(encoder, s, p, k, settings, &pb, |i, mu| {
                acc.push(labels[i] as usize, &mu)
            })?;
            Ok(acc)
        };
        let train = run(set, points, what)?;
        let unseen = match unseen {
            Some((us, up)) => Some(run(us, up, &format!("{what} (unseen)"))?),
            None => None,
        };
        return Ok(State::Class { train, unseen });
    }
    let run = |s: &ImageSet, p: &[usize], label: &str| {
        let pb = progress_bar(p.len(), progress, label);
        unit_mem_accumulate(encoder, s, p, k, reduce, settings, &pb)
    };
    let train = run(set, points, what)?;
    let unseen = match unseen {
        Some((us, up)) => Some(run(us, up, &format!("{what} (unseen)"))?),
        None => None,
    };
    Ok(State::Unit { train, unseen })
}

/// The layers of a UnitMem or ClassMem [`State`] that are not scored (no known lower bound
/// of act_u: docs/METRICS.md, "Signed layers").
pub fn unscored_layers(state: &State, names: &[String]) -> Vec<String> {
    match state {
        State::Unit { train, .. } => train.unscored(names),
        State::Class { train, .. } => train.unscored(names),
        State::Layer { .. } => Vec::new(),
    }
}

/// The scores per layer of a whole run's UnitMem or ClassMem [`State`], with the control
/// attached when it was measured (`seed` seeds its intervals).
pub fn unit_layers(state: &State, names: &[String], seed: u64) -> Result<Vec<UnitMemLayer>> {
    let boot = crate::metrics::bootstrap::Bootstrap {
        seed,
        ..Default::default()
    };
    let (mut layers, control, points, excess) = match state {
        State::Unit { train, unseen } => (
            train.finish(names)?,
            unseen.as_ref().map(|u| u.finish(names)).transpose()?,
            unseen.as_ref().map(|u| u.points()),
            true,
        ),
        State::Class { train, unseen } => (
            train.finish(names)?,
            unseen.as_ref().map(|u| u.finish(names)).transpose()?,
            unseen.as_ref().map(|u| u.counts.iter().sum()),
            false,
        ),
        State::Layer { .. } => bail!("a LayerMem state has no unit scores"),
    };
    if let (Some(u), Some(n)) = (control, points) {
        crate::metrics::unit_control::attach(&mut layers, &u, n, excess, &boot)?;
    }
    Ok(layers)
}

/// UnitMem (or ClassMem, `class`) on `points`, with the control of
/// [`crate::metrics::unit_control`] on as many unseen points of `unseen_set` when given.
#[allow(clippy::too_many_arguments)]
pub fn unit_scores_with_control(
    encoder: &Encoder,
    set: &ImageSet,
    points: &[usize],
    unseen: Option<(&ImageSet, &[usize])>,
    k: usize,
    reduce: Reduce,
    class: bool,
    settings: &ViewSettings,
    progress: bool,
) -> Result<Vec<UnitMemLayer>> {
    check_control_size(points, unseen)?;
    let state = unit_state(
        encoder, set, points, unseen, k, reduce, class, settings, progress,
    )?;
    unit_layers(&state, &layer_names(encoder), settings.seed)
}
