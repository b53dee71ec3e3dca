//! An exact sum of f64 values, rounded once when read: the same result in any order and
//! over any split into parts, so that shards of points merge bit for bit.
//!
//! Shewchuk's algorithm (as Python's `math.fsum`): the running sum is kept as a short list
//! of non-overlapping partials whose exact total is the exact sum of the inputs; [`value`]
//! rounds that total to the nearest f64 (ties to even). Non-finite inputs, and sums beyond
//! f64's range, give the IEEE result of adding them (±inf or NaN).
//!
//! [`value`]: ExactSum::value

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactSum {
    /// Non-overlapping partials in increasing magnitude, stored as their bit patterns.
    #[serde(with = "crate::metrics::f64_bits::vec")]
    partials: Vec<f64>,
    /// The sum of the non-finite inputs (and of overflowed partials): 0 when there are none.
    #[serde(with = "crate::metrics::f64_bits::one")]
    special: f64,
}

impl ExactSum {
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds only finite inputs: what a sum of finite values is (a partial result read back
    /// is checked with it).
    pub fn is_finite(&self) -> bool {
        self.special == 0.0 && self.partials.iter().all(|p| p.is_finite())
    }

    /// Adds `x` exactly.
    pub fn add(&mut self, mut x: f64) {
        if !x.is_finite() {
            self.special += x;
            return;
        }
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if !hi.is_finite() {
                // Beyond f64's range: the sum is that infinity (or NaN with one of the
                // other sign).
                self.special += hi;
                self.partials.truncate(i);
                return;
            }
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// Adds everything `other` holds: exact, so merging parts equals one pass over all.
    pub fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
        self.special += other.special;
    }

    /// The exact sum rounded to the nearest f64 (ties to even).
    pub fn value(&self) -> f64 {
        if self.special != 0.0 || self.special.is_nan() {
            return self.special;
        }
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half-way cases correctly: the partials below decide the direction.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(v: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        v.iter().for_each(|&x| s.add(x));
        s.value()
    }

    #[test]
    fn sums_exactly_where_naive_summation_loses_digits() {
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_ne!([0.1f64; 10].iter().sum::<f64>(), 1.0);
        assert_eq!(sum(&[]), 0.0);
        // Half-way: 1 + 2^-53 + 2^-106 rounds up, 1 + 2^-53 alone to even (1).
        let e = f64::EPSILON / 2.0;
        assert_eq!(sum(&[1.0, e]), 1.0);
        assert_eq!(sum(&[1.0, e, e * e]), 1.0 + f64::EPSILON);
    }

    #[test]
    fn order_and_splits_do_not_change_the_bits() {
        let mut v: Vec<f64> = (0..500)
            .map(|i| ((i * 7919 % 1013) as f64 - 500.0) * 1.37e-3 * (1.0 + (i % 13) as f64))
            .collect();
        let one = sum(&v);
        v.reverse();
        assert_eq!(sum(&v).to_bits(), one.to_bits());
        let mut merged = ExactSum::new();
        for part in [&v[300..], &v[..17], &v[17..300]] {
            let mut s = ExactSum::new();
            part.iter().for_each(|&x| s.add(x));
            merged.merge(&s);
        }
        assert_eq!(merged.value().to_bits(), one.to_bits());
    }

    #[test]
    fn non_finite_inputs_give_the_ieee_sum() {
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum(&[f64::NAN, 1.0]).is_nan());
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
    }

    #[test]
    fn round_trips_through_json_bit_for_bit() {
        let mut s = ExactSum::new();
        [1e100, 0.1, -1e100, 3.0e-300]
            .iter()
            .for_each(|&x| s.add(x));
        let back: ExactSum = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.value().to_bits(), s.value().to_bits());
    }
}
