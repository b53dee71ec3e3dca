//! Speed of memprune's ViT forward, as figures to put beside timm's
//! (`examples/bench_vit_torch.py` runs the same networks, batches and threads).
//!
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_vit [RUNS] [tiny|embedded|mae|simclr]
//!
//! Prints the median images/s of: ViT-Tiny/16 (timm's `vit_tiny_patch16_224`: width 192,
//! depth 12, 3 heads) forward at 224x224, batch 64, the representation only (all taps are
//! computed on the way; the forward is the same); the same network's UnitMem activations
//! (every tap reduced to act_u), batch 64; and the embedded ViT (the default of
//! `memprune train --arch vit`: 1x28x28, patch 4, width 128, depth 6, 4 heads, MLP 512)
//! forward at batch 256 returning every tap (per block the attention residual output, the
//! heads before `proj`, fc1 after GELU, the MLP residual output; every token), and reduced
//! to act_u. Random weights. Then one training step of that ViT as `memprune train --arch vit`
//! runs it at its defaults (batch 256, AdamW): MAE (75 % masked, decoder 2 blocks of width
//! 64, norm-pix loss) and SimCLR (2 views, projector 128-512-BN-ReLU-128, NT-Xent 0.5);
//! each step includes making its views and masks. The second argument runs one section only.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::time::Instant;

#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

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

/// Median images/s of `steps` training steps (after one warm-up step) of the default
/// `memprune train --arch vit` encoder with `framework`, as `memprune train` sets it up: the
/// embedded Fashion-MNIST, batch 256, AdamW lr 1e-3 wd 0.05 (MAE: betas 0.9/0.95). Each
/// step makes its views (and MAE its masks), runs forward and backward, and updates.
fn train_rate(framework: memprune::train::Framework, steps: usize) -> f64 {
    use memprune::data::{self, Normalization, Split};
    use memprune::train::optim::{OptimizerConfig, OptimizerKind};
    use memprune::train::{Framework, TrainConfig, Trainer};
    // As the memprune binary does (MEMPRUNE_BLOCK_CACHE=0: the system allocator).
    memprune::block_cache::enable_from_env();
    let set = data::open(&memprune::defaults::data(), Split::Train).unwrap();
    let batch = 256;
    let vit = memprune::model::vit_init::VitShape::default();
    let mut optimizer = OptimizerConfig::new(OptimizerKind::Adamw, 0.05);
    if framework == Framework::Mae {
        optimizer.beta2 = 0.95;
    }
    let cfg = TrainConfig {
        arch: memprune::train::init::TrainArch::Vit,
        framework,
        widths: vit.widths(),
        epochs: 1,
        batch,
        lr: 1e-3,
        optimizer,
        warmup_epochs: 1.0,
        seed: 0,
        split: memprune::train::split::SplitKind::All,
        split_seed: 0,
        temperature: 0.5,
        augment: framework.default_augment(),
        normalization: Normalization::default_for(set.kind, set.channels),
        save_dtype: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        init_from: None,
        trainable: None,
        planted: None,
        vit,
    };
    let mut t = Trainer::new(cfg, &set, "embedded", None).unwrap();
    let order = t.epoch_order(0);
    let mut rates = Vec::new();
    for k in 0..=steps {
        // The embedded set holds fewer than 2 batches of 256: steps wrap around it.
        let off = (k * batch) % (order.len().saturating_sub(batch) + 1);
        let pts = &order[off..off + batch];
        let t0 = Instant::now();
        let loss = t.step(pts, 0).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        eprintln!("{} step {k}: loss {loss:.4}, {dt:.3} s", framework.name());
        if k > 0 {
            rates.push(batch as f64 / dt);
        }
    }
    median(rates)
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
    for (name, framework) in [
        ("mae", memprune::train::Framework::Mae),
        ("simclr", memprune::train::Framework::Simclr),
    ] {
        if want(name) {
            let r = train_rate(framework, runs);
            println!(
                "embedded vit {name} training step, batch 256{}: {r:.1} img/s ({:.3} s/step)",
                if name == "simclr" { " (512 views)" } else { "" },
                256.0 / r
            );
        }
    }
}
