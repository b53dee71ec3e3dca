//! The terminal tables of fine-tuning: Table 5 and a policy's before/after.

use crate::eval::finetune::FinetuneResult;
use crate::eval::finetune_experiment::Table5;
use crate::report::table;

fn pct(mean: f64, std: f64) -> String {
    format!("{:.2} ± {:.2}", 100.0 * mean, 100.0 * std)
}

/// `1 epoch`, `10 epochs`.
pub fn epochs(n: usize) -> String {
    if n == 1 {
        "1 epoch".to_string()
    } else {
        format!("{n} epochs")
    }
}

/// The candidate layers with their dLayerMem, then one row per criterion: the layers it
/// chose (each seed's draw for the random row), downstream accuracy, the paper's.
pub fn table5(t: &Table5) -> String {
    let what = if t.corrected {
        "corrected dLayerMem"
    } else {
        "dLayerMem"
    };
    let mut out = String::new();
    let rows: Vec<Vec<String>> = t
        .layers
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                format!("{:+.4}", l.dlayer_mem),
                l.ci.map(|(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table(&["layer", what, "95 % interval"], &rows));
    out.push('\n');
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| {
            let mut sets: Vec<String> = r
                .layers
                .iter()
                .map(|l| {
                    if l.is_empty() {
                        "-".to_string()
                    } else {
                        l.join(",")
                    }
                })
                .collect();
            sets.dedup();
            vec![
                r.label.clone(),
                sets.join(" | "),
                pct(r.mean, r.std),
                r.paper
                    .map(|(m, s)| format!("{m:.1} ± {s:.2}"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "fine-tuned (+ head)",
            "layers",
            "memprune",
            "paper (CIFAR10 -> STL10)",
        ],
        &rows,
    ));
    out.push('\n');
    for c in &t.comparisons {
        out.push_str(&format!(
            "top {k} by dLayerMem vs last {k}: {:+.2} points (standard error {:.2}): {}\n",
            100.0 * c.difference,
            100.0 * c.standard_error,
            c.verdict,
            k = c.k
        ));
    }
    out
}

/// A policy's fine-tuning evaluation: the head only (before) and the chosen layers (after).
pub fn before_after(before: &FinetuneResult, after: &FinetuneResult) -> String {
    let rows = [("head only", before), ("policy's layers", after)]
        .iter()
        .map(|(name, r)| {
            vec![
                name.to_string(),
                if r.layers.is_empty() {
                    "-".into()
                } else {
                    r.layers.join(",")
                },
                pct(r.mean(), r.std()),
                r.runs
                    .iter()
                    .map(|x| format!("{:.2}", 100.0 * x.accuracy))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &[
            "fine-tuned (+ head)",
            "layers",
            "downstream top-1",
            "per seed",
        ],
        &rows,
    )
}
