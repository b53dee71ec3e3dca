//! Long fuzz campaigns over memprune's readers (the targets of tests/fuzz_targets):
//!
//!     cargo run --release --example fuzz -- [TARGET|all] [EXECUTIONS] [SEED]
//!
//! Prints executions, time, crashes and the outcome signatures reached per target; a crashing input is saved under
//! tests/fuzz_corpus/crashes/TARGET/ (replayed by `cargo test`).

#[path = "../tests/fuzz_targets/mod.rs"]
mod fuzz_targets;

use fuzz_targets::{campaign, corpus_dir, TARGETS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let execs: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let targets: Vec<&str> = if which == "all" {
        TARGETS.to_vec()
    } else {
        vec![which]
    };
    let scratch = tempfile::tempdir().expect("a scratch folder");
    for t in targets {
        let start = std::time::Instant::now();
        let c = campaign(t, execs, seed, scratch.path());
        let crashes = &c.crashes;
        let dir = corpus_dir().join("crashes").join(t);
        for (i, c) in crashes.iter().enumerate() {
            std::fs::create_dir_all(&dir).expect("the crash folder");
            std::fs::write(dir.join(format!("seed{seed}-{i}")), c).expect("a crash file");
        }
        println!(
            "{t}: {execs} executions in {:.1} s, {} crashes ({} outcome signatures, {} inputs kept{})",
            start.elapsed().as_secs_f64(),
            crashes.len(),
            c.signatures,
            c.kept,
            match c.edges {
                Some((hit, all)) => format!(", {hit} of {all} edges reached"),
                None => ", not instrumented: guided by outcome signatures".into(),
            }
        );
    }
}
