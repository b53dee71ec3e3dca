//! Reports: readable tables for the terminal, CSV per unit, JSON with everything, SVG
//! charts ([`chart`]), and the self-contained HTML report ([`gather`] measures it,
//! [`html`] writes it).

pub mod chart;
pub mod error_line;
pub mod finetune;
pub mod gather;
pub mod html;
pub mod interval_chart;
pub mod png;
pub mod point_names;

use crate::metrics::layer_mem::{LayerMemLayer, PointScores};
use crate::metrics::unit_mem::UnitMemLayer;
use crate::model::Encoder;
use std::fmt::Write;

/// A plain text table: a header row and right-aligned columns (the first left-aligned).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "{c:<width$}", width = w[0]);
            } else {
                let _ = write!(out, "  {c:>width$}", width = w[i]);
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    line(
        w.iter()
            .map(|&k| "-".repeat(k))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect(),
        &mut out,
    );
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect(), &mut out);
    }
    out
}

fn ci(i: &crate::metrics::bootstrap::Interval, digits: usize) -> String {
    format!("[{:.d$}, {:.d$}]", i.lo, i.hi, d = digits)
}

/// A UnitMem layer's name as tables show it: `(from GELU min)` where act_u is measured from
/// a floor below 0, `(signed)` where a layer measured from 0 had negative activations.
pub fn layer_label(l: &UnitMemLayer) -> String {
    if l.act_floor != 0.0 {
        format!("{} (from {:.3})", l.name, l.act_floor)
    } else if l.signed {
        format!("{} (signed)", l.name)
    } else {
        l.name.clone()
    }
}

/// The line naming the layers UnitMem/ClassMem leaves out (no known lower bound of act_u).
pub fn unscored_note(unscored: &[String]) -> Option<String> {
    (!unscored.is_empty()).then(|| {
        format!(
            "not scored ({} layers: act_u has no known lower bound, so Eq. 8 is not bounded; docs/METRICS.md, \"Signed layers\"): {}",
            unscored.len(),
            unscored.join(", ")
        )
    })
}

/// Per-layer summary of UnitMem (or ClassMem) scores, with the control on unseen points
/// beside them when it was measured.
pub fn unit_mem_table(layers: &[UnitMemLayer], metric: &str) -> String {
    let controlled = layers.iter().all(|l| l.control.is_some()) && !layers.is_empty();
    if !controlled {
        let rows: Vec<Vec<String>> = layers
            .iter()
            .map(|l| {
                vec![
                    layer_label(l),
                    l.units.len().to_string(),
                    format!("{:.3}", l.summary.mean),
                    format!("{:.3}", l.summary.median),
                    format!("{:.3}", l.summary.max),
                    format!("{:.1}%", 100.0 * l.summary.share_above_half),
                    l.summary.dead.to_string(),
                ]
            })
            .collect();
        let mean = format!("{metric} mean");
        return table(
            &["layer", "units", &mean, "median", "max", "> 0.5", "dead"],
            &rows,
        );
    }
    let with_excess = layers
        .iter()
        .any(|l| l.control.as_ref().is_some_and(|c| c.excess_mean.is_some()));
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            let c = l.control.as_ref().expect("checked above");
            let mut r = vec![
                layer_label(l),
                l.units.len().to_string(),
                format!("{:.3} {}", l.summary.mean, ci(&c.mean_ci, 3)),
                format!("{:.3} {}", c.unseen.mean, ci(&c.unseen_mean_ci, 3)),
                format!("{:+.3} {}", c.mean_difference, ci(&c.mean_difference_ci, 3)),
                format!(
                    "{:.1}% / {:.1}%",
                    100.0 * l.summary.share_above_half,
                    100.0 * c.unseen.share_above_half
                ),
            ];
            if with_excess {
                r.push(match (c.excess_mean, c.excess_mean_ci) {
                    (Some(m), Some(i)) => format!(
                        "{m:+.3} {}{}",
                        ci(&i, 3),
                        if c.excess_star == Some(true) {
                            " *"
                        } else {
                            ""
                        }
                    ),
                    (Some(m), None) => format!("{m:+.3}"),
                    _ => "-".into(),
                });
            }
            r.push(l.summary.dead.to_string());
            r
        })
        .collect();
    let train = format!("{metric} train");
    let mut header = vec![
        "layer",
        "units",
        train.as_str(),
        "unseen",
        "train - unseen",
        "> 0.5 train / unseen",
    ];
    if with_excess {
        header.push("excess");
    }
    header.push("dead");
    let mut out = table(&header, &rows);
    let _ = writeln!(
        out,
        "\n[95 % intervals over units: the spread of the units, not an uncertainty]  unseen: the same units on as many test points the encoder never saw."
    );
    if with_excess {
        let _ = writeln!(
            out,
            "excess: mean UnitMem-excess, (mu_max,train - mu_max,unseen) / (mu_max,train + mu_max,unseen) per unit; ~0 without memorization. Its [95 %] comes from relabelling the training and unseen points at random. {}",
            crate::metrics::significance::star_note(layers.len())
        );
    }
    out
}

