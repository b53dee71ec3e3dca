//! LayerMem: how much more a layer of `f` aligns the views of its own training points than
//! the same layer of a reference `g` that never saw them.
//!
//! ```text
//! SSL_f(x)     = mean over view pairs (x', x'') of d(rep_f(x'), rep_f(x''))   (Eq. 1)
//! SSLMem'(x)   = (SSL_g(x) - SSL_f(x)) / (SSL_f(x) + SSL_g(x))                (Eq. 2)
//! LayerMem(l)  = mean over x in D' of SSLMem'(x) on f^l and g^l               (Eq. 3)
//! dLayerMem(l) = LayerMem(l) - LayerMem(l - 1)                                (Eq. 4)
//! ```
//!
//! `d` is the Euclidean distance between layer outputs flattened and scaled to unit L2 norm
//! (so that layers of different sizes compare). A zero output has no direction: its rep is
//! the zero vector, and a point whose SSL_f and SSL_g are both 0 scores 0.

use serde::{Deserialize, Serialize};

/// Which views are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    /// The paper: K pairs of two augmented views (views 2j and 2j+1).
    Views,
    /// The authors' script: the clean image against each of K augmented views.
    Clean,
}

/// Euclidean distance between `a` and `b` after scaling each to unit L2 norm, in f64.
pub fn normalized_distance(a: &[f32], b: &[f32]) -> f64 {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    };
    let (na, nb) = (norm(a), norm(b));
    let inv = |n: f64| if n > 0.0 { 1.0 / n } else { 0.0 };
    let (ia, ib) = (inv(na), inv(nb));
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 * ia - y as f64 * ib).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Eq. 2 for one point and layer.
pub fn ssl_mem(ssl_f: f64, ssl_g: f64) -> f64 {
    let denom = ssl_f + ssl_g;
    if denom > 0.0 {
        (ssl_g - ssl_f) / denom
    } else {
        0.0
    }
}

/// One point's scores, per layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointScores {
    pub point: usize,
    pub ssl_f: Vec<f64>,
    pub ssl_g: Vec<f64>,
    pub sslmem: Vec<f64>,
}

/// LayerMem and dLayerMem of one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerMemLayer {
    pub name: String,
    pub layer_mem: f64,
    /// `None` for the first layer.
    pub dlayer_mem: Option<f64>,
    /// LayerMem over the most memorized half of the points, and over the least memorized
    /// half: the paper's Top50/Least50 columns. Points are ranked once, by SSLMem' of the
    /// last layer (the encoder's representation), so every layer sees the same two sets.
    pub layer_mem_top_half: f64,
    pub layer_mem_bottom_half: f64,
}

/// Eq. 3 and 4 from every point's scores.
pub fn layer_mem(names: &[String], points: &[PointScores]) -> Vec<LayerMemLayer> {
    let last = names.len().saturating_sub(1);
    let mut order: Vec<&PointScores> = points.iter().collect();
    // Most memorized first; ties by point index so the halves are reproducible.
    order.sort_by(|a, b| {
        b.sslmem[last]
            .total_cmp(&a.sslmem[last])
            .then(a.point.cmp(&b.point))
    });
    let half = (order.len() / 2).max(1).min(order.len());
    let (top, bottom) = (&order[..half], &order[order.len() - half..]);
    let mean = |s: &[&PointScores], l: usize| {
        if s.is_empty() {
            0.0
        } else {
            s.iter().map(|p| p.sslmem[l]).sum::<f64>() / s.len() as f64
        }
    };
    let mut out: Vec<LayerMemLayer> = Vec::new();
    for (l, name) in names.iter().enumerate() {
        let lm = mean(&order, l);
        let d = out.last().map(|p: &LayerMemLayer| lm - p.layer_mem);
        out.push(LayerMemLayer {
            name: name.clone(),
            layer_mem: lm,
            dlayer_mem: d,
            layer_mem_top_half: mean(top, l),
            layer_mem_bottom_half: mean(bottom, l),
        });
    }
    out
}
