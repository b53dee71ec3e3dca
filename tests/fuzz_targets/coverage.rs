//! Edge coverage from the compiler's SanitizerCoverage, on stable Rust: built with
//!
//!     RUSTFLAGS="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=3 \
//!       -C llvm-args=-sanitizer-coverage-inline-8bit-counters"
//!
//! every instrumented module increments an 8-bit counter per edge inline and registers its
//! counters through [`__sanitizer_cov_8bit_counters_init`] before `main` (the interface
//! libFuzzer uses). Without those flags nothing registers, and [`available`] is false: the
//! fuzzer then falls back to outcome signatures.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Registered counter regions (one per instrumented codegen unit).
const MAX_REGIONS: usize = 1 << 14;
static REGIONS: [(AtomicUsize, AtomicUsize); MAX_REGIONS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_REGIONS];
static N_REGIONS: AtomicUsize = AtomicUsize::new(0);

/// Called by the instrumentation, before `main`, once per module: no allocation here.
///
/// # Safety
/// `start..end` must be the module's counter array, as the compiler passes it.
#[no_mangle]
pub unsafe extern "C" fn __sanitizer_cov_8bit_counters_init(start: *mut u8, end: *mut u8) {
    let i = N_REGIONS.fetch_add(1, Ordering::SeqCst);
    if i < MAX_REGIONS && (end as usize) > (start as usize) {
        REGIONS[i].0.store(start as usize, Ordering::SeqCst);
        REGIONS[i].1.store(end as usize, Ordering::SeqCst);
    }
}

/// Called when `-sanitizer-coverage-pc-table` is also given; the table is not needed.
#[no_mangle]
pub extern "C" fn __sanitizer_cov_pcs_init(_start: *const usize, _end: *const usize) {}

/// True when the binary was built with the instrumentation.
pub fn available() -> bool {
    N_REGIONS.load(Ordering::SeqCst) > 0
}

fn regions() -> impl Iterator<Item = &'static mut [u8]> {
    let n = N_REGIONS.load(Ordering::SeqCst).min(MAX_REGIONS);
    (0..n).filter_map(|i| {
        let (s, e) = (
            REGIONS[i].0.load(Ordering::SeqCst),
            REGIONS[i].1.load(Ordering::SeqCst),
        );
        // SAFETY: the region was registered by the instrumentation and lives as long as the
        // program; the fuzzer runs one input at a time, so nothing else touches it now.
        (e > s).then(|| unsafe { std::slice::from_raw_parts_mut(s as *mut u8, e - s) })
    })
}

/// Total counters (edges) in the binary.
pub fn edges() -> usize {
    regions().map(|r| r.len()).sum()
}

/// AFL's hit-count buckets: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+.
fn bucket(c: u8) -> u8 {
    match c {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

/// The buckets every edge has reached so far.
#[derive(Default)]
pub struct Seen {
    bits: Vec<u8>,
}

impl Seen {
    /// Zeroes every counter (before the first run; [`observe`](Self::observe) zeroes those
    /// it reads).
    pub fn reset(&self) {
        for r in regions() {
            r.fill(0);
        }
    }

    /// After a run: true when some edge reached a bucket it never reached before (recorded).
    /// Zeroes the counters for the next run in the same pass: most are 0 after any one
    /// input, so they are skipped eight at a time.
    pub fn observe(&mut self) -> bool {
        let total = edges();
        if self.bits.len() != total {
            self.bits.resize(total, 0);
        }
        let mut new = false;
        let mut at = 0;
        for r in regions() {
            let n = r.len();
            let bits = &mut self.bits[at..at + n];
            at += n;
            for (chunk, seen) in r.chunks_mut(8).zip(bits.chunks_mut(8)) {
                if chunk.iter().all(|&c| c == 0) {
                    continue;
                }
                for (c, s) in chunk.iter_mut().zip(seen.iter_mut()) {
                    let b = bucket(*c);
                    if b & !*s != 0 {
                        *s |= b;
                        new = true;
                    }
                    *c = 0;
                }
            }
        }
        new
    }

    /// Edges reached at least once.
    pub fn covered(&self) -> usize {
        self.bits.iter().filter(|&&b| b != 0).count()
    }
}
