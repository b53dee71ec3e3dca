//! memprune's fuzz targets and a feedback-guided mutation fuzzer on stable Rust (cargo-fuzz
//! needs nightly; cargo-afl needs its own compiler wrapper and an AFL++ install, bolero a
//! libFuzzer/AFL engine for guidance: none of them runs on this stable toolchain alone).
//! Shared by `tests/fuzz.rs` (a bounded run and the crash-corpus replay, in every `cargo
//! test`) and `examples/fuzz.rs` (long campaigns). Each target hands bytes to one reader; a
//! target fails only by panicking (an error is the right answer to garbage).
#![allow(dead_code)]

pub mod coverage;

use std::path::{Path, PathBuf};

pub const TARGETS: [&str; 13] = [
    "pth",
    "safetensors",
    "idx",
    "idx_gz",
    "cifar",
    "folder",
    "policy",
    "augment",
    "indices",
    "npy",
    "merge",
    "vit",
    "policy_aliases",
];

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")
}

/// The outcome of one reader call as a signature: "ok", or the error's message with what
/// varies with the input (numbers, quoted names, the scratch path) blanked, so that inputs
/// that reach a new error path can be told from those that reach a known one.
fn signature<T>(r: &anyhow::Result<T>, scratch: &Path) -> String {
    let Err(e) = r else {
        return "ok".into();
    };
    let text = format!("{e:#}").replace(&scratch.display().to_string(), "");
    let mut out = String::new();
    let mut quoted: Option<char> = None;
    for c in text.chars() {
        match quoted {
            Some(q) if c == q => quoted = None,
            Some(_) => {}
            None if matches!(c, '`' | '"' | '\'') => {
                quoted = Some(c);
                out.push('_');
            }
            None if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            None => out.push(c),
        }
        if out.len() >= 160 {
            break;
        }
    }
    out
}

/// Runs `target` on `data`, with scratch files under `scratch`; returns the outcome's
/// [`signature`] (the readers called, joined).
pub fn run_target(target: &str, data: &[u8], scratch: &Path) -> String {
    let file = |name: &str| {
        let p = scratch.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    match target {
        "pth" => signature(&memprune::checkpoint::pth::read_state_dict(data), scratch),
        "safetensors" => signature(
            &memprune::checkpoint::Checkpoint::load(&file("f.safetensors"), None),
            scratch,
        ),
        "idx" | "idx_gz" => {
            let p = file("f-images-idx3-ubyte");
            let a = signature(&memprune::data::idx::read_idx_images(&p), scratch);
            let b = signature(&memprune::data::idx::read_idx_labels(&p), scratch);
            format!("{a} | {b}")
        }
        "cifar" => signature(
            &memprune::data::cifar::read_cifar10(&[file("data_batch_1.bin")]),
            scratch,
        ),
        "folder" => {
            let root = scratch.join("folder");
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("a")).unwrap();
            std::fs::create_dir_all(root.join("b")).unwrap();
            std::fs::write(root.join("a/0.png"), data).unwrap();
            std::fs::write(root.join("b/0.jpg"), data).unwrap();
            signature(&memprune::data::folder::read_image_folder(&root), scratch)
        }
        "policy" => signature(&memprune::plan::PolicyFile::load(&file("p.yaml")), scratch),
        "augment" => {
            let text = String::from_utf8_lossy(data);
            match serde_yaml::from_str::<memprune::data::augment::AugmentConfig>(&text) {
                Ok(a) => signature(&a.validate(), scratch),
                Err(e) => signature::<()>(&Err(e.into()), scratch),
            }
        }
        "indices" => signature(
            &memprune::data::subset::Subset::from_file(&file("i.txt"), 1000),
            scratch,
        ),
        "npy" => {
            let p = file("v.npy");
            let a = signature(&memprune::data::npy::read_npy_f32(&p), scratch);
            let b = signature(&memprune::data::npy::read_npy_i64(&p), scratch);
            format!("{a} | {b}")
        }
        "merge" => {
            // As read (digest checked), then resealed so that edits reach the content checks
            // and the merge itself, as an adversary who recomputes the digest would.
            use memprune::shard::partial::{merge, Partial};
            let p = file("p.json");
            let a = signature(&Partial::read(&p), scratch);
            let b = match serde_json::from_slice::<Partial>(data) {
                Ok(mut part) => {
                    part.seal();
                    let text = part.to_json().unwrap();
                    std::fs::write(&p, text).unwrap();
                    let r = Partial::read(&p).and_then(|q| merge(vec![(p.clone(), q)]));
                    signature(&r, scratch)
                }
                Err(e) => signature::<()>(&Err(e.into()), scratch),
            };
            format!("{a} | {b}")
        }
        "vit" => signature(
            &memprune::model::Encoder::load(
                &file("vit.safetensors"),
                &memprune::model::LoadOptions::default(),
            ),
            scratch,
        ),
        "policy_aliases" => signature(&memprune::plan::PolicyFile::load(&file("a.yaml")), scratch),
        other => panic!("no fuzz target {other}"),
    }
}

/// The files of `dir`, sorted (none when it does not exist).
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| {
                    let b = std::fs::read(&p).unwrap();
                    (p, b)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        memprune::data::rng::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b'(', b'.'];