/// For each layer: of the `n` units of highest UnitMem-excess, how many have a planted point
/// as their argmax, against what chance gives (the planted share of the measured points).
pub fn planted_argmax_table(
    layers: &[UnitMemLayer],
    planted: &[usize],
    points: &[usize],
    n: usize,
    names: &point_names::Namer,
) -> String {
    let set: std::collections::BTreeSet<usize> = planted.iter().copied().collect();
    let measured = points.iter().filter(|p| set.contains(p)).count();
    let chance = measured as f64 / points.len().max(1) as f64;
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            let top = crate::metrics::unit_control::top_units(l, n);
            let hits = top
                .iter()
                .filter(|(u, _)| set.contains(&l.units[*u].argmax))
                .count();
            vec![
                l.name.clone(),
                format!("{hits} / {}", top.len()),
                format!("{:.1}", chance * top.len() as f64),
                top.first()
                    .map(|(u, e)| {
                        format!(
                            "unit {u}: {e:.3} (argmax {})",
                            names.labelled(l.units[*u].argmax)
                        )
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(
        &["layer", "argmax planted", "by chance", "top unit by excess"],
        &rows,
    );
    let _ = writeln!(
        out,
        "({measured} of the {} measured points are planted)",
        points.len()
    );
    out
}

/// SSLMem' of the planted points against the other scored points, per layer.
pub fn planted_layer_table(rows: &[crate::metrics::layer_mem::GroupDifference]) -> String {
    let r: Vec<Vec<String>> = rows
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                format!("{:.4}", g.group_mean),
                format!("{:.4}", g.other_mean),
                format!(
                    "{:+.4} {}{}",
                    g.difference,
                    ci(&g.difference_ci, 4),
                    if g.star { " *" } else { "" }
                ),
                format!("{:.4}", g.p_value),
            ]
        })
        .collect();
    let (a, b) = rows
        .first()
        .map(|g| (g.group_points, g.other_points))
        .unwrap_or((0, 0));
    let pl = format!("planted ({a})");
    let ot = format!("others ({b})");
    let mut out = table(&["layer", &pl, &ot, "difference [95 %]", "p"], &r);
    let _ = writeln!(
        out,
        "\ndifference [95 %] and p: from relabelling the scored points at random (what the difference is when the planted points are no different). {}",
        crate::metrics::significance::star_note(rows.len())
    );
    out
}

/// One line per unit: layer, unit, score, argmax, mu_max, mu_rest, dead, and with a control
/// the unit's score and mu_max on unseen points and its UnitMem-excess.
/// With `names` (UnitMem's argmax is a point), an `argmax_name` column: the point's file.
pub fn unit_mem_csv(
    layers: &[UnitMemLayer],
    argmax_name: &str,
    names: Option<&point_names::Namer>,
) -> String {
    let controlled = layers.iter().any(|l| l.control.is_some());
    let mut s = format!("layer,unit,score,{argmax_name},mu_max,mu_rest,dead");
    if names.is_some() {
        s.push_str(",argmax_name");
    }
    if controlled {
        s.push_str(",excess");
    }
    s.push('\n');
    for l in layers {
        for (u, x) in l.units.iter().enumerate() {
            let _ = write!(
                s,
                "{},{u},{},{},{},{},{}",
                l.name, x.score, x.argmax, x.mu_max, x.mu_rest, x.dead
            );
            if let Some(n) = names {
                let _ = write!(s, ",{}", point_names::csv_field(&n.point(x.argmax)));
            }
            if controlled {
                let e = l
                    .control
                    .as_ref()
                    .and_then(|c| c.excess.get(u))
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let _ = write!(s, ",{e}");
            }
            s.push('\n');
        }
    }
    s
}

