//! The block-caching allocator of the memprune binary, installed here as this test's global
//! allocator: reuse of freed large blocks, zeroing, realloc, the cap.

use memprune::block_cache::{enable, BlockCache};

#[global_allocator]
static ALLOC: BlockCache = BlockCache::new();

const MB: usize = 1 << 20;

#[test]
fn large_blocks_are_reused_zeroed_and_bounded() {
    enable(16 * MB);
    // The same size comes back as the same block.
    let mut a = vec![7f32; 3 * MB / 4];
    a[5] = 1.0;
    let pa = a.as_ptr() as usize;
    assert_eq!(pa % (2 * MB), 0, "large blocks are huge-page aligned");
    drop(a);
    let b = vec![0f32; 3 * MB / 4];
    assert_eq!(b.as_ptr() as usize, pa, "the freed block is reused");
    assert!(
        b.iter().all(|&x| x == 0.0),
        "a reused block asked zeroed is zeroed"
    );
    drop(b);
    // Growing keeps the contents.
    let mut v: Vec<u8> = Vec::with_capacity(MB);
    v.extend((0..MB).map(|i| (i % 251) as u8));
    v.reserve_exact(3 * MB);
    assert!(v.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    drop(v);
    // Blocks over the cap are not kept; the cache stays under it (oldest evicted).
    let before = ALLOC.cached_bytes();
    assert!(before > 0 && before <= 16 * MB);
    drop(vec![1u8; 32 * MB]);
    assert_eq!(
        ALLOC.cached_bytes(),
        before,
        "a block over the cap is freed"
    );
    let keep: Vec<Vec<u8>> = (0..4).map(|_| vec![2u8; 6 * MB]).collect();
    drop(keep);
    let held = ALLOC.cached_bytes();
    assert!((12 * MB..=16 * MB).contains(&held), "{held} bytes cached");
    // A smaller request (up to a quarter) takes the best-fitting block; freed, the block
    // keeps its true size and serves a full-size request again; a much smaller one does not.
    drop(vec![3u8; 8 * MB]);
    let part = vec![4u8; 7 * MB];
    let pp = part.as_ptr() as usize;
    assert!(part.iter().all(|&x| x == 4));
    drop(part);
    let full = vec![5u8; 8 * MB];
    assert_eq!(full.as_ptr() as usize, pp, "the lent block came back whole");
    assert!(full.iter().all(|&x| x == 5), "all of it is usable");
    drop(full);
    let small = vec![6u8; 5 * MB];
    assert_ne!(small.as_ptr() as usize, pp, "5 of 8 MiB is too loose a fit");
    drop(small);
    // Small allocations are untouched.
    let s = vec![9u8; 1000];
    assert_eq!(s.iter().map(|&x| x as usize).sum::<usize>(), 9000);
}
