//! Point names in outputs: a run records the names of its points and of its control's
//! points (`point_names`, `control_point_names` in its settings, parallel to the index
//! lists), so that its tables, CSV and JSON give each point's file beside its index, and a
//! merge of shards prints the same as one run.

use std::collections::HashMap;

/// Index -> name of the measured points and of the control's points (another split).
#[derive(Debug, Clone, Default)]
pub struct Namer {
    points: HashMap<usize, String>,
    control: HashMap<usize, String>,
}

fn zip(points: &[usize], names: Option<&serde_json::Value>) -> HashMap<usize, String> {
    let names: Vec<String> = names
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    points
        .iter()
        .copied()
        .zip(names)
        .filter(|(_, n)| !n.is_empty())
        .collect()
}

impl Namer {
    /// From a run's settings (`point_names`, `control_point_names`) and its index lists.
    pub fn of_settings(settings: &serde_json::Value, points: &[usize], control: &[usize]) -> Namer {
        Namer {
            points: zip(points, settings.get("point_names")),
            control: zip(control, settings.get("control_point_names")),
        }
    }

    /// The name of measured point `i` (empty when unknown).
    pub fn point(&self, i: usize) -> String {
        self.points.get(&i).cloned().unwrap_or_default()
    }

    /// The name of control point `i` (empty when unknown).
    pub fn control(&self, i: usize) -> String {
        self.control.get(&i).cloned().unwrap_or_default()
    }

    /// `i` with its name in brackets when known: `58 (train/cat/003.jpg)`.
    pub fn labelled(&self, i: usize) -> String {
        match self.points.get(&i) {
            Some(n) => format!("{i} ({n})"),
            None => i.to_string(),
        }
    }

    /// Adds `argmax_name` beside every unit's `argmax` in a JSON list of layers.
    pub fn name_argmax(&self, layers: &mut serde_json::Value) {
        for l in layers.as_array_mut().into_iter().flatten() {
            for u in l
                .get_mut("units")
                .and_then(|u| u.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(a) = u.get("argmax").and_then(|a| a.as_u64()) {
                    u["argmax_name"] = self.point(a as usize).into();
                }
            }
        }
    }
}

/// CSV-quotes `s` when it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
