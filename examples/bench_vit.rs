//! Speed of memprune's ViT forward, as figures to put beside timm's
//! (`examples/bench_vit_torch.py` runs the same networks, batches and threads).
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_vit [RUNS] [tiny|embedded]
//!
//! Prints the median images/s of: ViT-Tiny/16 (timm's `vit_tiny_patch16_224`: width 192,
//! depth 12, 3 heads) forward at 224x224, batch 64, the representation only (all taps are
//! computed on the way; the forward is the same); the same network's UnitMem activations
//! (every tap reduced to act_u), batch 64; and the embedded ViT (the default of
//! `memprune train --arch vit`: 1x28x28, patch 4, width 128, depth 6, 4 heads, MLP 512)
//! forward at batch 256 returning every tap (per block the attention residual output, the
//! heads before `proj`, fc1 after GELU, the MLP residual output; every token), and reduced
//! to act_u. Random weights. The second argument runs one section only.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::time::Instant;

/// A timm-layout ViT with random weights: width `d`, MLP `h`, `depth` blocks, `heads`,
/// patch `p`, grid `g` x `g`, `c` input channels, a class token.
fn vit(d: usize, h: usize, depth: usize, heads: usize, p: usize, g: usize, c: usize) -> Encoder {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("patch_embed.proj.weight".into(), vec![d, c, p, p]),
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
    let opts = LoadOptions {
        heads: Some(heads),
        ..Default::default()
    };
    Encoder::from_checkpoint(ckpt, &opts).unwrap()
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
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let only: Option<String> = args.next();
    let want = |w: &str| only.as_deref().is_none_or(|o| o == w);
    if want("tiny") {
        let enc = vit(192, 768, 12, 3, 16, 14, 3);
        let x = Tensor::randn(0f32, 1.0, (64, 3, 224, 224), &Device::Cpu).unwrap();
        let fwd = time(runs, 64, || {
            enc.features(&x).unwrap();
        });
        println!("vit_tiny forward, 224x224, batch 64: {fwd:.1} img/s");
        let acts = time(runs, 64, || {
            enc.forward_unit_acts(&x).unwrap();
        });
        println!(
            "vit_tiny forward, every tap reduced to act_u, 224x224, batch 64: {acts:.1} img/s"
        );
    }
    if want("embedded") {
        // The default `memprune train --arch vit` encoder: Fashion-MNIST 1x28x28, patch 4
        // (grid 7x7, 50 tokens), width 128, depth 6, 4 heads, MLP 512.
        let enc = vit(128, 512, 6, 4, 4, 7, 1);
        let x = Tensor::randn(0f32, 1.0, (256, 1, 28, 28), &Device::Cpu).unwrap();
        let taps = time(runs, 256, || {
            let t = enc.forward_taps(&x).unwrap();
            assert_eq!(t.len(), 6 * 4 + 1);
        });
        println!("embedded vit forward, every tap (all tokens), 28x28, batch 256: {taps:.1} img/s");
        let acts = time(runs, 256, || {
            enc.forward_unit_acts(&x).unwrap();
        });
        println!(
            "embedded vit forward, every tap reduced to act_u, 28x28, batch 256: {acts:.1} img/s"
        );
    }
}
