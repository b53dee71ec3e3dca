//! The seeded draws every initialiser uses (the families' `*_init` files, the training heads): one
//! stream per (seed, tensor name), so adding a tensor never changes another's values.

use crate::data::rng::{hash_key, Rng};

const INIT_TAG: u64 = 0x494E_4954_5245_5339; // "INITRES9"

fn name_key(name: &str) -> u64 {
    let words: Vec<u64> = name.bytes().map(u64::from).collect();
    hash_key(&words)
}

/// The stream of tensor `name` in a run of `seed`.
pub(crate) fn rng_for(seed: u64, name: &str) -> Rng {
    Rng::from_key(&[INIT_TAG, seed, name_key(name)])
}

/// Standard normal draws (Box-Muller).
pub(crate) fn normals(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1 = 1.0 - rng.next_f64(); // (0, 1]
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        v.push((r * t.cos()) as f32);
        v.push((r * t.sin()) as f32);
    }
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_variance() {
        let v = normals(&mut Rng::from_key(&[1]), 20000);
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
    }
}
