//! `memprune --policy FILE`: measure, plan, rewrite, evaluate before and after.

use super::command_line;
use anyhow::Result;
use memprune::jobs::policy as policy_job;
use memprune::plan::PolicyFile;
use memprune::report;
use std::path::Path;

pub fn run(path: &Path, json: Option<&Path>, quiet: bool) -> Result<()> {
    let pf = PolicyFile::load(path)?;
    // Every output checked against every input and each other before any work.
    let mut outputs = pf.outputs()?;
    if let Some(j) = json {
        outputs.output(j, "--json")?;
    }
    let report_settings = match &pf.policy.output.report {
        Some(_) => Some(memprune::report::gather::ReportSettings::of_policy(&pf)?),
        None => None,
    };
    let planned = policy_job::plan_policy(pf, !quiet)?;
    println!("{}", planned.augment.line());
    println!(
        "{}: {} ({} units of {} pruned)\n",
        path.display(),
        planned.encoder.checkpoint.path.display(),
        planned.plan.units_pruned(),
        planned.groups.iter().map(|g| g.channels).sum::<usize>()
    );
    print!("{}", report::plan_table(&planned.plan));
    let mut r = policy_job::run_policy(&planned, &mut outputs)?;
    let probe = policy_job::probe_before_after(&planned, &mut r, &outputs)?;
    let finetune = policy_job::finetune_before_after(&planned, &mut r, &outputs, |l| {
        if !quiet {
            eprintln!("{l}");
        }
    })?;
    let out = &planned.policy.policy.output;
    let text = serde_json::to_string_pretty(&r)?;
    for j in out.json.as_deref().into_iter().chain(json) {
        outputs.stage(j, text.as_bytes())?;
    }
    if let (Some(c), Some(u)) = (&out.chart, &planned.scores.unit_mem) {
        outputs.stage(c, report::unit_mem_chart(u)?.as_bytes())?;
    }
    if let (Some(h), Some(s)) = (&out.report, &report_settings) {
        let g = memprune::report::gather::gather(s, !quiet)?;
        let part = memprune::report::html::PolicyPart {
            report: &r,
            probe,
            text: &planned.policy.text,
        };
        let html = memprune::report::html::render(&g, &command_line(), Some(&part))?;
        outputs.stage(h, html.as_bytes())?;
    }
    // Everything validated and computed: only now do the files appear.
    outputs.commit()?;
    println!("\nwrote {}\n", r.after.checkpoint.display());
    print!("{}", report::before_after_table(&r, probe));
    if let Some((b, a)) = &finetune {
        let ft = planned
            .policy
            .policy
            .evaluation
            .finetune
            .clone()
            .unwrap_or_default();
        let settings = memprune::eval::finetune::settings_from(&ft);
        println!(
            "\nfine-tuned on {} ({}, seeds {:?}):\n",
            ft.data_path().display(),
            report::finetune::epochs(settings.epochs),
            settings.seeds
        );
        print!("{}", report::finetune::before_after(b, a));
    }
    Ok(())
}
