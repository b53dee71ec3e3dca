//! Comparing tensors in the tests.

use candle_core::{DType, Tensor};

/// The largest |t|, computed in f64; NaN if any value is NaN (so that a comparison with a
/// tolerance fails).
pub fn max_abs(t: &Tensor) -> f64 {
    let values: Vec<f64> = t
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .unwrap();
    values.iter().fold(0.0, |m, x| {
        if m.is_nan() || x.is_nan() {
            f64::NAN
        } else {
            m.max(x.abs())
        }
    })
}

/// The largest |a - b| over the largest |b|, the scale taken as at least `floor` (in f64;
/// the shapes must agree).
pub fn rel_err_floor(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    max_abs(&(&a - &b).unwrap()) / max_abs(&b).max(floor)
}

/// The largest |a - b| over the largest |b|: relative to b's own scale, however small.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    rel_err_floor(a, b, 1e-12)
}

/// The largest |a - b| over the largest |b| or 1, whichever is larger: small activations are
/// compared absolutely.
pub fn rel_err_1(a: &Tensor, b: &Tensor) -> f64 {
    rel_err_floor(a, b, 1.0)
}
