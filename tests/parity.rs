//! PyTorch parity: every tap of every fixture network (made once with PyTorch in float64 by
//! examples/make_parity_fixtures.py) agrees with memprune's forward pass to 1e-4 of the
//! tap's scale.

use candle_core::{Device, Tensor};
use memprune::model::{Encoder, LoadOptions};

mod common;
use common::parity;
use common::tensors::max_abs;

fn check(name: &str, expect_arch: &str) {
    let enc = Encoder::load(
        &parity(&format!("{name}.safetensors")),
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(
        enc.describe().starts_with(expect_arch),
        "{name}: detected {}",
        enc.describe()
    );
    let io =
        candle_core::safetensors::load(parity(&format!("{name}_io.safetensors")), &Device::Cpu)
            .unwrap();
    let x = io["input"].to_dtype(candle_core::DType::F32).unwrap();
    let taps = enc.forward_taps(&x).unwrap();
    assert_eq!(taps.len(), enc.layers.len());
    let expected_taps = io.keys().filter(|k| k.starts_with("tap.")).count();
    assert_eq!(
        expected_taps,
        enc.layers.len(),
        "{name}: the fixture has {expected_taps} taps, memprune {}",
        enc.layers.len()
    );
    for (layer, tap) in enc.layers.iter().zip(&taps) {
        let want: &Tensor = io
            .get(&format!("tap.{}", layer.name))
            .unwrap_or_else(|| panic!("{name}: no tap {}", layer.name));
        assert_eq!(tap.dims(), want.dims(), "{name}/{}", layer.name);
        let scale = max_abs(want).max(1.0);
        let err = max_abs(&(tap - want).unwrap());
        assert!(
            err <= 1e-4 * scale,
            "{name}/{}: max error {err} (scale {scale})",
            layer.name
        );
    }
}

#[test]
fn resnet9_one_channel_matches_pytorch() {
    check("resnet9_c1", "resnet9");
}

/// The authors' ResNet9 (their module names, conv biases, four pools, final max-pool).
#[test]
fn authors_resnet9_matches_pytorch() {
    check("resnet9_authors", "resnet9-authors");
}

#[test]
fn resnet9_narrow_matches_pytorch() {
    check("resnet9_narrow", "resnet9");
}

#[test]
fn resnet9_float16_weights_match_pytorch() {
    check("resnet9_narrow_f16", "resnet9");
}

#[test]
fn resnet9_bfloat16_weights_match_pytorch() {
    check("resnet9_c1_bf16", "resnet9");
}

#[test]
fn resnet18_imagenet_stem_matches_pytorch() {
    check(
        "resnet18_imagenet",
        "resnet18 (basic blocks [2, 2, 2, 2], imagenet stem)",
    );
}

#[test]
fn resnet18_cifar_stem_matches_pytorch() {
    check(
        "resnet18_cifar",
        "resnet18 (basic blocks [2, 2, 2, 2], cifar stem)",
    );
}

#[test]
fn bottleneck_resnet_with_downsample_matches_pytorch() {
    check(
        "resnet50_bottleneck",
        "resnet17 (bottleneck blocks [2, 1, 1, 1], imagenet stem)",
    );
}

/// The real torchvision layouts (names and shapes, zero weights) are detected as such.
fn zeros_from_keys(file: &str) -> memprune::checkpoint::Checkpoint {
    let text = std::fs::read_to_string(parity(file)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut tensors = std::collections::BTreeMap::new();
    let entries: Vec<(String, Vec<usize>)> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                serde_json::from_value(t["shape"].clone()).unwrap(),
            )
        })
        .collect();
    for (k, shape) in entries {
        let t = if k.ends_with("running_var") || k.ends_with("bn1.weight") {
            Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu)
        } else {
            Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu)
        };
        let t = if k.ends_with("num_batches_tracked") {
            Tensor::zeros((), candle_core::DType::I64, &Device::Cpu)
        } else {
            t
        };
        tensors.insert(k, t.unwrap());
    }
    memprune::checkpoint::Checkpoint::from_tensors(&parity(file), tensors, Default::default())
}

#[test]
fn real_torchvision_resnet18_layout_is_detected() {
    let enc = Encoder::from_checkpoint(
        zeros_from_keys("resnet18_keys.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        enc.describe(),
        "resnet18 (basic blocks [2, 2, 2, 2], imagenet stem)"
    );
    assert_eq!(enc.feature_dim(), 512);
    assert_eq!(
        enc.params(),
        11_176_512,
        "resnet18 without fc has 11,176,512 parameters"
    );
    // torchvision's figure: 1.82 GMACs at 224x224 including fc (0.5 M).
    let macs = enc.macs(224) as f64 / 1e9;
    assert!((macs - 1.8136).abs() < 0.01, "{macs}");
    assert_eq!(
        enc.unused,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );
}

#[test]
fn real_torchvision_resnet50_layout_is_detected() {
    let enc = Encoder::from_checkpoint(
        zeros_from_keys("resnet50_keys.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        enc.describe(),
        "resnet50 (bottleneck blocks [3, 4, 6, 3], imagenet stem)"
    );
    assert_eq!(enc.feature_dim(), 2048);
}

#[test]
fn paper_resnet9_layout_is_detected() {
    let enc = Encoder::from_checkpoint(
        zeros_from_keys("resnet9_keys.json"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(enc.describe(), "resnet9");
    let units: Vec<usize> = enc.layers.iter().map(|l| l.units).collect();
    assert_eq!(
        units,
        vec![32, 64, 64, 64, 64, 128, 256, 256, 256, 256, 256]
    );
}
