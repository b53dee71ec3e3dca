//! LayerMem: how much more a layer of `f` aligns the views of its own training points than
//! the same layer of a reference `g` that never saw them.
//!
//! ```text
//! SSL_f(x)     = mean over view pairs (x', x'') of d(rep_f(x'), rep_f(x''))   (Eq. 1)
//! SSLMem'(x)   = (SSL_g(x) - SSL_f(x)) / (SSL_f(x) + SSL_g(x))                (Eq. 2)
//! LayerMem(l)  = mean over x in D' of SSLMem'(x) on f^l and g^l               (Eq. 3)
//! dLayerMem(l) = LayerMem(l) - LayerMem(l - 1)                                (Eq. 4)
//! ```
//!
//! `d` is the Euclidean distance between layer outputs flattened and scaled to unit L2 norm
//! (so that layers of different sizes compare). A zero output has no direction: its rep is
//! the zero vector, and a point whose SSL_f and SSL_g are both 0 scores 0.

use crate::metrics::bootstrap::{interval, Bootstrap, Interval};
use serde::{Deserialize, Serialize};

/// Which views are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    /// The paper: K pairs of two augmented views (views 2j and 2j+1).
    Views,
    /// The authors' script: the clean image against each of K augmented views.
    Clean,
}

/// Euclidean distance between `a` and `b` after scaling each to unit L2 norm, in f64.
pub fn normalized_distance(a: &[f32], b: &[f32]) -> f64 {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    };
    let (na, nb) = (norm(a), norm(b));
    let inv = |n: f64| if n > 0.0 { 1.0 / n } else { 0.0 };
    let (ia, ib) = (inv(na), inv(nb));
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 * ia - y as f64 * ib).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Eq. 2 for one point and layer.
pub fn ssl_mem(ssl_f: f64, ssl_g: f64) -> f64 {
    let denom = ssl_f + ssl_g;
    if denom > 0.0 {
        (ssl_g - ssl_f) / denom
    } else {
        0.0
    }
}

/// How a point's per-layer score is formed from SSL_f and SSL_g (`measure layer --score`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LayerScore {
    /// The paper's Eq. 2, per point: (SSL_g - SSL_f) / (SSL_f + SSL_g).
    #[default]
    Eq2,
    /// The authors' LayerMem script (docs/METRICS.md): SSL_g - SSL_f divided by (max - min)
    /// of that difference over the scored points, per layer; for comparing with their
    /// published numbers. See [`range_normalise`].
    Range,
}

/// Replaces every point's SSLMem' by the authors' range-normalised score: per layer l,
/// `(SSL_g - SSL_f) / (max - min)`, the max and min of SSL_g - SSL_f taken over `points`
/// (the scored points; the control, when given, is divided by the same range so that the
/// corrected LayerMem stays a difference on one scale). A layer where every point has the
/// same difference scores 0. The half-split scores cannot be rebuilt from the whole-pair
/// means and are dropped: the Top50/Least50 halves are then ranked and reported on all
/// pairs.
pub fn range_normalise(points: &mut [PointScores], control: Option<&mut [PointScores]>) {
    let nl = points.first().map_or(0, |p| p.sslmem.len());
    let diff = |p: &PointScores, l: usize| p.ssl_g[l] - p.ssl_f[l];
    let ranges: Vec<f64> = (0..nl)
        .map(|l| {
            let (lo, hi) = points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                    (a.min(diff(p, l)), b.max(diff(p, l)))
                });
            hi - lo
        })
        .collect();
    let apply = |ps: &mut [PointScores]| {
        for p in ps.iter_mut() {
            for (l, r) in ranges.iter().enumerate() {
                let v = diff(p, l) / r;
                p.sslmem[l] = if v.is_finite() { v } else { 0.0 };
            }
            p.sslmem_first_half.clear();
            p.sslmem_second_half.clear();
        }
    };
    apply(points);
    if let Some(c) = control {
        apply(c);
    }
}

