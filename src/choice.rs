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

/// `FromStr` and `Display` by [`Choice::name`].
#[macro_export]
macro_rules! named_choice {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $crate::choice::parse(s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }
    };
}
