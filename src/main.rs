//! The `memprune` command: a thin layer over the library (parse, call, print).

mod cli;

use anyhow::Result;
use cli::{Cli, Command};
use memprune::report;

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
    let cli = parse_args();
    memprune::block_cache::enable_from_env();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", report::error_line::error_line(&e));
        std::process::exit(1);
    }
}

/// Every option that takes a value reads a leading `-` followed by a number as that number
/// (clap would take `--lr -1` for two flags), so the value's own check refuses it clearly.
fn negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if !a.is_positional() && a.get_action().takes_values() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
    .mut_subcommands(negative_numbers)
}

/// The command line, parsed; a parse error is one line (clap's own spans several, with a
/// usage block), exit code 1. `--help` and `--version` print as clap prints them.
fn parse_args() -> Cli {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};
    let parsed = negative_numbers(Cli::command())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let e = match parsed {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let text = e.to_string();
    // The command the error is about, from clap's usage line (`Usage: memprune measure unit
    // [OPTIONS] ...`), for the pointer to its --help.
    let usage = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| {
            u.split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']) && !w.contains('|'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "memprune".into());
    let first = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        format!("`{usage}` needs a subcommand")
    } else {
        // The first paragraph (a list of missing arguments continues on its own lines).
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_string()
    };
    eprintln!("error: {first} (see `{usage} --help`)");
    std::process::exit(1);
}

fn run(parsed: Cli) -> Result<()> {
    let quiet = parsed.quiet;
    let Some(command) = parsed.command else {
        return match parsed.policy {
            Some(p) => cli::policy::run(&p, quiet),
            None => {
                use clap::CommandFactory;
                Cli::command().print_help()?;
                Ok(())
            }
        };
    };
    match command {
        Command::Plan(a) => cli::plan::run(a, quiet),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Measure(m) => cli::measure::run(m, quiet),
        Command::Experiment(e) => cli::experiment::run(e, quiet),
        Command::Train(a) => cli::train::run(*a, quiet),
        Command::Probe(a) => cli::probe::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Report(a) => cli::report::run(a, quiet),
        Command::Merge(a) => cli::merge::run(a),
    }
}