/// One mutation of `input` (1-4 stacked edits; `other` for splicing).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.next() as u8;
            }
            2 if n > 0 => {
                let i = rng.below(n);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 if n >= 4 => {
                // A 32-bit value (little- or big-endian) set to something extreme.
                let i = rng.below(n - 3);
                let x: u32 = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xffff][rng.below(6)];
                let b = if rng.below(2) == 0 {
                    x.to_le_bytes()
                } else {
                    x.to_be_bytes()
                };
                v[i..i + 4].copy_from_slice(&b);
            }
            4 if n > 0 => {
                let i = rng.below(n);
                let len = 1 + rng.below((n - i).min(64));
                v.drain(i..i + len);
            }
            5 if n > 0 => {
                // Duplicate a chunk (repetition grows nesting and memo references).
                let i = rng.below(n);
                let len = 1 + rng.below((n - i).min(64));
                let chunk: Vec<u8> = v[i..i + len].to_vec();
                let at = rng.below(n + 1);
                for _ in 0..1 + rng.below(8) {
                    v.splice(at..at, chunk.iter().copied());
                }
            }
            6 if n > 0 => v.truncate(rng.below(n)),
            7 if !other.is_empty() => {
                let i = rng.below(n + 1);
                let j = rng.below(other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ => {
                let at = rng.below(n + 1);
                let b = rng.next() as u8;
                v.insert(at, b);
            }
        }
    }
    v
}

/// Most inputs kept for reaching a new outcome, and the largest kept input (bytes).
const MAX_KEPT: usize = 10_000;
const MAX_KEPT_LEN: usize = 64 << 10;

/// What a campaign found.
pub struct Campaign {
    /// The inputs that panicked.
    pub crashes: Vec<Vec<u8>>,
    /// Distinct outcome signatures seen.
    pub signatures: usize,
    /// Inputs added to the pool because they reached new coverage (or a new signature).
    pub kept: usize,
    /// Edges reached and edges in all, when the binary is instrumented.
    pub edges: Option<(usize, usize)>,
}

/// Fuzzes `target` for `execs` executions (seeded by `seed`), starting from its seed corpus.
/// Feedback-guided: an input that reaches an edge (or an edge's hit-count bucket) never
/// reached before joins the pool that later inputs are mutated from (up to [`MAX_KEPT`]), so
/// mutations build on inputs that got further into a reader. Edges come from
/// SanitizerCoverage when the binary is instrumented ([`coverage`]); otherwise (a plain
/// `cargo test` build) the outcome [`signature`] stands in for the branch reached.
pub fn campaign(target: &str, execs: u64, seed: u64, scratch: &Path) -> Campaign {
    let mut pool: Vec<Vec<u8>> = files(&corpus_dir().join(target))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(!pool.is_empty(), "no seeds for {target}");
    let n_seeds = pool.len() as u64;
    let mut rng =
        Rng(seed
            ^ memprune::data::rng::hash_key(&[target.len() as u64, target.as_bytes()[0] as u64]));
    let mut seen = std::collections::HashSet::new();
    let guided = coverage::available();
    let mut cov = coverage::Seen::default();
    cov.reset();
    let mut crashes = Vec::new();
    let mut kept = 0;
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // Long campaigns (`FUZZ_PROGRESS=N`): a line of figures every N executions, and each
    // crashing input saved as soon as found, so a campaign stopped early still reports.
    let every: Option<u64> = std::env::var("FUZZ_PROGRESS")
        .ok()
        .and_then(|v| v.parse().ok());
    let start = std::time::Instant::now();
    for i in 0..execs {
        if every.is_some_and(|n| n > 0 && i > 0 && i % n == 0) {
            eprintln!(
                "{target}: {i} executions in {:.1} s, {} crashes, {} inputs kept{}",
                start.elapsed().as_secs_f64(),
                crashes.len(),
                kept,
                if guided {
                    format!(", {} of {} edges reached", cov.covered(), coverage::edges())
                } else {
                    String::new()
                }
            );
        }
        let input = if i < n_seeds {
            pool[i as usize].clone()
        } else {
            let a = &pool[rng.below(pool.len())];
            let b = &pool[rng.below(pool.len())];
            mutate(&mut rng, a, b)
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_target(target, &input, scratch)
        }));
        match r {
            Err(_) => {
                if guided {
                    cov.observe(); // clears the counters the crash left
                }
                if every.is_some() {
                    let dir = corpus_dir().join("crashes").join(target);
                    let _ = std::fs::create_dir_all(&dir);
                    let _ = std::fs::write(dir.join(format!("live-{seed}-{i}")), &input);
                }
                crashes.push(input)
            }
            Ok(sig) => {
                let new_sig = seen.insert(sig);
                let new = if guided { cov.observe() } else { new_sig };
                if new && i >= n_seeds && kept < MAX_KEPT && input.len() <= MAX_KEPT_LEN {
                    pool.push(input);
                    kept += 1;
                }
            }
        }
    }
    std::panic::set_hook(prev);
    Campaign {
        crashes,
        signatures: seen.len(),
        kept,
        edges: guided.then(|| (cov.covered(), coverage::edges())),
    }
}

/// [`campaign`]'s crashing inputs.
pub fn fuzz(target: &str, execs: u64, seed: u64, scratch: &Path) -> Vec<Vec<u8>> {
    campaign(target, execs, seed, scratch).crashes
}
