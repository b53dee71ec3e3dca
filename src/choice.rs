//! Named choices: the enums a user picks by name (`--framework simclr`, `split:
//! shared+candidates`). Each lists its names once ([`Choice`]); parsing gives the one error
//! line that names the valid ones, and the binary builds its `--help` values from the same
//! list, so the library needs no command-line parser.

/// An enum picked by name.
pub trait Choice: Copy + 'static {
    /// What is picked, for the error line (`framework`).
    const WHAT: &'static str;
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// The name the user types and memprune records.
    fn name(self) -> &'static str;
    /// One line for `--help`.
    fn about(self) -> &'static str;
}

/// The value named `s`, or the line listing the valid names.
pub fn parse<T: Choice>(s: &str) -> Result<T, String> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
            format!(
                "unknown {} `{s}`: expected one of {}",
                T::WHAT,
                names.join(", ")
            )
        })
}

/// [`Choice`] for an enum with inherent `name` and `about` methods, from what is picked
/// and every value in help's order, with `FromStr` and `Display` by name.
#[macro_export]
macro_rules! named_choice {
    ($t:ty, $what:literal, [$($v:expr),+ $(,)?]) => {
        impl $crate::choice::Choice for $t {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($v),+];
            fn name(self) -> &'static str {
                <$t>::name(self)
            }
            fn about(self) -> &'static str {
                <$t>::about(self)
            }
        }

        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $crate::choice::parse(s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(<$t>::name(*self))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::train::split::SplitKind;
    use crate::train::Framework;

    #[test]
    fn names_parse_back_and_an_unknown_one_lists_the_valid() {
        for f in <Framework as super::Choice>::ALL {
            assert_eq!(f.to_string().parse::<Framework>().unwrap(), *f);
        }
        assert_eq!(
            "shared+independent".parse::<SplitKind>().unwrap(),
            SplitKind::SharedIndependent
        );
        assert_eq!(
            "byol".parse::<Framework>().unwrap_err(),
            "unknown framework `byol`: expected one of simclr, simsiam, supervised, mae"
        );
    }
}
