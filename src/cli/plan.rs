//! `memprune plan`: what a policy would do, writing nothing.

use anyhow::Result;
use clap::Args;
use memprune::plan::PolicyFile;
use memprune::{pipeline, report};
use std::path::PathBuf;

#[derive(Args)]
pub struct PlanArgs {
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
}

pub fn run(a: PlanArgs, quiet: bool) -> Result<()> {
    let policy = a.policy;
    let planned = pipeline::plan_policy(PolicyFile::load(&policy)?, !quiet)?;
    println!(
        "{}: plan for {} ({} units of {} pruned)\n",
        policy.display(),
        planned.encoder.checkpoint.path.display(),
        planned.plan.units_pruned(),
        planned.groups.iter().map(|g| g.channels).sum::<usize>()
    );
    print!("{}", report::plan_table(&planned.plan));
    println!(
        "\nwould write {}",
        planned.policy.output_checkpoint().display()
    );
    Ok(())
}