/// LayerMem and dLayerMem per layer with 95 % intervals; with a control, the control's
/// LayerMem and the corrected LayerMem and its dLayerMem.
pub fn layer_mem_table(layers: &[LayerMemLayer]) -> String {
    let controlled = layers.iter().all(|l| l.corrected.is_some()) && !layers.is_empty();
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            let mut r = vec![
                l.name.clone(),
                format!("{:.4} {}", l.layer_mem, ci(&l.layer_mem_ci, 4)),
                match (l.dlayer_mem, l.dlayer_mem_ci) {
                    (Some(d), Some(i)) => format!("{d:+.4} {}", ci(&i, 4)),
                    _ => "-".into(),
                },
            ];
            if controlled {
                r.push(format!("{:.4}", l.control_layer_mem.unwrap_or(f64::NAN)));
                let c = l.corrected.unwrap_or(f64::NAN);
                let star = if l.star == Some(true) { " *" } else { "" };
                r.push(format!(
                    "{c:+.4} {}{star}",
                    l.corrected_ci.map(|i| ci(&i, 4)).unwrap_or_default()
                ));
                r.push(match (l.dcorrected, l.dcorrected_ci) {
                    (Some(d), Some(i)) => format!("{d:+.4} {}", ci(&i, 4)),
                    _ => "-".into(),
                });
            }
            r.push(format!("{:.4}", l.layer_mem_top_half));
            r.push(format!("{:.4}", l.layer_mem_bottom_half));
            r
        })
        .collect();
    let mut header = vec!["layer", "LayerMem [95 %]", "dLayerMem [95 %]"];
    if controlled {
        header.extend(["control", "corrected [95 %]", "dcorrected [95 %]"]);
    }
    header.extend(["LM top half", "LM bottom half"]);
    let mut out = table(&header, &rows);
    if controlled {
        let _ = writeln!(
            out,
            "\ncorrected [95 %]: bootstrap over the points, each with its own random views (so the views' randomness is in it). {}\nTop/bottom halves: ranked on half of the view pairs, reported on the other half.",
            crate::metrics::significance::star_note(layers.len())
        );
    }
    out
}

/// One line per layer: LayerMem and dLayerMem with their intervals, and with a control its
/// LayerMem, the corrected LayerMem and its dLayerMem with their intervals (empty cells where
/// there is none).
pub fn layer_mem_csv(layers: &[LayerMemLayer]) -> String {
    let mut s = String::from("layer,layer_mem,layer_mem_lo,layer_mem_hi,dlayer_mem,dlayer_mem_lo,dlayer_mem_hi,control_layer_mem,corrected,corrected_lo,corrected_hi,dcorrected,dcorrected_lo,dcorrected_hi,top_half,bottom_half\n");
    let o = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    let lo = |i: Option<crate::metrics::bootstrap::Interval>| o(i.map(|i| i.lo));
    let hi = |i: Option<crate::metrics::bootstrap::Interval>| o(i.map(|i| i.hi));
    for l in layers {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            l.name,
            l.layer_mem,
            l.layer_mem_ci.lo,
            l.layer_mem_ci.hi,
            o(l.dlayer_mem),
            lo(l.dlayer_mem_ci),
            hi(l.dlayer_mem_ci),
            o(l.control_layer_mem),
            o(l.corrected),
            lo(l.corrected_ci),
            hi(l.corrected_ci),
            o(l.dcorrected),
            lo(l.dcorrected_ci),
            hi(l.dcorrected_ci),
            l.layer_mem_top_half,
            l.layer_mem_bottom_half
        );
    }
    s
}

