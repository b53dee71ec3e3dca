//! The HTML report: one self-contained file (charts as inline SVG, images as PNG data URIs,
//! no script, nothing fetched) showing per layer LayerMem and UnitMem with their intervals
//! and controls, the images each layer memorizes most and least, the images that excite the
//! most memorizing units, a policy's plan and before/after figures, and the settings that
//! reproduce it.

use crate::eval::policy_report::PolicyReport;
use crate::metrics::bootstrap::Interval;
use crate::metrics::layer_mem::LayerMemLayer;
use crate::report::gather::Gathered;
use crate::report::interval_chart::{interval_chart_svg, IntervalSeries, Value};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Images per grid row: the highest and the lowest SSLMem' points of a layer, the most
/// memorizing units of a layer.
pub const GRID: usize = 8;

/// A policy run, for its section of the report.
pub struct PolicyPart<'a> {
    pub report: &'a PolicyReport,
    pub probe: Option<(f64, f64)>,
    /// The policy file's text.
    pub text: &'a str,
}

/// Text made safe for HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1400px;color:#222;padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts>.chart{flex:1 1 560px;min-width:0}.chart svg{max-width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;padding:4px;border:1px solid #ddd;text-align:center;font-size:11px;width:96px}
figure img{image-rendering:pixelated;display:block;margin:0 auto 3px auto}
figure.planted{border:2px solid #d62728}.row{display:flex;gap:16px;align-items:baseline}
.row>b{min-width:70px}.note{color:#555;font-size:13px}.excl{font-weight:bold}
nav a{margin-right:14px}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
details{margin:6px 0}code{font-size:12px}";

fn ci(i: &Interval) -> String {
    format!("[{:+.4}, {:+.4}]", i.lo, i.hi)
}

fn with_ci(v: f64, i: Option<&Interval>) -> String {
    match i {
        Some(i) => format!("{v:+.4} {}", ci(i)),
        None => format!("{v:+.4}"),
    }
}

/// A table with a header row; cells are escaped.
fn html_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut o = String::from("<table><tr>");
    for h in header {
        let _ = write!(o, "<th>{}</th>", escape(h));
    }
    o.push_str("</tr>");
    for r in rows {
        o.push_str("<tr>");
        for c in r {
            let _ = write!(o, "<td>{}</td>", escape(c));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>\n");
    o
}

/// PNG data URIs of the points shown, each encoded once.
struct Thumbs<'a> {
    g: &'a Gathered,
    done: BTreeMap<usize, String>,
}

impl Thumbs<'_> {
    fn uri(&mut self, point: usize) -> Result<String> {
        if let Some(u) = self.done.get(&point) {
            return Ok(u.clone());
        }
        let u = crate::report::png::data_uri(&crate::report::png::png(&self.g.train, point)?);
        self.done.insert(point, u.clone());
        Ok(u)
    }

    /// One image with its index and caption lines.
    fn figure(&mut self, point: usize, kind: &str, data: &str, lines: &[String]) -> Result<String> {
        let planted = self.g.planted.as_ref().is_some_and(|p| p.contains(&point));
        // The file (image folders) or file#record (IDX, CIFAR) beside the index.
        let name = escape(&self.g.train.names.get(point).unwrap_or_default());
        let mut o = format!(
            "<figure class=\"{}\"><img class=\"{kind}\" src=\"{}\" data-point=\"{point}\" data-name=\"{name}\" {data} alt=\"training point {point} {name}\" title=\"training point {point} {name}\"><b>#{point}</b>",
            if planted { "planted" } else { "" },
            self.uri(point)?
        );
        if !name.is_empty() {
            let _ = write!(o, "<br><code>{name}</code>");
        }
        if planted {
            o.push_str(" planted");
        }
        for l in lines {
            let _ = write!(o, "<br>{}", escape(l));
        }
        o.push_str("</figure>");
        Ok(o)
    }
}

/// The whole report as HTML text. `command` is the command line that made it.
pub fn render(g: &Gathered, command: &str, policy: Option<&PolicyPart>) -> Result<String> {
    let mut thumbs = Thumbs {
        g,
        done: BTreeMap::new(),
    };
    let mut o = String::new();
    let title = format!("memprune report: {}", g.model.path.display());
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(&title)
    );
    let _ = write!(
        o,
        "<h1>{}</h1>\n<p>{} on {}: UnitMem on {} training points and LayerMem on {} candidates, {} views each (seed {}); every score with its 95 % interval and its control on points the encoder never saw. Images are shown with their index in the training split of the data and their file (the path relative to the data folder for image folders, FILE#RECORD for IDX and CIFAR).{}</p>\n",
        escape(&title),
        escape(&g.arch),
        escape(&g.train.source),
        g.unit_points.len(),
        g.layer.as_ref().map(|l| l.candidates.len()).unwrap_or(0),
        g.settings.views,
        g.view.seed,
        if g.planted.is_some() {
            " Points framed in red are the planted points recorded in the checkpoint."
        } else {
            ""
        }
    );
    o.push_str("<nav><a href=\"#layermem\">LayerMem</a><a href=\"#unitmem\">UnitMem</a><a href=\"#points\">points by SSLMem'</a><a href=\"#units\">most memorizing units</a>");
    if policy.is_some() {
        o.push_str("<a href=\"#policy\">policy</a>");
    }
    o.push_str("<a href=\"#settings\">settings</a></nav>\n");
    layer_section(&mut o, g)?;
    unit_section(&mut o, g)?;
    points_section(&mut o, g, &mut thumbs)?;
    units_section(&mut o, g, &mut thumbs)?;
    if let Some(p) = policy {
        policy_section(&mut o, p);
    }
    settings_section(&mut o, g, command)?;
    o.push_str("</body></html>\n");
    Ok(o)
}