/// One point's scores, per layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointScores {
    pub point: usize,
    pub ssl_f: Vec<f64>,
    pub ssl_g: Vec<f64>,
    pub sslmem: Vec<f64>,
    /// SSLMem' from the first half of the view pairs only, and from the second half: the
    /// top/bottom halves are ranked on one and reported on the other (empty when K = 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sslmem_first_half: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sslmem_second_half: Vec<f64>,
}

/// What the control points are, which decides how the corrected LayerMem is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Control {
    /// Points neither encoder trained on (the test split):
    /// `corrected = LayerMem(candidates) - LayerMem(unseen)`. No assumption on g.
    Unseen,
    /// g's own training points that f never saw (g's independent points): by Eq. 2's
    /// antisymmetry, SSLMem'_{f,g} = -SSLMem'_{g,f}, so
    /// `corrected = (LayerMem(candidates) - LayerMem(independent)) / 2` is the symmetric
    /// estimate (f's memorization of its candidates and g's of its points, averaged); it
    /// cancels a fixed f-g difference but assumes f and g memorize alike.
    Independent,
    /// No control: LayerMem and its interval only.
    None,
}

impl Control {
    fn factor(self) -> f64 {
        match self {
            Control::Independent => 0.5,
            _ => 1.0,
        }
    }
}

/// LayerMem and dLayerMem of one layer, with 95 % bootstrap intervals, and, when a control
/// was measured, the corrected LayerMem of [`Control`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerMemLayer {
    pub name: String,
    pub layer_mem: f64,
    pub layer_mem_ci: Interval,
    /// `None` for the first layer.
    pub dlayer_mem: Option<f64>,
    pub dlayer_mem_ci: Option<Interval>,
    /// LayerMem over the most memorized half of the points, and over the least memorized
    /// half: the paper's Top50/Least50 columns. Points are ranked once, by SSLMem' of the
    /// last layer on the first half of the view pairs, and reported on the second half, so
    /// that the gap is not selection bias (both on all pairs when K = 1).
    pub layer_mem_top_half: f64,
    pub layer_mem_bottom_half: f64,
    /// LayerMem on the control points.
    #[serde(default)]
    pub control_layer_mem: Option<f64>,
    #[serde(default)]
    pub control_ci: Option<Interval>,
    /// The corrected LayerMem (see [`Control`]) and its interval (candidates and control
    /// points resampled independently).
    #[serde(default)]
    pub corrected: Option<f64>,
    #[serde(default)]
    pub corrected_ci: Option<Interval>,
    /// corrected(l) - corrected(l - 1).
    #[serde(default)]
    pub dcorrected: Option<f64>,
    #[serde(default)]
    pub dcorrected_ci: Option<Interval>,
}

impl LayerMemLayer {
    /// What planners and findings rank by: the corrected LayerMem where a control was
    /// measured, else LayerMem.
    pub fn score(&self) -> f64 {
        self.corrected.unwrap_or(self.layer_mem)
    }

    /// dLayerMem of [`Self::score`].
    pub fn dscore(&self) -> Option<f64> {
        if self.corrected.is_some() {
            self.dcorrected
        } else {
            self.dlayer_mem
        }
    }
}

fn mean_of(s: &[&PointScores], l: usize, f: fn(&PointScores) -> &Vec<f64>) -> f64 {
    if s.is_empty() {
        0.0
    } else {
        s.iter().map(|p| f(p)[l]).sum::<f64>() / s.len() as f64
    }
}

fn all_pairs(p: &PointScores) -> &Vec<f64> {
    &p.sslmem
}

fn second_half(p: &PointScores) -> &Vec<f64> {
    &p.sslmem_second_half
}