/// One line per point: point, its set (`candidate` or `control`), its name (file), then
/// SSLMem' per layer.
pub fn per_point_sets_csv(
    names: &[String],
    points: &[PointScores],
    control: Option<&[PointScores]>,
    point_names: &point_names::Namer,
) -> String {
    let mut s = format!("point,set,name,{}\n", names.join(","));
    let rows = points
        .iter()
        .map(|p| (p, "candidate", point_names.point(p.point)))
        .chain(
            control
                .unwrap_or(&[])
                .iter()
                .map(|p| (p, "control", point_names.control(p.point))),
        );
    for (p, set, name) in rows {
        let vals: Vec<String> = p.sslmem.iter().map(|v| v.to_string()).collect();
        let name = point_names::csv_field(&name);
        let _ = writeln!(s, "{},{set},{name},{}", p.point, vals.join(","));
    }
    s
}

/// One line per point: point, its name (file), then SSLMem' per layer.
pub fn per_point_csv(
    names: &[String],
    points: &[PointScores],
    point_names: &point_names::Namer,
) -> String {
    let mut s = format!("point,name,{}\n", names.join(","));
    for p in points {
        let vals: Vec<String> = p.sslmem.iter().map(|v| v.to_string()).collect();
        let name = point_names::csv_field(&point_names.point(p.point));
        let _ = writeln!(s, "{},{name},{}", p.point, vals.join(","));
    }
    s
}

/// Architecture, layers with units, parameters and MACs at `size`, or by default at the
/// size the checkpoint implies ([`crate::model::Net::native_size`]), said.
pub fn inspect(encoder: &Encoder, size: Option<usize>) -> String {
    let (size, from) = match size {
        Some(s) => (s, "--size".to_string()),
        None => encoder.arch.native_size(),
    };
    let mut s = String::new();
    let _ = writeln!(s, "checkpoint  {}", encoder.checkpoint.path.display());
    for note in &encoder.checkpoint.notes {
        let _ = writeln!(s, "read as     {note}");
    }
    let _ = writeln!(
        s,
        "encoder     {} ({} input channel(s))",
        encoder.describe(),
        encoder.in_channels()
    );
    let _ = writeln!(s, "parameters  {} (encoder)", encoder.params());
    let _ = writeln!(
        s,
        "MACs        {:.1} M per image at {size}x{size} ({from})",
        encoder.macs(size) as f64 / 1e6
    );
    let rows: Vec<Vec<String>> = encoder
        .layers
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                serde_json::to_value(l.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                l.units.to_string(),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&table(&["layer", "kind", "units"], &rows));
    let groups: Vec<String> = encoder
        .trainable_groups()
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(g, _)| g)
        .collect();
    let _ = writeln!(
        s,
        "\ntrainable groups (train --trainable): {}",
        groups.join(", ")
    );
    if !encoder.unused.is_empty() {
        let _ = writeln!(
            s,
            "\nnot part of the encoder (left alone): {}",
            encoder.unused.join(", ")
        );
    }
    if !encoder.checkpoint.metadata.is_empty() {
        s.push_str("\nmetadata\n");
        for (k, v) in &encoder.checkpoint.metadata {
            let v = v.replace('\n', " / ");
            let v = if v.len() > 100 {
                format!(
                    "{}...",
                    &v[..v.char_indices().nth(100).map(|c| c.0).unwrap_or(v.len())]
                )
            } else {
                v.clone()
            };
            let _ = writeln!(s, "  {k}: {v}");
        }
    }
    s
}

/// The rows of [`plan_table`]: group, units, pruned, kept, share.
pub fn plan_rows(plan: &crate::plan::Plan) -> Vec<Vec<String>> {
    plan.groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.channels.to_string(),
                g.pruned.len().to_string(),
                (g.channels - g.pruned.len()).to_string(),
                format!(
                    "{:.1}%",
                    100.0 * g.pruned.len() as f64 / g.channels.max(1) as f64
                ),
            ]
        })
        .collect()
}

