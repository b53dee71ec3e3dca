//! memprune's fuzz targets and a seeded mutation fuzzer (stable Rust: cargo-fuzz/libFuzzer
//! need nightly). Shared by `tests/fuzz.rs` (a bounded run and the crash-corpus replay, in
//! every `cargo test`) and `examples/fuzz.rs` (long campaigns). Each target hands bytes to
//! one reader; a target fails only by panicking (an error is the right answer to garbage).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const TARGETS: [&str; 10] = [
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
];

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")
}

/// Runs `target` on `data`, with scratch files under `scratch`.
pub fn run_target(target: &str, data: &[u8], scratch: &Path) {
    let file = |name: &str| {
        let p = scratch.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    match target {
        "pth" => {
            let _ = memprune::pth::read_state_dict(data);
        }
        "safetensors" => {
            let _ = memprune::checkpoint::Checkpoint::load(&file("f.safetensors"), None);
        }
        "idx" | "idx_gz" => {
            let p = file("f-images-idx3-ubyte");
            let _ = memprune::data::idx::read_idx_images(&p);
            let _ = memprune::data::idx::read_idx_labels(&p);
        }
        "cifar" => {
            let _ = memprune::data::cifar::read_cifar10(&[file("data_batch_1.bin")]);
        }
        "folder" => {
            let root = scratch.join("folder");
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("a")).unwrap();
            std::fs::create_dir_all(root.join("b")).unwrap();
            std::fs::write(root.join("a/0.png"), data).unwrap();
            std::fs::write(root.join("b/0.jpg"), data).unwrap();
            let _ = memprune::data::folder::read_image_folder(&root);
        }
        "policy" => {
            let _ = memprune::plan::PolicyFile::load(&file("p.yaml"));
        }
        "augment" => {
            let text = String::from_utf8_lossy(data);
            if let Ok(a) = serde_yaml::from_str::<memprune::data::augment::AugmentConfig>(&text) {
                let _ = a.validate();
            }
        }
        "indices" => {
            let _ = memprune::data::subset::Subset::from_file(&file("i.txt"), 1000);
        }
        "npy" => {
            let _ = memprune::data::npy::read_npy_f32(&file("v.npy"));
            let _ = memprune::data::npy::read_npy_i64(&file("v.npy"));
        }
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

/// Fuzzes `target` for `execs` executions from its seed corpus (seeded by `seed`); returns
/// the inputs that panicked. Interesting inputs are not kept (this fuzzer is not
/// coverage-guided): every input is a mutation of a seed.
pub fn fuzz(target: &str, execs: u64, seed: u64, scratch: &Path) -> Vec<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = files(&corpus_dir().join(target))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let mut rng =
        Rng(seed
            ^ memprune::data::rng::hash_key(&[target.len() as u64, target.as_bytes()[0] as u64]));
    let mut crashes = Vec::new();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..execs {
        let input = if i < seeds.len() as u64 {
            seeds[i as usize].clone()
        } else {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, a, b)
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_target(target, &input, scratch)
        }));
        if r.is_err() {
            crashes.push(input);
        }
    }
    std::panic::set_hook(prev);
    crashes
}
