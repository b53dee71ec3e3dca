//! CPU-vs-GPU parity of measuring: every tap and every unit's act_u of a ResNet (resnet18,
//! resnet50 bottleneck) and of ViTs (timm ViT-Tiny; DINOv2 with registers and LayerScale)
//! agree between the CPU and `cuda:0` to 1e-4 of the tap's largest magnitude, at a batch
//! of one image and of five. Needs `--features cuda` and a CUDA device: without the feature
//! this file holds no test (`examples/gpu_check.sh` builds and runs it).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{Device, Tensor};
use memprune::model::{Encoder, LoadOptions};

fn inputs(n: usize, c: usize, s: usize) -> Tensor {
    let v: Vec<f32> = (0..n * c * s * s)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (n, c, s, s), &Device::Cpu).unwrap()
}

fn largest_gap(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let gap = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (gap, scale)
}

fn same_on_gpu(file: &str, heads: Option<usize>, size: usize) {
    let path = common::root().join(file);
    let opts = LoadOptions {
        heads,
        ..Default::default()
    };
    let cpu = Encoder::load(&path, &opts).unwrap();
    let gpu = Encoder::load_on(&path, &opts, &Device::new_cuda(0).unwrap()).unwrap();
    for n in [1, 5] {
        let x = inputs(n, cpu.in_channels(), size);
        let xg = x.to_device(&gpu.device).unwrap();
        let names: Vec<String> = cpu.layers.iter().map(|l| l.name.clone()).collect();
        for (what, a, b) in [
            (
                "tap",
                cpu.forward_taps(&x).unwrap(),
                gpu.forward_taps(&xg).unwrap(),
            ),
            (
                "act_u",
                cpu.forward_unit_acts(&x).unwrap(),
                gpu.forward_unit_acts(&xg).unwrap(),
            ),
        ] {
            assert_eq!(a.len(), b.len());
            for ((a, b), name) in a.iter().zip(&b).zip(&names) {
                let (gap, scale) = largest_gap(a, b);
                assert!(
                    gap <= 1e-4 * scale,
                    "{file}: {what} {name} (batch {n}): CPU and GPU differ by {gap} (largest magnitude {scale})"
                );
            }
        }
    }
}

#[test]
fn resnet18_measures_the_same_on_the_gpu() {
    same_on_gpu(
        "tests/fixtures/parity/resnet18_imagenet.safetensors",
        None,
        64,
    );
}

#[test]
fn resnet50_measures_the_same_on_the_gpu() {
    same_on_gpu(
        "tests/fixtures/parity/resnet50_bottleneck.safetensors",
        None,
        64,
    );
}

#[test]
fn vit_tiny_measures_the_same_on_the_gpu() {
    same_on_gpu("tests/fixtures/vit/vit_tiny.safetensors", Some(3), 32);
}

#[test]
fn dinov2_with_registers_measures_the_same_on_the_gpu() {
    same_on_gpu("tests/fixtures/vit/dinov2_reg.safetensors", Some(4), 28);
}
