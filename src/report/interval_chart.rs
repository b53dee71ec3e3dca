//! A chart of per-layer values with their 95 % intervals as error bars (plotters' SVG
//! backend): layers on the x axis by name, one coloured series per estimate, a line at 0.

use crate::metrics::bootstrap::Interval;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontTransform;

/// A value with its interval (when it has one), or `None` where the estimate does not
/// exist (dLayerMem of the first layer).
pub type Value = Option<(f64, Option<Interval>)>;

/// One estimate per layer: `values[l]` is its [`Value`] at layer `l`.
pub struct IntervalSeries {
    pub name: String,
    pub values: Vec<Value>,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

/// The chart as SVG text (a `<svg>` element, for inlining in HTML).
pub fn interval_chart_svg(
    title: &str,
    y_label: &str,
    layers: &[String],
    series: &[IntervalSeries],
) -> Result<String> {
    let n = layers.len();
    let (mut y0, mut y1) = (0f64, 0f64);
    for s in series {
        for (v, ci) in s.values.iter().flatten() {
            y0 = y0.min(*v);
            y1 = y1.max(*v);
            if let Some(ci) = ci {
                y0 = y0.min(ci.lo);
                y1 = y1.max(ci.hi);
            }
        }
    }
    if n == 0 || series.is_empty() || !(y0.is_finite() && y1.is_finite()) {
        return Err(anyhow!("{title}: nothing to plot"));
    }
    let pad = if y1 - y0 < 1e-12 {
        1e-3
    } else {
        0.08 * (y1 - y0)
    };
    let longest = layers.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    let width = (120 + 46 * n as u32).clamp(660, 1360);
    let label_area = 24 + 7 * longest as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 380 + label_area)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(label_area)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (y0 - pad)..(y1 + pad))
            .map_err(|e| anyhow!("{e}"))?;
        let names = layers.to_vec();
        let x_fmt = move |x: &f64| -> String {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&x_fmt)
            .x_label_style(
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .disable_x_mesh()
            .max_light_lines(0)
            .y_desc(y_label)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(
                [(-0.5, 0.0), (n as f64 - 0.5, 0.0)],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?;
        let m = series.len() as f64;
        for (k, s) in series.iter().enumerate() {
            let c = COLOURS[k % COLOURS.len()];
            // Side by side within a layer, so that the bars do not hide each other.
            let dx = (k as f64 - (m - 1.0) / 2.0) * (0.6 / m.max(1.0));
            let pts: Vec<(f64, f64, Option<Interval>)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(l, v)| v.map(|(y, ci)| (l as f64 + dx, y, ci)))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(x, y, _)| (x, y)),
                    c.stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e}"))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().filter_map(|&(x, _, ci)| {
                    ci.map(|ci| PathElement::new(vec![(x, ci.lo), (x, ci.hi)], c.stroke_width(2)))
                }))
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(x, y, _)| Circle::new((x, y), 3, c.filled())),
                )
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(svg)
}
