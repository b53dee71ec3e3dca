//! The architecture `memprune train` builds from scratch: one of the fresh architectures
//! the families own, found by name in [`crate::model::registry::FRESH`].

use crate::model::fresh::FreshArch;
use anyhow::Result;

/// An architecture `memprune train` builds: recorded and parsed by its name.
#[derive(Clone, Copy)]
pub struct TrainArch(&'static dyn FreshArch);

impl TrainArch {
    /// The architecture named `name` (`resnet9`, `resnet18`, ..., `vit`).
    pub fn named(name: &str) -> Result<TrainArch> {
        crate::model::fresh::named(name).map(TrainArch)
    }

    /// Every architecture, in the registry's order.
    pub fn all() -> Vec<TrainArch> {
        crate::model::registry::FRESH
            .iter()
            .map(|a| TrainArch(*a))
            .collect()
    }

    /// The family's fresh architecture.
    pub fn fresh(self) -> &'static dyn FreshArch {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The widths unless `--widths`.
    pub fn default_widths(self) -> Vec<usize> {
        self.0.default_widths()
    }

    /// Checks `widths` for this architecture.
    pub fn check_widths(self, widths: &[usize]) -> Result<()> {
        self.0.check_widths(widths)
    }
}

impl Default for TrainArch {
    /// The registry's first: the paper's ResNet9.
    fn default() -> Self {
        TrainArch(crate::model::registry::FRESH[0])
    }
}

impl PartialEq for TrainArch {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for TrainArch {}

impl std::fmt::Debug for TrainArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainArch({})", self.name())
    }
}

impl std::fmt::Display for TrainArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TrainArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TrainArch::named(s).map_err(|e| e.to_string())
    }
}

impl serde::Serialize for TrainArch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for TrainArch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        TrainArch::named(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_valid() {
        for a in TrainArch::all() {
            assert_eq!(a.name().parse::<TrainArch>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<TrainArch>(&json).unwrap(), a);
        }
        assert_eq!(TrainArch::default().name(), "resnet9");
        let e = "resnet10".parse::<TrainArch>().unwrap_err();
        assert_eq!(
            e,
            "unknown architecture `resnet10`: expected one of resnet9, resnet18, resnet34, resnet50, vit"
        );
    }
}
