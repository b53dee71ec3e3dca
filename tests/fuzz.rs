//! The CI part of fuzzing (issue 11): every committed seed and every input that ever
//! crashed a reader (`tests/fuzz_corpus/crashes/<target>/`) replayed, then a short bounded
//! mutation run per target. Long campaigns: `cargo run --release --example fuzz`.

#[path = "fuzz_targets/mod.rs"]
mod fuzz_targets;

use fuzz_targets::{corpus_dir, files, fuzz, run_target, TARGETS};

#[test]
fn the_seed_and_crash_corpora_replay_without_a_panic() {
    let scratch = tempfile::tempdir().unwrap();
    let mut n = 0;
    for t in TARGETS {
        let seeds = files(&corpus_dir().join(t));
        assert!(!seeds.is_empty(), "no seeds for {t}");
        for (p, b) in seeds
            .iter()
            .chain(&files(&corpus_dir().join("crashes").join(t)))
        {
            let r = std::panic::catch_unwind(|| run_target(t, b, scratch.path()));
            assert!(r.is_ok(), "{t}: {} panics", p.display());
            n += 1;
        }
    }
    assert!(n >= TARGETS.len());
}

#[test]
fn a_bounded_fuzz_run_finds_no_crash() {
    // 2,000 executions per target: a few seconds in all.
    let scratch = tempfile::tempdir().unwrap();
    for t in TARGETS {
        let crashes = fuzz(t, 2_000, 11, scratch.path());
        assert!(crashes.is_empty(), "{t}: {} crashing inputs", crashes.len());
    }
}