fn layer_section(o: &mut String, g: &Gathered) -> Result<()> {
    o.push_str("<section id=\"layermem\"><h2>LayerMem per layer</h2>\n");
    let Some(lp) = &g.layer else {
        let _ = writeln!(
            o,
            "<p class=\"note\">Not measured: {}.</p></section>",
            escape(g.no_layer_reason.as_deref().unwrap_or("no reference"))
        );
        return Ok(());
    };
    let _ = writeln!(
        o,
        "<p class=\"note\">f = {} against g = {} on {} candidates x {} view pairs. Control: {} test points neither encoder saw; corrected = LayerMem - control. {}</p>",
        escape(&g.model.path.display().to_string()),
        escape(&lp.reference.path.display().to_string()),
        lp.candidates.len(),
        g.settings.views,
        lp.unseen_points.len(),
        match &lp.independent_points {
            Some(v) => format!("Symmetric control: g's own {} independent points, corrected = (LayerMem - LayerMem(independent)) / 2.", v.len()),
            None => "Symmetric control: not available (the reference records no independent points).".into(),
        }
    );
    let names: Vec<String> = lp.layers.iter().map(|l| l.name.clone()).collect();
    let sym = lp.symmetric.as_deref();
    let pick = |f: &dyn Fn(&LayerMemLayer) -> Value, ls: &[LayerMemLayer]| {
        ls.iter().map(f).collect::<Vec<_>>()
    };
    let mut series = vec![
        IntervalSeries {
            name: "LayerMem".into(),
            values: pick(&|l| Some((l.layer_mem, Some(l.layer_mem_ci))), &lp.layers),
        },
        IntervalSeries {
            name: "control (unseen points)".into(),
            values: pick(
                &|l| l.control_layer_mem.map(|v| (v, l.control_ci)),
                &lp.layers,
            ),
        },
        IntervalSeries {
            name: "corrected (unseen control)".into(),
            values: pick(&|l| l.corrected.map(|v| (v, l.corrected_ci)), &lp.layers),
        },
    ];
    if let Some(s) = sym {
        series.push(IntervalSeries {
            name: "corrected (symmetric control)".into(),
            values: pick(&|l| l.corrected.map(|v| (v, l.corrected_ci)), s),
        });
    }
    let _ = writeln!(
        o,
        "<div class=\"charts\"><div class=\"chart\" id=\"chart-layermem\">{}</div>",
        interval_chart_svg(
            "LayerMem per layer (95 % intervals)",
            "LayerMem",
            &names,
            &series
        )?
    );
    let mut dseries = vec![
        IntervalSeries {
            name: "dLayerMem".into(),
            values: pick(&|l| l.dlayer_mem.map(|v| (v, l.dlayer_mem_ci)), &lp.layers),
        },
        IntervalSeries {
            name: "corrected dLayerMem (unseen control)".into(),
            values: pick(&|l| l.dcorrected.map(|v| (v, l.dcorrected_ci)), &lp.layers),
        },
    ];
    if let Some(s) = sym {
        dseries.push(IntervalSeries {
            name: "corrected dLayerMem (symmetric control)".into(),
            values: pick(&|l| l.dcorrected.map(|v| (v, l.dcorrected_ci)), s),
        });
    }
    let _ = writeln!(
        o,
        "<div class=\"chart\" id=\"chart-dlayermem\">{}</div></div>",
        interval_chart_svg(
            "dLayerMem per layer (95 % intervals)",
            "dLayerMem",
            &names,
            &dseries
        )?
    );
    let opt = |v: Option<f64>, i: Option<Interval>| match v {
        Some(v) => with_ci(v, i.as_ref()),
        None => "-".into(),
    };
    let star = |s: Option<bool>| if s == Some(true) { " *" } else { "" };
    let rows: Vec<Vec<String>> = lp
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let s = sym.map(|s| &s[i]);
            vec![
                l.name.clone(),
                with_ci(l.layer_mem, Some(&l.layer_mem_ci)),
                opt(l.dlayer_mem, l.dlayer_mem_ci),
                opt(l.control_layer_mem, l.control_ci),
                format!("{}{}", opt(l.corrected, l.corrected_ci), star(l.star)),
                opt(l.dcorrected, l.dcorrected_ci),
                match s {
                    Some(s) => format!("{}{}", opt(s.corrected, s.corrected_ci), star(s.star)),
                    None => "-".into(),
                },
                format!("{:+.4}", l.layer_mem_top_half),
                format!("{:+.4}", l.layer_mem_bottom_half),
            ]
        })
        .collect();
    o.push_str(&html_table(
        &[
            "layer",
            "LayerMem [95 %]",
            "dLayerMem [95 %]",
            "control [95 %]",
            "corrected [95 %]",
            "dcorrected [95 %]",
            "symmetric corrected [95 %]",
            "top half",
            "bottom half",
        ],
        &rows,
    ));
    let _ = writeln!(
        o,
        "<p class=\"note\">corrected [95 %]: bootstrap over the candidates and control points, each with its own random views. {} Top/bottom halves: candidates ranked by SSLMem' of the last layer on half of the view pairs, reported on the other half.</p></section>",
        escape(&crate::metrics::significance::star_note(lp.layers.len()))
    );
    Ok(())
}

