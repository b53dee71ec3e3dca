//! `memprune plan`: what a policy would do, writing nothing.

use anyhow::Result;
use clap::Args;
use memprune::jobs::policy as policy_job;
use memprune::plan::PolicyFile;
use memprune::report;
use std::path::PathBuf;

#[derive(Args)]
pub struct PlanArgs {
    /// The policy file (YAML: model, reference, data, metrics, actions, evaluation, output;
    /// examples in the repository's policies/ folder).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Also write the plan as JSON: per coupling group the units it would prune, the layers
    /// it would train, and the notes.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(a: PlanArgs, quiet: bool) -> Result<()> {
    let policy = a.policy;
    let pf = PolicyFile::load(&policy)?;
    let mut outputs = pf.inputs();
    if let Some(j) = &a.json {
        outputs.output(j, "--json")?;
    }
    let planned = policy_job::plan_policy(pf, !quiet)?;
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
    if let Some(j) = &a.json {
        let v = serde_json::json!({
            "policy": policy.display().to_string(),
            "model": planned.encoder.checkpoint.path.display().to_string(),
            "units_pruned": planned.plan.units_pruned(),
            "units": planned.groups.iter().map(|g| g.channels).sum::<usize>(),
            "plan": planned.plan,
            "would_write": planned.policy.output_checkpoint().display().to_string(),
            "memprune_version": env!("CARGO_PKG_VERSION"),
        });
        outputs.stage(j, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    outputs.commit().map(|_| ())
}