/// Eq. 3 and 4 from every point's scores, with bootstrap intervals; `control` adds the
/// control points' LayerMem and the corrected LayerMem.
pub fn layer_mem(
    names: &[String],
    points: &[PointScores],
    control: Option<(&[PointScores], Control)>,
    boot: &Bootstrap,
) -> Vec<LayerMemLayer> {
    let nl = names.len();
    let last = nl.saturating_sub(1);
    let held_out = points
        .iter()
        .all(|p| p.sslmem_first_half.len() == nl && p.sslmem_second_half.len() == nl)
        && !points.is_empty();
    let rank_by = |p: &PointScores| {
        if held_out {
            p.sslmem_first_half[last]
        } else {
            p.sslmem[last]
        }
    };
    let mut order: Vec<&PointScores> = points.iter().collect();
    // Most memorized first; ties by point index so the halves are reproducible.
    order.sort_by(|a, b| {
        rank_by(b)
            .total_cmp(&rank_by(a))
            .then(a.point.cmp(&b.point))
    });
    let half = (order.len() / 2).max(1).min(order.len());
    let (top, bottom) = (&order[..half], &order[order.len() - half..]);
    let report: fn(&PointScores) -> &Vec<f64> = if held_out { second_half } else { all_pairs };
    let control = control.filter(|(c, k)| !c.is_empty() && *k != Control::None);
    // Rows in point order, so that the draw does not depend on measurement order.
    let rows = |ps: &[PointScores]| -> Vec<Vec<f64>> {
        let mut v: Vec<&PointScores> = ps.iter().collect();
        v.sort_by_key(|p| p.point);
        v.iter().map(|p| p.sslmem.clone()).collect()
    };
    let cand_rows = rows(points);
    let cand_refs: Vec<&[f64]> = cand_rows.iter().map(|r| r.as_slice()).collect();
    let cand_boot = boot.column_means(&cand_refs, 0);
    let ctrl = control.map(|(c, kind)| {
        let r = rows(c);
        let refs: Vec<&[f64]> = r.iter().map(|x| x.as_slice()).collect();
        (boot.column_means(&refs, 1), r, kind)
    });
    let col = |bs: &[Vec<f64>], f: &dyn Fn(&[f64]) -> Option<f64>| -> Option<Interval> {
        let v: Vec<f64> = bs.iter().filter_map(|m| f(m)).collect();
        (!v.is_empty()).then(|| interval(&v))
    };
    let mut out: Vec<LayerMemLayer> = Vec::new();
    for (l, name) in names.iter().enumerate() {
        let all: Vec<&PointScores> = points.iter().collect();
        let lm = mean_of(&all, l, all_pairs);
        let prev = out.last();
        let d = prev.map(|p: &LayerMemLayer| lm - p.layer_mem);
        let ci = col(&cand_boot, &|m| Some(m[l])).unwrap_or(Interval::point(lm));
        let dci = (l > 0)
            .then(|| col(&cand_boot, &|m| Some(m[l] - m[l - 1])))
            .flatten();
        let mut layer = LayerMemLayer {
            name: name.clone(),
            layer_mem: lm,
            layer_mem_ci: ci,
            dlayer_mem: d,
            dlayer_mem_ci: dci,
            layer_mem_top_half: mean_of(top, l, report),
            layer_mem_bottom_half: mean_of(bottom, l, report),
            control_layer_mem: None,
            control_ci: None,
            corrected: None,
            corrected_ci: None,
            dcorrected: None,
            dcorrected_ci: None,
        };
        if let Some((cb, cr, kind)) = &ctrl {
            let f = kind.factor();
            let c = cr.iter().map(|r| r[l]).sum::<f64>() / cr.len() as f64;
            let corr = f * (lm - c);
            let diffs: Vec<(f64, f64)> = cand_boot
                .iter()
                .zip(cb)
                .map(|(a, b)| {
                    let now = f * (a[l] - b[l]);
                    let before = if l > 0 {
                        f * (a[l - 1] - b[l - 1])
                    } else {
                        0.0
                    };
                    (now, now - before)
                })
                .collect();
            layer.control_layer_mem = Some(c);
            layer.control_ci = col(cb, &|m| Some(m[l]));
            layer.corrected = Some(corr);
            layer.corrected_ci = Some(interval(&diffs.iter().map(|d| d.0).collect::<Vec<_>>()));
            if let Some(p) = prev.and_then(|p| p.corrected) {
                layer.dcorrected = Some(corr - p);
                layer.dcorrected_ci =
                    Some(interval(&diffs.iter().map(|d| d.1).collect::<Vec<_>>()));
            }
        }
        out.push(layer);
    }
    out
}