fn unit_section(o: &mut String, g: &Gathered) -> Result<()> {
    let _ = writeln!(
        o,
        "<section id=\"unitmem\"><h2>UnitMem per layer</h2>\n<p class=\"note\">UnitMem of every unit on {} training points x {} views; control: the same units on {} test points the encoder never saw. UnitMem-excess(u) = (mu_max,train - mu_max,unseen) / (mu_max,train + mu_max,unseen): about 0 for a unit that is merely selective, toward 1 for a unit whose peak is a training image no unseen image matches. Intervals are over units.</p>",
        g.unit_points.len(),
        g.settings.views,
        g.unit_unseen_points.len()
    );
    let names: Vec<String> = g.unit.iter().map(|l| l.name.clone()).collect();
    let series = vec![
        IntervalSeries {
            name: "mean UnitMem, training points".into(),
            values: g
                .unit
                .iter()
                .map(|l| Some((l.summary.mean, l.control.as_ref().map(|c| c.mean_ci))))
                .collect(),
        },
        IntervalSeries {
            name: "mean UnitMem, unseen points (control)".into(),
            values: g
                .unit
                .iter()
                .map(|l| {
                    l.control
                        .as_ref()
                        .map(|c| (c.unseen.mean, Some(c.unseen_mean_ci)))
                })
                .collect(),
        },
    ];
    let _ = writeln!(
        o,
        "<div class=\"charts\"><div class=\"chart\" id=\"chart-unitmem\">{}</div>",
        interval_chart_svg(
            "UnitMem per layer (mean over units, 95 % intervals)",
            "UnitMem",
            &names,
            &series
        )?
    );
    let excess = vec![IntervalSeries {
        name: "mean UnitMem-excess".into(),
        values: g
            .unit
            .iter()
            .map(|l| {
                l.control
                    .as_ref()
                    .and_then(|c| c.excess_mean.map(|m| (m, c.excess_mean_ci)))
            })
            .collect(),
    }];
    let _ = writeln!(
        o,
        "<div class=\"chart\" id=\"chart-excess\">{}</div></div>",
        interval_chart_svg(
            "UnitMem-excess per layer (against the unseen points, 95 % intervals)",
            "UnitMem-excess",
            &names,
            &excess
        )?
    );
    let rows: Vec<Vec<String>> = g
        .unit
        .iter()
        .map(|l| {
            let c = l.control.as_ref();
            vec![
                super::layer_label(l),
                l.units.len().to_string(),
                with_ci(l.summary.mean, c.map(|c| &c.mean_ci)),
                c.map(|c| with_ci(c.unseen.mean, Some(&c.unseen_mean_ci)))
                    .unwrap_or_else(|| "-".into()),
                c.map(|c| with_ci(c.mean_difference, Some(&c.mean_difference_ci)))
                    .unwrap_or_else(|| "-".into()),
                c.and_then(|c| {
                    c.excess_mean.map(|m| {
                        format!(
                            "{}{}",
                            with_ci(m, c.excess_mean_ci.as_ref()),
                            if c.excess_star == Some(true) {
                                " *"
                            } else {
                                ""
                            }
                        )
                    })
                })
                .unwrap_or_else(|| "-".into()),
                format!("{:.1}%", 100.0 * l.summary.share_above_half),
                l.summary.dead.to_string(),
            ]
        })
        .collect();
    o.push_str(&html_table(
        &[
            "layer",
            "units",
            "UnitMem, training [95 %]",
            "UnitMem, unseen [95 %]",
            "difference [95 %]",
            "UnitMem-excess [95 %]",
            "> 0.5",
            "dead",
        ],
        &rows,
    ));
    let _ = writeln!(
        o,
        "<p class=\"note\">UnitMem-excess [95 %]: from relabelling the training and unseen points at random; the other intervals are over units (their spread, not an uncertainty). {}</p>",
        escape(&crate::metrics::significance::star_note(g.unit.len()))
    );
    if let Some(note) = super::unscored_note(&g.unit_unscored) {
        let _ = write!(o, "<p class=\"note\">{}</p>", escape(&note));
    }
    o.push_str("</section>\n");
    Ok(())
}

