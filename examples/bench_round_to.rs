//! Does a pruned model run as much faster as its MACs say, with and without `round_to`?
//!
//!     cargo run --release --example bench_round_to -- [CKPT] [SIZE] [FRACTION] [ROUND_TO,...]
//!
//! Defaults: the embedded f, 28, 0.3, `0,8,16,32` (0: no rounding). Set `CRITERION` (default
//! `l1-norm`: it needs no data), `BATCH` (default 256, 32 at sizes over 64) and `ROUNDS`
//! (default 9). For every round_to it prunes `FRACTION` of every layer's units (per layer),
//! then times the unpruned and the pruned model alternately, `ROUNDS` rounds of one batch
//! each, as the policy report does ([`memprune::eval::cost::compare_speed`]). Prints per
//! setting: the kept widths, MACs after/before, the speed-up (median of the rounds' ratios,
//! [least, greatest]) and the speed-up over the MAC reduction (1.0: as fast as the MACs
//! say; the bar: >= 0.9).

use memprune::checkpoint::Checkpoint;
use memprune::eval::cost::compare_speed;
use memprune::model::coupling::coupling_groups;
use memprune::model::{Encoder, LoadOptions};
use memprune::plan::policy::{Policy, PolicyFile};
use memprune::plan::{make_plan, Scores};
use memprune::rewrite::{prune_tensors, PruneMode};
use std::path::PathBuf;

#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ckpt = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(memprune::defaults::model_f);
    let size: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(28);
    let fraction: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0.3);
    let rounds_to: Vec<usize> = args
        .get(3)
        .map(|s| s.as_str())
        .unwrap_or("0,8,16,32")
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let env = |k: &str| std::env::var(k).ok();
    let criterion = env("CRITERION").unwrap_or_else(|| "l1-norm".into());
    let batch: usize = env("BATCH")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(if size > 64 { 32 } else { 256 });
    let rounds: usize = env("ROUNDS").map(|s| s.parse()).transpose()?.unwrap_or(9);
    let before = Encoder::load(&ckpt, &LoadOptions::default())?;
    let groups = coupling_groups(&before);
    println!(
        "{}: {} at {size}x{size}, {criterion} per layer, fraction {fraction}; batch {batch}, {rounds} rounds alternated; threads {}",
        ckpt.display(),
        before.describe(),
        rayon::current_num_threads()
    );
    println!(
        "{:>8}  {:>10}  {:>11}  {:>24}  {:>14}  widths",
        "round_to", "MACs a/b", "MAC speedup", "speed-up [least, most]", "speedup/MACsup"
    );
    for &r in &rounds_to {
        let round = if r == 0 {
            String::new()
        } else {
            format!(", round_to: {r}")
        };
        let text = format!(
            "actions:\n  - prune: {{criterion: {criterion}, fraction: {fraction}, scope: per-layer, mode: remove{round}}}\n"
        );
        let policy: Policy = serde_yaml::from_str(&text)?;
        let pf = PolicyFile {
            path: "bench_round_to".into(),
            text,
            policy,
        };
        let plan = make_plan(&pf, &before, &groups, &Scores::default())?;
        let tensors = prune_tensors(
            &before.checkpoint.stored,
            &groups,
            &plan.cuts(),
            PruneMode::Remove,
        )?;
        let after = Encoder::from_checkpoint(
            Checkpoint::from_tensors(
                &before.checkpoint.path,
                tensors,
                before.checkpoint.metadata.clone(),
            ),
            &LoadOptions::default(),
        )?;
        let macs = after.macs(size) as f64 / before.macs(size) as f64;
        let s = compare_speed(&before, &after, size, batch, rounds)?;
        let widths: Vec<String> = plan
            .groups
            .iter()
            .map(|g| (g.channels - g.pruned.len()).to_string())
            .collect();
        println!(
            "{:>8}  {:>9.3}x  {:>10.2}x  {:>8.2}x [{:.2}, {:.2}]  {:>14.2}  {}",
            if r == 0 { "-".into() } else { r.to_string() },
            macs,
            1.0 / macs,
            s.ratio_median,
            s.ratio_min,
            s.ratio_max,
            s.ratio_median * macs,
            widths.join(",")
        );
    }
    Ok(())
}
