//! Reports: readable tables for the terminal, CSV per unit, and JSON with everything.

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

/// Per-layer summary of UnitMem (or ClassMem) scores.
pub fn unit_mem_table(layers: &[UnitMemLayer], metric: &str) -> String {
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            vec![
                format!("{}{}", l.name, if l.signed { " (signed)" } else { "" }),
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
    table(
        &["layer", "units", &mean, "median", "max", "> 0.5", "dead"],
        &rows,
    )
}

/// One line per unit: layer, unit, score, argmax, mu_max, mu_rest, dead.
pub fn unit_mem_csv(layers: &[UnitMemLayer], argmax_name: &str) -> String {
    let mut s = format!("layer,unit,score,{argmax_name},mu_max,mu_rest,dead\n");
    for l in layers {
        for (u, x) in l.units.iter().enumerate() {
            let _ = writeln!(
                s,
                "{},{u},{},{},{},{},{}",
                l.name, x.score, x.argmax, x.mu_max, x.mu_rest, x.dead
            );
        }
    }
    s
}

/// LayerMem and dLayerMem per layer.
pub fn layer_mem_table(layers: &[LayerMemLayer]) -> String {
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                format!("{:.4}", l.layer_mem),
                l.dlayer_mem
                    .map(|d| format!("{d:+.4}"))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.4}", l.layer_mem_top_half),
                format!("{:.4}", l.layer_mem_bottom_half),
            ]
        })
        .collect();
    table(
        &[
            "layer",
            "LayerMem",
            "dLayerMem",
            "LM top half",
            "LM bottom half",
        ],
        &rows,
    )
}

/// One line per point: point, then SSLMem' per layer.
pub fn per_point_csv(names: &[String], points: &[PointScores]) -> String {
    let mut s = format!("point,{}\n", names.join(","));
    for p in points {
        let vals: Vec<String> = p.sslmem.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(s, "{},{}", p.point, vals.join(","));
    }
    s
}

/// Architecture, layers with units, parameters and MACs.
pub fn inspect(encoder: &Encoder, size: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "checkpoint  {}", encoder.checkpoint.path.display());
    let _ = writeln!(
        s,
        "encoder     {} ({} input channel(s))",
        encoder.describe(),
        encoder.in_channels()
    );
    let _ = writeln!(s, "parameters  {} (encoder)", encoder.params());
    let _ = writeln!(
        s,
        "MACs        {:.1} M per image at {size}x{size}",
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