fn points_section(o: &mut String, g: &Gathered, thumbs: &mut Thumbs) -> Result<()> {
    o.push_str(
        "<section id=\"points\"><h2>Which images each layer memorizes: SSLMem' per point</h2>\n",
    );
    let Some(lp) = &g.layer else {
        let _ = writeln!(
            o,
            "<p class=\"note\">Not measured: {}.</p></section>",
            escape(g.no_layer_reason.as_deref().unwrap_or("no reference"))
        );
        return Ok(());
    };
    let k = GRID.min(lp.per_point.len().div_ceil(2));
    let _ = writeln!(
        o,
        "<p class=\"note\">For each layer, the {k} candidates with the highest SSLMem' (f aligns their views better than g: memorized) and the {k} with the lowest, of {}; under each image its index in the training split and its SSLMem' at that layer.</p>",
        lp.per_point.len()
    );
    for (l, layer) in lp.layers.iter().enumerate() {
        let mut order: Vec<&crate::metrics::layer_mem::PointScores> = lp.per_point.iter().collect();
        // Highest first; ties by point index, so the grid is reproducible.
        order.sort_by(|a, b| {
            b.sslmem[l]
                .total_cmp(&a.sslmem[l])
                .then(a.point.cmp(&b.point))
        });
        let _ = writeln!(
            o,
            "<h3 id=\"points-{}\">{} <small class=\"note\">LayerMem {}, corrected {}</small></h3>",
            escape(&layer.name),
            escape(&layer.name),
            with_ci(layer.layer_mem, Some(&layer.layer_mem_ci)),
            layer
                .corrected
                .map(|c| with_ci(c, layer.corrected_ci.as_ref()))
                .unwrap_or_else(|| "-".into())
        );
        for (label, pts) in [
            ("highest", order[..k].to_vec()),
            (
                "lowest",
                order[order.len() - k..].iter().rev().copied().collect(),
            ),
        ] {
            let _ = write!(
                o,
                "<div class=\"row\"><b>{label}</b><div class=\"grid\" data-layer=\"{}\" data-kind=\"{label}\">",
                escape(&layer.name)
            );
            for p in pts {
                o.push_str(&thumbs.figure(
                    p.point,
                    "sslmem",
                    &format!(
                        "data-layer=\"{}\" data-sslmem=\"{}\"",
                        escape(&layer.name),
                        p.sslmem[l]
                    ),
                    &[format!("SSLMem' {:+.4}", p.sslmem[l])],
                )?);
            }
            o.push_str("</div></div>\n");
        }
    }
    o.push_str("</section>\n");
    Ok(())
}

