//! Random-weight encoders and images for the benchmark examples (not an example itself:
//! included with `#[path]`).

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;

/// The device the benchmarks run on: `BENCH_DEVICE=cuda` (or `cuda:N`, a build with
/// `--features cuda`), else the CPU.
pub fn device() -> Device {
    match std::env::var("BENCH_DEVICE").as_deref() {
        Ok(spec) if spec.starts_with("cuda") => {
            let n = spec
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Device::new_cuda(n)
                .expect("BENCH_DEVICE: no such CUDA device (built with --features cuda?)")
        }
        _ => Device::Cpu,
    }
}

/// `t` with every tensor moved to [`device`].
fn on_device(t: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let dev = device();
    t.into_iter()
        .map(|(k, v)| (k, v.to_device(&dev).unwrap()))
        .collect()
}

/// A timm-layout ViT with random weights: width `d`, MLP `h`, `depth` blocks, `heads`,
/// patch `p`, grid `g` x `g`, `c` input channels, a class token.
pub fn vit(
    d: usize,
    h: usize,
    depth: usize,
    heads: usize,
    p: usize,
    g: usize,
    c: usize,
) -> Encoder {
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
    let ckpt = Checkpoint::from_tensors(
        std::path::Path::new("random"),
        on_device(t),
        Default::default(),
    );
    let opts = LoadOptions {
        heads: Some(heads),
        ..Default::default()
    };
    Encoder::from_checkpoint(ckpt, &opts).unwrap()
}

/// torchvision's resnet50 (bottleneck blocks [3, 4, 6, 3], ImageNet stem), random weights
/// (He-normal convolutions, BatchNorm scales in [0.5, 1.5], small shifts and means).
pub fn resnet50() -> Encoder {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![("conv1.weight".into(), vec![64, 3, 7, 7])];
    let bn = |shapes: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            shapes.push((format!("{name}.{s}"), vec![c]));
        }
    };
    bn(&mut shapes, "bn1", 64);
    let mut cin = 64;
    for (s, (&blocks, &w)) in [3usize, 4, 6, 3]
        .iter()
        .zip(&[64usize, 128, 256, 512])
        .enumerate()
    {
        for j in 0..blocks {
            let b = format!("layer{}.{j}", s + 1);
            shapes.push((format!("{b}.conv1.weight"), vec![w, cin, 1, 1]));
            bn(&mut shapes, &format!("{b}.bn1"), w);
            shapes.push((format!("{b}.conv2.weight"), vec![w, w, 3, 3]));
            bn(&mut shapes, &format!("{b}.bn2"), w);
            shapes.push((format!("{b}.conv3.weight"), vec![4 * w, w, 1, 1]));
            bn(&mut shapes, &format!("{b}.bn3"), 4 * w);
            if j == 0 {
                shapes.push((format!("{b}.downsample.0.weight"), vec![4 * w, cin, 1, 1]));
                bn(&mut shapes, &format!("{b}.downsample.1"), 4 * w);
            }
            cin = 4 * w;
        }
    }
    let mut t = BTreeMap::new();
    for (name, shape) in shapes {
        let v = if name.ends_with("running_var") || (shape.len() == 1 && name.ends_with("weight")) {
            Tensor::rand(0.5f32, 1.5, shape.as_slice(), &Device::Cpu)
        } else if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            Tensor::randn(
                0f32,
                (2.0 / fan_in).sqrt() as f32,
                shape.as_slice(),
                &Device::Cpu,
            )
        } else {
            Tensor::randn(0f32, 0.1, shape.as_slice(), &Device::Cpu)
        };
        t.insert(name, v.unwrap());
    }
    let ckpt = Checkpoint::from_tensors(
        std::path::Path::new("random-resnet50"),
        on_device(t),
        Default::default(),
    );
    Encoder::from_checkpoint(ckpt, &LoadOptions::default()).unwrap()
}

/// `n` random RGB images of `size` x `size` (uniform bytes, seeded), as an image folder
/// would give them: what the measure benchmarks make their views from.
pub fn random_images(n: usize, size: usize, seed: u64) -> memprune::data::ImageSet {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let pixels = (0..n * 3 * size * size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    memprune::data::ImageSet {
        source: format!("random-{size}"),
        pixels,
        labels: Some((0..n as u32).map(|i| i % 2).collect()),
        class_names: None,
        channels: 3,
        height: size,
        width: size,
        kind: Default::default(),
        names: Default::default(),
        notes: Vec::new(),
    }
}
