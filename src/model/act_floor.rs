//! The lower bound of a layer's act_u, known from its activation function: where UnitMem
//! (docs/METRICS.md Eq. 5-8, "Signed layers") measures act_u from.
//!
//! Eq. 8's ratio `(mu_max - mu_-max) / (mu_max + mu_-max)` lies in [0, 1] and means "0: every
//! point activates the unit equally, 1: only one point activates it at all" only when act_u
//! cannot be negative. A GELU unit's act_u (a mean of GELU outputs) is at least GELU's
//! minimum, so UnitMem measures it from there: with `a' = act_u - floor >= 0`,
//!
//! ```text
//! UnitMem(u) = (mu_max - mu_-max) / ((mu_max - floor) + (mu_-max - floor))
//! ```
//!
//! which is Eq. 8 on `a'`: in [0, 1], 0 when every point gives the same mean, 1 when every
//! other point sits at GELU's minimum (GELU's "not activated at all"). With floor 0 (ReLU,
//! norms) it is Eq. 8 exactly, bit for bit. A residual stream (or a LayerNorm output) has no
//! bound that its activation function gives, so its units are not scored.

use serde::{Deserialize, Serialize};

/// min over x of x * Phi(x) (exact GELU), at x = -0.7517915...
pub const GELU_MIN: f64 = -0.169_971_207_479_903_66;

/// [`GELU_MIN`] less 1e-6: act_u is computed in f32 (GELU rounded, then a mean over tokens),
/// which can land a few ulps below the exact minimum; the margin keeps every `a' >= 0`.
pub const GELU_FLOOR: f64 = -0.169_972;
const _: () = assert!(GELU_FLOOR < GELU_MIN && GELU_MIN - GELU_FLOOR < 1e-5);

/// What act_u of a layer's units is known to be at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActFloor {
    /// act_u >= 0 (after ReLU; a norm): Eq. 8 exactly.
    Zero,
    /// act_u >= GELU's minimum (a ViT's MLP hidden neurons): Eq. 8 on act_u - [`GELU_FLOOR`].
    Gelu,
    /// No known lower bound (a residual stream, a LayerNorm output): UnitMem is not defined
    /// and the layer is not scored.
    Unbounded,
}

impl ActFloor {
    /// The value act_u is measured from; `None`: not scored.
    pub fn value(self) -> Option<f64> {
        match self {
            ActFloor::Zero => Some(0.0),
            ActFloor::Gelu => Some(GELU_FLOOR),
            ActFloor::Unbounded => None,
        }
    }

    /// How the floor reads in tables and notes.
    pub fn label(self) -> &'static str {
        match self {
            ActFloor::Zero => "0",
            ActFloor::Gelu => "GELU's minimum",
            ActFloor::Unbounded => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu(x: f64) -> f64 {
        // erf by its Taylor series: accurate to 1e-15 for |x| < 1.
        let z = x / std::f64::consts::SQRT_2;
        let (mut term, mut erf, mut n) = (z, 0.0, 0usize);
        while term.abs() > 1e-18 {
            erf += term / (2 * n + 1) as f64;
            n += 1;
            term *= -z * z / n as f64;
        }
        erf *= 2.0 / std::f64::consts::PI.sqrt();
        x * 0.5 * (1.0 + erf)
    }

    #[test]
    fn gelu_min_is_the_minimum_and_the_floor_below_it() {
        assert!((gelu(-0.751_791_522_622_584_6) - GELU_MIN).abs() < 1e-12);
        for i in 0..=20_000 {
            let x = -3.0 + 3.0 * i as f64 / 20_000.0;
            assert!(gelu(x) >= GELU_MIN - 1e-12, "GELU({x}) = {}", gelu(x));
        }
    }
}