fn units_section(o: &mut String, g: &Gathered, thumbs: &mut Thumbs) -> Result<()> {
    let _ = writeln!(
        o,
        "<section id=\"units\"><h2>What excites the most memorizing units</h2>\n<p class=\"note\">For each layer, its {GRID} units of highest UnitMem-excess (ties: highest UnitMem, then lowest unit index) and the training image that is their argmax (Eq. 6: the highest mean activation over {} views, of {} training points); under it the unit, the image's index in the training split, its UnitMem-excess and its UnitMem.</p>",
        g.settings.views,
        g.unit_points.len()
    );
    for layer in &g.unit {
        let excess = layer
            .control
            .as_ref()
            .map(|c| c.excess.as_slice())
            .unwrap_or(&[]);
        let ex = |u: usize| excess.get(u).copied().unwrap_or(f64::NAN);
        let mut units: Vec<usize> = (0..layer.units.len())
            .filter(|&u| !layer.units[u].dead)
            .collect();
        units.sort_by(|&a, &b| {
            ex(b)
                .total_cmp(&ex(a))
                .then(layer.units[b].score.total_cmp(&layer.units[a].score))
                .then(a.cmp(&b))
        });
        units.truncate(GRID);
        let _ = write!(
            o,
            "<h3 id=\"units-{}\">{} <small class=\"note\">{} units, mean UnitMem {:.3}</small></h3><div class=\"grid\" data-layer=\"{}\" data-kind=\"units\">",
            escape(&layer.name),
            escape(&super::layer_label(layer)),
            layer.units.len(),
            layer.summary.mean,
            escape(&layer.name)
        );
        if units.is_empty() {
            o.push_str("<p class=\"note\">every unit is dead on these points</p>");
        }
        for u in units {
            let s = &layer.units[u];
            o.push_str(&thumbs.figure(
                s.argmax,
                "unit",
                &format!(
                    "data-layer=\"{}\" data-unit=\"{u}\" data-excess=\"{}\" data-unitmem=\"{}\"",
                    escape(&layer.name),
                    ex(u),
                    s.score
                ),
                &[
                    format!("unit {u}"),
                    format!("excess {:+.3}", ex(u)),
                    format!("UnitMem {:.3}", s.score),
                ],
            )?);
        }
        o.push_str("</div>\n");
    }
    o.push_str("</section>\n");
    Ok(())
}

fn policy_section(o: &mut String, p: &PolicyPart) {
    let r = p.report;
    let plan = &r.plan;
    let _ = writeln!(
        o,
        "<section id=\"policy\"><h2>Policy {}</h2>\n<p class=\"note\">{} units of {} {}; the rewritten checkpoint: {}.</p>",
        escape(&r.policy.display().to_string()),
        plan.units_pruned(),
        plan.groups.iter().map(|g| g.channels).sum::<usize>(),
        crate::report::plan_verb(plan),
        escape(&r.after.checkpoint.display().to_string())
    );
    o.push_str("<h3>Units per layer</h3>");
    o.push_str(&html_table(
        &[
            "layer (coupling group)",
            "units",
            crate::report::plan_verb(plan),
            "kept",
            "share",
        ],
        &crate::report::plan_rows(plan),
    ));
    if let Some(t) = &plan.trainable {
        let _ = writeln!(
            o,
            "<p>Trainable layers: {}</p>",
            escape(&if t.is_empty() {
                "none".into()
            } else {
                t.join(", ")
            })
        );
    }
    for n in &plan.notes {
        let _ = writeln!(o, "<p class=\"note\">note: {}</p>", escape(n));
    }
    o.push_str("<h3>Before and after</h3>");
    o.push_str(&html_table(
        &["", "before", "after", "after/before"],
        &crate::report::before_after_rows(r, p.probe),
    ));
    if let Some(c) = &r.inexact_change {
        let _ = writeln!(
            o,
            "<p class=\"note\">Not exact: removing units of {} changed the representation by {:.2e} (relative L2 against masking them, {} images).</p>",
            escape(&c.groups.join(", ")),
            c.relative_l2,
            c.images
        );
    }
    let _ = writeln!(
        o,
        "<details><summary>the policy file</summary><pre>{}</pre></details></section>",
        escape(p.text)
    );
}