/// SSLMem' of a group of the scored points (the planted points) against the rest, per layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDifference {
    pub name: String,
    pub group_points: usize,
    pub other_points: usize,
    pub group_mean: f64,
    pub other_mean: f64,
    /// group_mean - other_mean, with its interval (both sides resampled independently).
    pub difference: f64,
    pub difference_ci: Interval,
}

/// [`GroupDifference`] per layer; `None` when `group` holds none or all of the points.
pub fn group_difference(
    names: &[String],
    points: &[PointScores],
    group: &[usize],
    boot: &Bootstrap,
) -> Option<Vec<GroupDifference>> {
    let set: std::collections::BTreeSet<usize> = group.iter().copied().collect();
    let mut sorted: Vec<&PointScores> = points.iter().collect();
    sorted.sort_by_key(|p| p.point);
    let (ing, outg): (Vec<&PointScores>, Vec<&PointScores>) =
        sorted.into_iter().partition(|p| set.contains(&p.point));
    if ing.is_empty() || outg.is_empty() {
        return None;
    }
    let ri: Vec<&[f64]> = ing.iter().map(|p| p.sslmem.as_slice()).collect();
    let ro: Vec<&[f64]> = outg.iter().map(|p| p.sslmem.as_slice()).collect();
    let (bi, bo) = (boot.column_means(&ri, 2), boot.column_means(&ro, 3));
    let mi = crate::metrics::bootstrap::mean_columns(&ri, &(0..ri.len()).collect::<Vec<_>>());
    let mo = crate::metrics::bootstrap::mean_columns(&ro, &(0..ro.len()).collect::<Vec<_>>());
    Some(
        names
            .iter()
            .enumerate()
            .map(|(l, name)| {
                let d: Vec<f64> = bi.iter().zip(&bo).map(|(a, b)| a[l] - b[l]).collect();
                GroupDifference {
                    name: name.clone(),
                    group_points: ing.len(),
                    other_points: outg.len(),
                    group_mean: mi[l],
                    other_mean: mo[l],
                    difference: mi[l] - mo[l],
                    difference_ci: interval(&d),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::Rng;

    fn pts(
        first: usize,
        n: usize,
        nl: usize,
        f: impl Fn(&mut Rng, usize) -> f64,
    ) -> Vec<PointScores> {
        let mut rng = Rng::from_key(&[first as u64, 99]);
        (0..n)
            .map(|i| {
                let v: Vec<f64> = (0..nl).map(|l| f(&mut rng, l)).collect();
                PointScores {
                    point: first + i,
                    ssl_f: vec![1.0; nl],
                    ssl_g: vec![1.0; nl],
                    sslmem: v.clone(),
                    sslmem_first_half: v.clone(),
                    sslmem_second_half: v,
                }
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|l| format!("l{l}")).collect()
    }

    #[test]
    fn a_fixed_bias_without_memorization_is_corrected_to_an_interval_containing_zero() {
        // f and g differ by a fixed 0.05 at every point, seen or not: LayerMem is far from
        // 0, the corrected LayerMem is not.
        let noise = |r: &mut Rng, _l: usize| 0.05 + r.uniform(-0.02, 0.02);
        let cand = pts(0, 100, 3, noise);
        let ctrl = pts(1000, 100, 3, noise);
        let b = Bootstrap::default();
        let out = layer_mem(&names(3), &cand, Some((&ctrl, Control::Unseen)), &b);
        for l in &out {
            assert!(l.layer_mem_ci.lo > 0.04, "{l:?}");
            let ci = l.corrected_ci.unwrap();
            assert!(ci.lo < 0.0 && ci.hi > 0.0, "{l:?}");
        }
    }

    #[test]
    fn memorization_on_top_of_the_bias_is_found_and_halved_by_the_symmetric_control() {
        let cand = pts(0, 100, 2, |r, l| {
            0.05 + 0.03 * l as f64 + r.uniform(-0.01, 0.01)
        });
        // g's independent points, scored SSLMem'_{f,g}: minus (bias-free) memorization by g.
        let ind = pts(500, 100, 2, |r, l| {
            0.05 - 0.03 * l as f64 + r.uniform(-0.01, 0.01)
        });
        let out = layer_mem(
            &names(2),
            &cand,
            Some((&ind, Control::Independent)),
            &Bootstrap::default(),
        );
        let c1 = out[1].corrected.unwrap();
        assert!((c1 - 0.03).abs() < 0.005, "{c1}");
        assert!(out[1].corrected_ci.unwrap().excludes_zero());
        assert!(out[0].corrected_ci.unwrap().lo < 0.0 && out[0].corrected_ci.unwrap().hi > 0.0);
        assert!(out[1].dcorrected_ci.unwrap().excludes_zero());
    }

    #[test]
    fn halves_are_ranked_on_one_half_of_the_views_and_reported_on_the_other() {
        // Pure noise, independent between the halves: ranking on the first half and
        // reporting the second gives no gap beyond noise; ranking and reporting on the same
        // numbers would give a large one.
        let mut rng = Rng::from_key(&[5]);
        let p: Vec<PointScores> = (0..400)
            .map(|i| PointScores {
                point: i,
                ssl_f: vec![1.0],
                ssl_g: vec![1.0],
                sslmem: vec![0.0],
                sslmem_first_half: vec![rng.uniform(-1.0, 1.0)],
                sslmem_second_half: vec![rng.uniform(-1.0, 1.0)],
            })
            .collect();
        let out = layer_mem(&names(1), &p, None, &Bootstrap::default());
        let gap = out[0].layer_mem_top_half - out[0].layer_mem_bottom_half;
        assert!(gap.abs() < 0.15, "{gap}");
    }

    #[test]
    fn range_normalisation_divides_the_difference_by_its_range_over_the_scored_points() {
        let p = |point, f: f64, g: f64| PointScores {
            point,
            ssl_f: vec![f, 1.0],
            ssl_g: vec![g, 1.0],
            sslmem: vec![ssl_mem(f, g), 0.0],
            sslmem_first_half: vec![0.0, 0.0],
            sslmem_second_half: vec![0.0, 0.0],
        };
        // Differences g - f of 0.2, 0.6 and -0.2: range 0.8.
        let mut cand = vec![p(0, 1.0, 1.2), p(1, 0.4, 1.0), p(2, 1.0, 0.8)];
        let mut ctrl = vec![p(9, 1.0, 1.4)];
        range_normalise(&mut cand, Some(&mut ctrl));
        let got: Vec<f64> = cand.iter().map(|q| q.sslmem[0]).collect();
        for (a, b) in got.iter().zip([0.25, 0.75, -0.25]) {
            assert!((a - b).abs() < 1e-12, "{got:?}");
        }
        assert!((ctrl[0].sslmem[0] - 0.5).abs() < 1e-12);
        // No spread: 0, not NaN.
        assert_eq!(cand[0].sslmem[1], 0.0);
        assert!(cand[0].sslmem_first_half.is_empty());
        let out = layer_mem(&names(2), &cand, None, &Bootstrap::default());
        assert!((out[0].layer_mem - 0.25).abs() < 1e-12);
    }

    #[test]
    fn planted_points_that_score_higher_are_told_apart() {
        let mut p = pts(0, 60, 1, |r, _| r.uniform(-0.01, 0.01));
        for q in p.iter_mut().take(6) {
            q.sslmem[0] += 0.1;
        }
        let d =
            group_difference(&names(1), &p, &[0, 1, 2, 3, 4, 5], &Bootstrap::default()).unwrap();
        assert!(d[0].difference_ci.lo > 0.05, "{:?}", d[0]);
        assert!(group_difference(&names(1), &p, &[100], &Bootstrap::default()).is_none());
    }
}
