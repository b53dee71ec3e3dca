//! Serde of f64 values as their IEEE-754 bit patterns (JSON integers), for the partial
//! results of shards: they round-trip exactly, infinities and NaN included, which decimal
//! JSON numbers do not guarantee.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One f64.
pub mod one {
    use super::*;
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        x.to_bits().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

/// A `Vec<f64>`.
pub mod vec {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_bits()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
    }
}

/// An `Option<Vec<Vec<(usize, f64)>>>` (UnitMem's `median` values per unit).
pub mod opt_pairs {
    use super::*;
    type Pairs = Vec<Vec<(usize, f64)>>;
    pub fn serialize<S: Serializer>(v: &Option<Pairs>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref()
            .map(|v| {
                v.iter()
                    .map(|u| u.iter().map(|&(p, x)| (p, x.to_bits())).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pairs>, D::Error> {
        Ok(Option::<Vec<Vec<(usize, u64)>>>::deserialize(d)?.map(|v| {
            v.into_iter()
                .map(|u| u.into_iter().map(|(p, b)| (p, f64::from_bits(b))).collect())
                .collect()
        }))
    }
}
