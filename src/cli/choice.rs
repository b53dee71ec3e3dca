//! clap value parsers for the library's named choices ([`memprune::choice::Choice`],
//! [`TrainArch`]): the names and their help lines come from the library, which knows no
//! clap.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use memprune::choice::Choice;
use memprune::train::init::TrainArch;

/// A parser of `T`'s names, each listed in `--help` with its line.
pub fn of<T: Choice + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(
        T::ALL
            .iter()
            .map(|v| PossibleValue::new(v.name()).help(v.about())),
    )
    .map(|s| memprune::choice::parse::<T>(&s).expect("a listed name"))
}

/// `--arch`: the architectures the registry's families build from scratch.
pub fn arch() -> impl TypedValueParser<Value = TrainArch> {
    PossibleValuesParser::new(
        TrainArch::all()
            .into_iter()
            .map(|a| PossibleValue::new(a.name()).help(a.fresh().about())),
    )
    .map(|s| TrainArch::named(&s).expect("a listed name"))
}