fn settings_section(o: &mut String, g: &Gathered, command: &str) -> Result<()> {
    let s = &g.settings;
    let list = |v: &[usize]| {
        v.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows: Vec<Vec<String>> = vec![
        vec!["memprune".into(), env!("CARGO_PKG_VERSION").into()],
        vec!["command".into(), command.into()],
        vec!["model (f)".into(), g.model.path.display().to_string()],
        vec!["model SHA-256".into(), g.model.sha256.clone()],
        vec!["architecture".into(), g.arch.clone()],
    ];
    if let Some(lp) = &g.layer {
        rows.push(vec![
            "reference (g)".into(),
            lp.reference.path.display().to_string(),
        ]);
        rows.push(vec![
            "reference SHA-256".into(),
            lp.reference.sha256.clone(),
        ]);
    }
    rows.extend([
        vec!["data".into(), s.data.display().to_string()],
        vec!["split".into(), "train (control points: test)".into()],
        vec!["views".into(), s.views.to_string()],
        vec!["seed".into(), g.view.seed.to_string()],
        vec!["batch".into(), g.view.batch.to_string()],
        vec![
            "UnitMem reduction".into(),
            format!("{:?}", s.reduce).to_lowercase(),
        ],
        vec![
            "LayerMem pairing".into(),
            "views (pair j = views 2j, 2j+1)".into(),
        ],
        vec![
            "bootstrap".into(),
            format!(
                "{} resamples, seed {}",
                crate::metrics::bootstrap::Bootstrap::default().resamples,
                g.view.seed
            ),
        ],
        vec![
            "augmentation".into(),
            serde_json::to_string(&g.view.augment)?,
        ],
        vec!["augmentation from".into(), g.augment.source.clone()],
        vec![
            "normalisation".into(),
            serde_json::to_string(&g.view.normalization)?,
        ],
        vec![
            "load options".into(),
            format!(
                "prefix {:?}, key {:?}, stem {:?}, heads {:?}, tokens {:?}, pool {:?}",
                s.load.prefix, s.load.key, s.load.stem, s.load.heads, s.load.tokens, s.load.pool
            ),
        ],
    ]);
    o.push_str("<section id=\"settings\"><h2>Settings</h2>\n");
    o.push_str(&html_table(&["setting", "value"], &rows));
    let _ = writeln!(
        o,
        "<details><summary>UnitMem points ({})</summary><p><code>{}</code></p></details>",
        g.unit_points.len(),
        list(&g.unit_points)
    );
    let _ = writeln!(
        o,
        "<details><summary>UnitMem control points, test split ({})</summary><p><code>{}</code></p></details>",
        g.unit_unseen_points.len(),
        list(&g.unit_unseen_points)
    );
    if let Some(lp) = &g.layer {
        let _ = writeln!(
            o,
            "<details><summary>LayerMem candidates ({})</summary><p><code>{}</code></p></details>",
            lp.candidates.len(),
            list(&lp.candidates)
        );
        let _ = writeln!(
            o,
            "<details><summary>LayerMem control points, test split ({})</summary><p><code>{}</code></p></details>",
            lp.unseen_points.len(),
            list(&lp.unseen_points)
        );
        if let Some(v) = &lp.independent_points {
            let _ = writeln!(
                o,
                "<details><summary>LayerMem symmetric control: g's independent points ({})</summary><p><code>{}</code></p></details>",
                v.len(),
                list(v)
            );
        }
    }
    o.push_str("</section>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_makes_markup_text() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
