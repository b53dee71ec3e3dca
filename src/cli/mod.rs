//! The `memprune` command line: one argument struct per concern shared by every command
//! (`args`), and one file per command with its arguments and its body (parse, call, print).

pub mod args;
pub mod choice;
pub mod embed;
pub mod experiment;
pub mod finetune;
pub mod inspect;
pub mod measure;
pub mod merge;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod report;
pub mod train;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "memprune", version, about = "Find where self-supervised vision encoders memorize: LayerMem, dLayerMem, UnitMem and ClassMem (Wang et al., NeurIPS 2024).", long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Run a policy: measure, plan, rewrite the checkpoint, evaluate before and after.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// With --policy: also write the run's JSON (what the policy's `output.json` holds) here.
    #[arg(long, value_name = "FILE", requires = "policy")]
    pub json: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Print the detected architecture, its layers and units, parameters and MACs.
    Inspect(inspect::InspectArgs),
    /// Measure memorization: `unit` (UnitMem), `class` (ClassMem) or `layer` (LayerMem).
    #[command(subcommand)]
    Measure(measure::Measure),
    /// Reproduce the paper's experiments on the embedded default (or your model).
    #[command(subcommand)]
    Experiment(experiment::Experiment),
    /// Print what a policy would do (units pruned per layer, layers trained), writing nothing.
    Plan(plan::PlanArgs),
    /// Train an encoder (ResNet9, resnet18/34/50 or a ViT; SimCLR, SimSiam, supervised or MAE),
    /// from scratch or from a checkpoint, e.g. LayerMem's f and g.
    Train(Box<train::TrainArgs>),
    /// Linear-probe top-1 accuracy of a frozen encoder (or of raw pixels with --raw).
    Probe(probe::ProbeArgs),
    /// Write the encoder's features of every point of a split (the probe's pooled features,
    /// or a layer's act_u per unit with --layer), with the point indices and labels, as .npy
    /// or safetensors.
    Embed(embed::EmbedArgs),
    /// One self-contained HTML file: LayerMem and UnitMem per layer with their intervals and
    /// controls, and the images each layer and its most memorizing units memorize.
    Report(report::ReportArgs),
    /// Merge the partial results of a run's shards (`measure ... --shard I/N --partial F`):
    /// prints and writes exactly what one run over all points does.
    Merge(merge::MergeArgs),
}

/// The command line as given to [`main_from`].
static ARGS: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

fn remember_args(args: &[std::ffi::OsString]) {
    let text = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    *ARGS.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
}

/// The whole command on `args` (the program name first): parse, run, print an error as one
/// line. Returns the exit code; `--help` and `--version` print and exit the process as clap
/// does. The binary and the Python package's `memprune` command both call this.
pub fn main_from(args: Vec<std::ffi::OsString>) -> i32 {
    remember_args(&args);
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(Stop::Print(e)) => e.exit(),
        Err(Stop::Error(line)) => {
            eprintln!("error: {line}");
            return 1;
        }
    };
    memprune::block_cache::enable_from_env();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", memprune::report::error_line::error_line(&e));
            1
        }
    }
}

/// The command line as typed, for the report's settings.
pub fn command_line() -> String {
    ARGS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| std::env::args().collect())
        .into_iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be > 0");
        }
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    Ok(())
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

/// Why the command line gave no [`Cli`]: text clap prints as it is (`--help`,
/// `--version`), or an error already made one line.
pub enum Stop {
    Print(clap::Error),
    Error(String),
}

/// The command line, parsed; a parse error is one line (clap's own spans several, with a
/// usage block). `--help` and `--version` come back as [`Stop::Print`].
pub fn parse(args: Vec<std::ffi::OsString>) -> std::result::Result<Cli, Stop> {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};
    let parsed = negative_numbers(Cli::command())
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let e = match parsed {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return Err(Stop::Print(e));
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
    Err(Stop::Error(format!("{first} (see `{usage} --help`)")))
}

/// The whole command on `args` without printing an error or exiting: the library caller's
/// way in (the Python module). An error (parse errors included) comes back as its one line.
#[allow(dead_code)] // the Python module's way in (python/src/lib.rs), not the binary's
pub fn run_args(args: Vec<std::ffi::OsString>) -> std::result::Result<(), String> {
    remember_args(&args);
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(Stop::Print(e)) => return Err(e.to_string()),
        Err(Stop::Error(line)) => return Err(line),
    };
    run(cli).map_err(|e| memprune::report::error_line::error_line(&e))
}

fn run(parsed: Cli) -> Result<()> {
    let quiet = parsed.quiet;
    let Some(command) = parsed.command else {
        return match parsed.policy {
            Some(p) => self::policy::run(&p, parsed.json.as_deref(), quiet),
            None => {
                use clap::CommandFactory;
                Cli::command().print_help()?;
                Ok(())
            }
        };
    };
    match command {
        Command::Plan(a) => self::plan::run(a, quiet),
        Command::Inspect(a) => self::inspect::run(a),
        Command::Measure(m) => self::measure::run(m, quiet),
        Command::Experiment(e) => self::experiment::run(e, quiet),
        Command::Train(a) => self::train::run(*a, quiet),
        Command::Probe(a) => self::probe::run(a),
        Command::Embed(a) => self::embed::run(a),
        Command::Report(a) => self::report::run(a, quiet),
        Command::Merge(a) => self::merge::run(a),
    }
}
