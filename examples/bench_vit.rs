//! Speed of memprune's ViT forward, as figures to put beside timm's
//! (`examples/bench_vit_torch.py` runs the same networks, batches and threads).
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_vit [RUNS]
//!
//! Prints the median images/s of: ViT-Tiny/16 (timm's `vit_tiny_patch16_224`: width 192,
//! depth 12, 3 heads) forward at 224x224, batch 64, the representation only (all taps are
//! computed on the way; the forward is the same); and the same network's UnitMem activations
//! (every tap reduced to act_u), batch 64. Random weights.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::time::Instant;

fn vit_tiny() -> Encoder {
    let (d, h, depth, p, g) = (192usize, 768usize, 12usize, 16usize, 14usize);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("patch_embed.proj.weight".into(), vec![d, 3, p, p]),
        ("patch_embed.proj.bias".into(), vec![d]),
        ("cls_token".into(), vec![1, 1, d]),
        ("pos_embed".into(), vec![1, g * g + 1, d]),
        ("norm.weight".into(), vec![d]),
        ("norm.bias".into(), vec![d]),
    ];
    for i in 0..depth {
        let b = format!("blocks.{i}");
        for (n, s) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.qkv.bias", vec![3 * d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![h, d]),
            ("mlp.fc1.bias", vec![h]),
            ("mlp.fc2.weight", vec![d, h]),
            ("mlp.fc2.bias", vec![d]),
        ] {
            shapes.push((format!("{b}.{n}"), s));
        }
    }
    let mut t = BTreeMap::new();
    for (name, shape) in shapes {
        let scale = if shape.len() >= 2 {
            (1.0 / shape[1..].iter().product::<usize>() as f64).sqrt() as f32
        } else {
            0.1
        };
        let v = if name.contains("norm") && name.ends_with("weight") {
            Tensor::rand(0.5f32, 1.5, shape.as_slice(), &Device::Cpu)
        } else {
            Tensor::randn(0f32, scale, shape.as_slice(), &Device::Cpu)
        };
        t.insert(name, v.unwrap());
    }
    let ckpt = Checkpoint::from_tensors(std::path::Path::new("random"), t, Default::default());
    Encoder::from_checkpoint(ckpt, &LoadOptions::default()).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(runs: usize, images: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                images as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let enc = vit_tiny();
    let x = Tensor::randn(0f32, 1.0, (64, 3, 224, 224), &Device::Cpu).unwrap();
    let fwd = time(runs, 64, || {
        enc.features(&x).unwrap();
    });
    println!("vit_tiny forward, 224x224, batch 64: {fwd:.1} img/s");
    let acts = time(runs, 64, || {
        enc.forward_unit_acts(&x).unwrap();
    });
    println!("vit_tiny forward, every tap reduced to act_u, 224x224, batch 64: {acts:.1} img/s");
}
