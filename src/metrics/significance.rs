//! Which layers stand out from "nothing memorized" when all the layers shown are read
//! together: per-layer p-values and Holm's family-wise rule over them.
//!
//! ```text
//! bootstrap p(l)   = 2 (1 - Phi(|est(l)| / sd(replicates of l)))        (normal, two-sided)
//! permutation p(l) = (1 + #{b : |T_b(l)| >= |T(l)|}) / (B + 1)          (relabelled points)
//! Holm: sort p ascending; star the first j layers for which p_(i) <= alpha / (m - i + 1)
//!       holds for every i <= j; m = the layers shown.
//! ```
//!
//! A per-layer 95 % interval excludes 0 in about 5 % of layers with nothing memorized, so
//! of 25 layers read together one or more is starred most of the time (more when the layers
//! are correlated, as adjacent layers are). Holm's rule keeps the chance of starring ANY
//! layer of a family with nothing memorized at or below alpha, whatever the correlation.

/// The family-wise error rate of the star.
pub const FAMILY_ALPHA: f64 = 0.05;

/// What a star and a bracket mean, for the foot of every table that shows them.
pub fn star_note(layers: usize) -> String {
    format!(
        "* family-wise: Holm's rule over the {layers} layers shown (with nothing memorized, a run stars any layer at most 5 % of the time). [95 %] is per layer: read alone, it excludes 0 in about 5 % of layers with nothing memorized, so among {layers} layers some will."
    )
}

/// Two-sided p-value of `est` = 0 from the standard deviation of its bootstrap replicates
/// (normal approximation; smooth, so that Holm's small thresholds can be met with a
/// thousand resamples). A zero spread gives 0 for a nonzero estimate, 1 for zero.
pub fn bootstrap_p(est: f64, replicates: &[f64]) -> f64 {
    let v: Vec<f64> = replicates
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.len() < 2 || !est.is_finite() {
        return 1.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
    if sd == 0.0 {
        return if est == 0.0 { 1.0 } else { 0.0 };
    }
    erfc(est.abs() / sd / std::f64::consts::SQRT_2)
}

/// Permutation p-value: the share of relabelled statistics at least as far from 0 as the
/// observed one, counting the observed labelling itself.
pub fn permutation_p(observed: f64, permuted: &[f64]) -> f64 {
    let hits = permuted
        .iter()
        .filter(|t| t.abs() >= observed.abs() - 1e-12 * observed.abs())
        .count();
    (1 + hits) as f64 / (1 + permuted.len()) as f64
}

/// Holm's step-down rule at level `alpha`: which of the hypotheses with p-values `p` are
/// rejected (starred), family-wise. NaN p-values are never starred but count in m.
pub fn holm(p: &[f64], alpha: f64) -> Vec<bool> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| if p[i].is_nan() { f64::INFINITY } else { p[i] };
        key(a).total_cmp(&key(b)).then(a.cmp(&b))
    });
    let mut out = vec![false; m];
    for (rank, &i) in order.iter().enumerate() {
        if p[i].is_nan() || p[i] > alpha / (m - rank) as f64 {
            break;
        }
        out[i] = true;
    }
    out
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative error < 1.2e-7:
/// ample for a p-value).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The `q` quantile of `|values|` (linear interpolation, as [`super::bootstrap::interval`]):
/// the half-width of a symmetric interval from a null distribution.
pub fn abs_quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.abs())
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    super::bootstrap::quantile_sorted(&v, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_p_values_match_known_points() {
        // est = 1.96 sd gives 0.05; the replicates have sd 1 by construction.
        let r: Vec<f64> = (0..2000)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let sd = (2000.0f64 / 1999.0).sqrt();
        assert!((bootstrap_p(1.959_964 * sd, &r) - 0.05).abs() < 1e-6);
        assert!((bootstrap_p(0.0, &r) - 1.0).abs() < 1e-6);
        assert!((bootstrap_p(-2.575_829 * sd, &r) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn holm_steps_down_and_stops_at_the_first_failure() {
        // m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05.
        assert_eq!(
            holm(&[0.01, 0.04, 0.015, 0.5], 0.05),
            vec![true, false, true, false]
        );
        // 0.03 fails its 0.025 threshold, so 0.04 (under 0.05) is not starred either.
        assert_eq!(holm(&[0.001, 0.03, 0.04], 0.05), vec![true, false, false]);
        assert_eq!(holm(&[0.04; 3], 0.05), vec![false; 3]);
        assert_eq!(holm(&[f64::NAN, 0.001], 0.05), vec![false, true]);
    }

    #[test]
    fn permutation_p_counts_the_observed_labelling() {
        assert_eq!(permutation_p(1.0, &[0.1, -0.2, 0.3]), 0.25);
        assert_eq!(permutation_p(0.2, &[0.1, -0.2, 0.3]), 0.75);
    }
}
