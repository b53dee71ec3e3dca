//! `memprune._memprune`: the Python module. Each function builds the library's request for a
//! command, runs the same job the CLI runs and returns the result as the CLI's JSON text;
//! `python/memprune/` turns that into result objects with numpy arrays. The `memprune`
//! command installed by the wheel is the binary's own command line (`cli_main`).

// The binary's command-line module, compiled in here as well, so that `pip install` gives
// the same `memprune` command: one front end, not two.
#[path = "../../src/cli/mod.rs"]
#[allow(dead_code)]
mod cli;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

create_exception!(
    _memprune,
    Error,
    PyValueError,
    "memprune refused or failed: the CLI's one-line message."
);

/// A library error as `memprune.Error` with the CLI's one-line message.
fn py_err(e: anyhow::Error) -> PyErr {
    Error::new_err(memprune::report::error_line::error_line(&e))
}

/// Runs `job` with the GIL released, on a thread of its own, checking for Ctrl-C every
/// 50 ms: a KeyboardInterrupt asks the job to stop (memprune::interrupt) and is raised once
/// it has (its staged outputs removed).
fn run_job<T: Send + 'static>(
    py: Python<'_>,
    job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> PyResult<T> {
    let handle = std::thread::spawn(job);
    loop {
        let done = py.allow_threads(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            handle.is_finished()
        });
        if done {
            break;
        }
        if let Err(interrupt) = py.check_signals() {
            memprune::interrupt::cancel();
            let _ = py.allow_threads(|| handle.join());
            memprune::interrupt::clear_cancel();
            return Err(interrupt);
        }
    }
    match handle.join() {
        Ok(r) => r.map_err(py_err),
        Err(_) => Err(Error::new_err("memprune: internal error (a job panicked)")),
    }
}

/// The `memprune` command on `argv` (program name first); returns the exit code.
#[pyfunction]
fn cli_main(argv: Vec<String>) -> i32 {
    memprune::interrupt::install();
    // Python ignores SIGPIPE; the command dies quietly on a closed pipe like the binary.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main_from(argv.into_iter().map(Into::into).collect())
}

/// The `memprune` command on `argv` (program name first) inside Python: progress on stderr
/// as the CLI shows it, Ctrl-C stops it, an error raises `memprune.Error` with the CLI's line.
/// The result functions of `memprune` run it with `--json` (or `--out`) into a temporary
/// folder and read what it wrote: the numbers are the CLI's by construction.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    memprune::interrupt::clear_cancel();
    let args = argv.into_iter().map(Into::into).collect();
    run_job(py, move || cli::run_args(args).map_err(anyhow::Error::msg))
}

/// Writes a checkpoint held in memory (name -> (dtype, shape, little-endian bytes), plus
/// string metadata) as a safetensors file at `path`, refusing what a file would be refused
/// for (unknown dtypes, byte counts that do not match the shape).
#[pyfunction]
fn write_checkpoint(
    path: PathBuf,
    tensors: Vec<(String, String, Vec<usize>, Vec<u8>)>,
    metadata: BTreeMap<String, String>,
) -> PyResult<()> {
    memprune::checkpoint::raw_safetensors(&path, &tensors, &metadata).map_err(py_err)
}

#[pymodule]
fn _memprune(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(write_checkpoint, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
