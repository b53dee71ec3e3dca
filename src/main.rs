//! The `memprune` command: a thin layer over the library (parse, call, print).

mod cli;

/// Plain system allocation until `train` turns the block cache on.
#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

fn main() {
    memprune::interrupt::install();
    // Rust ignores SIGPIPE, so printing into a closed pipe would panic; restore the default.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::main_from(std::env::args_os().collect()));
}