/// What a plan's units undergo: `removed`, `masked`, or `pruned` when it prunes nothing.
pub fn plan_verb(plan: &crate::plan::Plan) -> &'static str {
    match plan.mode {
        Some(crate::rewrite::PruneMode::Remove) => "removed",
        Some(crate::rewrite::PruneMode::Mask) => "masked",
        None => "pruned",
    }
}

/// What a plan does, per coupling group.
pub fn plan_table(plan: &crate::plan::Plan) -> String {
    let mut s = table(
        &[
            "layer (coupling group)",
            "units",
            plan_verb(plan),
            "kept",
            "share",
        ],
        &plan_rows(plan),
    );
    if let Some(t) = &plan.trainable {
        let _ = writeln!(
            s,
            "\ntrainable layers: {}",
            if t.is_empty() {
                "none".to_string()
            } else {
                t.join(", ")
            }
        );
    }
    for n in &plan.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// The rows of [`before_after_table`]: what, before, after, after/before.
pub fn before_after_rows(
    r: &crate::eval::policy_report::PolicyReport,
    probe: Option<(f64, f64)>,
) -> Vec<Vec<String>> {
    let (b, a) = (&r.before.cost, &r.after.cost);
    let ratio = |x: f64, y: f64| {
        if x > 0.0 {
            format!("{:.2}x", y / x)
        } else {
            "-".into()
        }
    };
    let mut rows = Vec::new();
    if let Some((pb, pa)) = probe {
        rows.push(vec![
            "linear-probe top-1".into(),
            format!("{:.2}%", 100.0 * pb),
            format!("{:.2}%", 100.0 * pa),
            format!("{:+.2} pts", 100.0 * (pa - pb)),
        ]);
    }
    if let (Some(kb), Some(ka)) = (&r.before.knn, &r.after.knn) {
        for (name, x, y) in [
            ("kNN top-1", kb.top1, ka.top1),
            ("kNN top-5", kb.top5, ka.top5),
        ] {
            rows.push(vec![
                name.into(),
                format!("{:.2}%", 100.0 * x),
                format!("{:.2}%", 100.0 * y),
                format!("{:+.2} pts", 100.0 * (y - x)),
            ]);
        }
    }
    rows.push(vec![
        "parameters".into(),
        b.params.to_string(),
        a.params.to_string(),
        ratio(b.params as f64, a.params as f64),
    ]);
    rows.push(vec![
        format!("MACs / image at {0}x{0}", b.image_size),
        format!("{:.2} M", b.macs as f64 / 1e6),
        format!("{:.2} M", a.macs as f64 / 1e6),
        ratio(b.macs as f64, a.macs as f64),
    ]);
    rows.push(vec![
        "file size".into(),
        format!("{:.2} MB", b.file_bytes as f64 / 1e6),
        format!("{:.2} MB", a.file_bytes as f64 / 1e6),
        ratio(b.file_bytes as f64, a.file_bytes as f64),
    ]);
    if let Some(s) = &r.speed {
        rows.push(vec![
            "forward images/s".into(),
            format!("{:.0}", s.before_images_per_s),
            format!("{:.0}", s.after_images_per_s),
            format!(
                "{:.2}x [{:.2}, {:.2}]",
                s.ratio_median, s.ratio_min, s.ratio_max
            ),
        ]);
    } else if let (Some(x), Some(y)) = (b.images_per_s, a.images_per_s) {
        rows.push(vec![
            "forward images/s".into(),
            format!("{x:.0}"),
            format!("{y:.0}"),
            ratio(x, y),
        ]);
    }
    rows
}

/// Before/after figures of a policy run; `probe` holds the accuracies when measured.
pub fn before_after_table(
    r: &crate::eval::policy_report::PolicyReport,
    probe: Option<(f64, f64)>,
) -> String {
    let mut out = table(
        &["", "before", "after", "after/before"],
        &before_after_rows(r, probe),
    );
    if let Some(s) = &r.speed {
        let _ = writeln!(
            out,
            "\nforward images/s: medians of {} rounds of {} images at {}x{}, before and after timed alternately; after/before: the median of the rounds' ratios [least, greatest]",
            s.rounds, s.batch, s.image_size, s.image_size
        );
    }
    if let Some(c) = &r.inexact_change {
        let _ = writeln!(
            out,
            "\nnot exact: removing units of {} changed the representation by {:.2e} (relative L2 against masking them, {} images)",
            c.groups.join(", "),
            c.relative_l2,
            c.images
        );
    }
    if let Some(rec) = &r.recovery {
        out.push_str(&recovery_lines(
            rec,
            probe.map(|p| p.0),
            r.before.knn.as_ref(),
        ));
    }
    out
}

/// The steps of a schedule and the recovery: units per step, each distillation's loss, the
/// probe before pruning, after pruning and after recovery.
pub fn recovery_lines(
    rec: &crate::eval::policy_report::Recovery,
    before: Option<f64>,
    before_knn: Option<&crate::eval::knn::KnnResult>,
) -> String {
    let mut out = String::new();
    let distilled = |d: &crate::train::distill::DistillReport| {
        format!(
            "distilled toward the unpruned encoder ({} on {}, {} epochs, {} steps, {} images, views with {}): loss {:.4} -> {:.4}",
            format!("{:?}", d.loss).to_lowercase(),
            d.taps.join(", "),
            d.epochs,
            d.steps,
            d.images,
            d.augment,
            d.loss_before,
            d.loss_after
        )
    };
    if rec.steps.len() > 1 {
        let _ = writeln!(out);
        for st in &rec.steps {
            let _ = writeln!(
                out,
                "step {}: {} units pruned, {} left{}",
                st.step,
                st.units_pruned,
                st.units_left,
                st.recover
                    .as_ref()
                    .map(|d| format!("; {}", distilled(d)))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(d) = &rec.recover {
        let _ = writeln!(
            out,
            "
recover: {}",
            distilled(d)
        );
        let pct = |x: Option<f64>| {
            x.map(|v| format!("{:.2}%", 100.0 * v))
                .unwrap_or_else(|| "-".into())
        };
        if let Some(p) = rec.pruned_probe_accuracy {
            let _ = writeln!(
                out,
                "linear-probe top-1: {} before pruning, {} after pruning (before recovery)",
                pct(before),
                pct(Some(p))
            );
        }
        if let (Some(b), Some(k)) = (before_knn, &rec.pruned_knn) {
            let _ = writeln!(
                out,
                "kNN top-1: {} before pruning, {} after pruning (before recovery)",
                pct(Some(b.top1)),
                pct(Some(k.top1))
            );
        }
    }
    out
}

/// The paper's Table 6, CIFAR10 column (mean, std for random), in the order of
/// [`crate::eval::experiment::SETTINGS`] x (top, random, low).
const PAPER_TABLE6: [(f64, f64); 9] = [
    (53.04, 0.0),
    (58.09, 1.76),
    (62.58, 0.0),
    (48.30, 0.0),
    (51.34, 1.21),
    (54.84, 0.0),
    (49.16, 0.0),
    (56.77, 2.09),
    (62.62, 0.0),
];

/// Table 6 beside the paper's CIFAR10 numbers.
pub fn table6(t: &crate::eval::experiment::Table6) -> String {
    use crate::eval::experiment::{Strategy, SETTINGS};
    use crate::plan::policy::Scope;
    let modes: Vec<crate::rewrite::PruneMode> = {
        let mut m: Vec<_> = t.rows.iter().map(|r| r.mode).collect();
        m.dedup();
        m.sort_by_key(|m| format!("{m:?}"));
        m.dedup();
        m
    };
    let mut header = vec!["strategy".to_string(), "units".to_string()];
    header.extend(modes.iter().map(|m| {
        format!(
            "memprune ({})",
            serde_json::to_value(m)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        )
    }));
    header.push("paper (CIFAR10)".into());
    let mut rows = vec![{
        let mut r = vec!["none".to_string(), "-".to_string()];
        r.extend(modes.iter().map(|_| format!("{:.2}", 100.0 * t.baseline)));
        r.push("70.44".into());
        r
    }];
    for (si, s) in SETTINGS.iter().enumerate() {
        for (k, strategy) in [
            Strategy::Top,
            Strategy::Random,
            Strategy::Low,
            Strategy::TopExcess,
            Strategy::LowExcess,
        ]
        .iter()
        .enumerate()
        {
            if !t.rows.iter().any(|x| x.strategy == *strategy) {
                continue;
            }
            let scope = if s.scope == Scope::PerLayer {
                "per layer"
            } else {
                "whole net"
            };
            let name = format!(
                "{} {scope}",
                serde_json::to_value(strategy)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            );
            let mut r = vec![name, format!("{} %", s.fraction_pct)];
            for m in &modes {
                let cell = t
                    .rows
                    .iter()
                    .find(|x| x.setting == *s && x.strategy == *strategy && x.mode == *m)
                    .map(|x| {
                        if x.accuracies.len() > 1 {
                            format!("{:.2} ± {:.2}", 100.0 * x.mean(), 100.0 * x.std())
                        } else {
                            format!("{:.2}", 100.0 * x.mean())
                        }
                    })
                    .unwrap_or_else(|| "-".into());
                r.push(cell);
            }
            r.push(match (k < 3).then(|| PAPER_TABLE6[si * 3 + k]) {
                Some((pm, ps)) if ps > 0.0 => format!("{pm:.2} ± {ps:.2}"),
                Some((pm, _)) => format!("{pm:.2}"),
                None => "-".into(),
            });
            rows.push(r);
        }
    }
    let h: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    table(&h, &rows)
}

/// Accuracy against the share of units pruned per layer (0, 10, 20 %), one line per strategy.
pub fn table6_chart(t: &crate::eval::experiment::Table6) -> anyhow::Result<String> {
    use crate::eval::experiment::Strategy;
    use crate::plan::policy::Scope;
    let mode = t.rows.first().map(|r| r.mode);
    let series: Vec<chart::Series> = [Strategy::Top, Strategy::Random, Strategy::Low]
        .iter()
        .map(|s| {
            let mut points = vec![(0.0, 100.0 * t.baseline)];
            points.extend(
                t.rows
                    .iter()
                    .filter(|r| {
                        r.strategy == *s
                            && r.setting.scope == Scope::PerLayer
                            && Some(r.mode) == mode
                    })
                    .map(|r| (r.setting.fraction_pct as f64, 100.0 * r.mean())),
            );
            let name = match s {
                Strategy::Top => "highest-UnitMem units pruned",
                Strategy::Random => "random units pruned",
                Strategy::Low => "lowest-UnitMem units pruned",
                Strategy::TopExcess => "highest-UnitMem-excess units pruned",
                Strategy::LowExcess => "lowest-UnitMem-excess units pruned",
            };
            chart::Series {
                name: name.into(),
                points,
            }
        })
        .collect();
    chart::line_chart_svg(
        "Linear-probe accuracy after pruning units per layer",
        "units pruned per layer (%)",
        "top-1 accuracy (%)",
        &series,
    )
}

/// Mean UnitMem per layer (and share of units above 0.5), for the policy report's chart.
pub fn unit_mem_chart(layers: &[UnitMemLayer]) -> anyhow::Result<String> {
    let mean = chart::Series {
        name: "mean UnitMem".into(),
        points: layers
            .iter()
            .enumerate()
            .map(|(i, l)| ((i + 1) as f64, l.summary.mean))
            .collect(),
    };
    let share = chart::Series {
        name: "share of units > 0.5".into(),
        points: layers
            .iter()
            .enumerate()
            .map(|(i, l)| ((i + 1) as f64, l.summary.share_above_half))
            .collect(),
    };
    let first_last = format!(
        "{} .. {}",
        layers.first().map(|l| l.name.as_str()).unwrap_or(""),
        layers.last().map(|l| l.name.as_str()).unwrap_or("")
    );
    chart::line_chart_svg(
        "UnitMem per layer",
        &format!("layer in forward order ({first_last})"),
        "UnitMem",
        &[mean, share],
    )
}
