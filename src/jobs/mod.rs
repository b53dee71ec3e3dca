//! The job layer: for each command one request (its defaults and checks in one place) and
//! one result (what the command prints and writes). The binary parses into a request, runs
//! it and prints the result; policies, reports and experiments run the same jobs.

pub mod embed;
pub mod finetune;
pub mod inspect;
pub mod probe;
pub mod train;
