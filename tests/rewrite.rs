//! The rewriter: removing units gives the same outputs as masking them, on ResNet9 (residual
//! groups) and torchvision ResNets (BasicBlock and Bottleneck with downsample); untouched
//! tensors keep their bits; rewritten checkpoints load again.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::coupling::{coupling_groups, CouplingGroup};
use memprune::model::{Encoder, LoadOptions};
use memprune::rewrite::{prune_tensors, write_rewritten, GroupCut, PruneMode};
use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::parity;
use common::tensors::max_abs;

/// About a third of every group's channels, spread out, never all.
fn cuts(groups: &[CouplingGroup]) -> Vec<GroupCut> {
    groups
        .iter()
        .map(|g| GroupCut {
            group: g.name.clone(),
            channels: (0..g.channels)
                .filter(|c| (c * 7 + g.channels) % 3 == 0)
                .take(g.channels - 1)
                .collect(),
        })
        .collect()
}

fn rewrite(
    name: &str,
    mode: PruneMode,
    dir: &Path,
) -> (Encoder, Encoder, Vec<CouplingGroup>, Vec<GroupCut>) {
    let enc = Encoder::load(&parity(name), &LoadOptions::default()).unwrap();
    let groups = coupling_groups(&enc);
    let cuts = cuts(&groups);
    let t = prune_tensors(&enc.checkpoint.stored, &groups, &cuts, mode).unwrap();
    let out = dir.join(format!("{mode:?}.safetensors"));
    write_rewritten(&out, &enc.checkpoint, &t, &BTreeMap::new()).unwrap();
    let back = Encoder::load(&out, &LoadOptions::default()).unwrap();
    (enc, back, groups, cuts)
}

fn removed_equals_masked(name: &str, input: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (orig, masked, groups, cuts) = rewrite(name, PruneMode::Mask, dir.path());
    let (_, removed, _, _) = rewrite(name, PruneMode::Remove, dir.path());
    let io = candle_core::safetensors::load(parity(input), &Device::Cpu).unwrap();
    let x = &io["input"];
    let (tm, tr) = (
        masked.forward_taps(x).unwrap(),
        removed.forward_taps(x).unwrap(),
    );
    assert!(
        removed.params() < orig.params(),
        "removal shrinks the encoder"
    );
    assert!(removed.macs(32) < orig.macs(32));
    assert_eq!(masked.params(), orig.params(), "masking keeps shapes");
    for ((layer, a), b) in masked.layers.iter().zip(&tm).zip(&tr) {
        let g = groups
            .iter()
            .position(|g| g.taps.contains(&layer.name))
            .unwrap_or_else(|| panic!("{} has no group", layer.name));
        let cut = &cuts[g].channels;
        let keep: Vec<u32> = (0..groups[g].channels as u32)
            .filter(|c| !cut.contains(&(*c as usize)))
            .collect();
        let kept = a
            .index_select(&Tensor::new(keep.as_slice(), &Device::Cpu).unwrap(), 1)
            .unwrap();
        assert_eq!(kept.dims(), b.dims(), "{name}/{}", layer.name);
        let err = max_abs(&(kept - b).unwrap());
        assert!(
            err <= 1e-5,
            "{name}/{}: removed differs from masked by {err}",
            layer.name
        );
        let dropped: Vec<u32> = cut.iter().map(|&c| c as u32).collect();
        let zeros = a
            .index_select(&Tensor::new(dropped.as_slice(), &Device::Cpu).unwrap(), 1)
            .unwrap();
        assert_eq!(
            zeros
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0,
            "{name}/{}: masked units are exactly 0",
            layer.name
        );
    }
    // The heads that read the features shrink with them.
    for head in ["fc.weight", "projector.0.weight"] {
        if let Some(t) = removed.checkpoint.tensors.get(head) {
            assert_eq!(t.dims()[1], removed.feature_dim(), "{head}");
        }
    }
}

#[test]
fn resnet9_removed_equals_masked() {
    removed_equals_masked(
        "resnet9_narrow.safetensors",
        "resnet9_narrow_io.safetensors",
    );
}

#[test]
fn resnet9_with_projector_removed_equals_masked() {
    removed_equals_masked("resnet9_c1.safetensors", "resnet9_c1_io.safetensors");
}

#[test]
fn resnet18_removed_equals_masked() {
    removed_equals_masked(
        "resnet18_imagenet.safetensors",
        "resnet18_imagenet_io.safetensors",
    );
}

#[test]
fn bottleneck_resnet_with_downsample_removed_equals_masked() {
    removed_equals_masked(
        "resnet50_bottleneck.safetensors",
        "resnet50_bottleneck_io.safetensors",
    );
}

#[test]
fn untouched_tensors_keep_their_bits_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, _, groups, _) = rewrite(
        "resnet9_narrow_f16.safetensors",
        PruneMode::Remove,
        dir.path(),
    );
    let only_block1 = vec![GroupCut {
        group: "block1".into(),
        channels: vec![0, 3],
    }];
    let t = prune_tensors(
        &orig.checkpoint.stored,
        &groups,
        &only_block1,
        PruneMode::Remove,
    )
    .unwrap();
    let out = dir.path().join("b1.safetensors");
    let meta: BTreeMap<String, String> = [("memprune.test".to_string(), "1".to_string())].into();
    write_rewritten(&out, &orig.checkpoint, &t, &meta).unwrap();
    let back = Checkpoint::load(&out, None).unwrap();
    for (name, before) in &orig.checkpoint.stored {
        let after = &back.stored[name];
        assert_eq!(before.dtype(), after.dtype(), "{name}");
        let touched = name.starts_with("block1.") || name == "block2.conv.weight";
        if !touched {
            let (a, b) = (
                before
                    .flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap(),
                after
                    .flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap(),
            );
            assert_eq!(
                a.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
                "{name} changed"
            );
        }
    }
    assert_eq!(
        back.tensors["block2.conv.weight"].dims()[1],
        orig.checkpoint.tensors["block2.conv.weight"].dims()[1] - 2
    );
    assert_eq!(back.metadata["memprune.test"], "1");
    assert!(back.metadata.contains_key("memprune.version"));
}

#[test]
fn emptying_a_group_is_refused() {
    let enc = Encoder::load(
        &parity("resnet9_narrow.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let groups = coupling_groups(&enc);
    let all = vec![GroupCut {
        group: "block3".into(),
        channels: (0..groups.iter().find(|g| g.name == "block3").unwrap().channels).collect(),
    }];
    let e = prune_tensors(&enc.checkpoint.stored, &groups, &all, PruneMode::Remove)
        .unwrap_err()
        .to_string();
    assert!(e.contains("every channel of `block3`"), "{e}");
}

#[test]
fn resnet_groups_follow_the_residual_streams() {
    let enc = Encoder::load(
        &parity("resnet18_imagenet.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let groups = coupling_groups(&enc);
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "stem",
            "layer1.0.conv1",
            "layer1.1.conv1",
            "layer2.0.conv1",
            "stage2",
            "layer2.1.conv1",
            "layer3.0.conv1",
            "stage3",
            "layer3.1.conv1",
            "layer4.0.conv1",
            "stage4",
            "layer4.1.conv1"
        ]
    );
    let stem = &groups[0];
    assert_eq!(stem.taps, ["conv1", "layer1.0", "layer1.1"]);
    let stage4 = groups.iter().find(|g| g.name == "stage4").unwrap();
    assert!(stage4.taps.contains(&"pool".to_string()));
    assert!(stage4.consumers.iter().any(|c| c.tensor == "fc.weight"));
}

#[test]
fn experiment_prune_runs_on_half_precision_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 40);
    let json = dir.path().join("t6.json");
    for ckpt in ["resnet9_c1_bf16.safetensors", "resnet9_c1.safetensors"] {
        let model = common::parity(ckpt);
        let mut args = common::small_prune(common::s(&model), common::s(&data), "mask,remove");
        args.extend(["--json", common::s(&json)]);
        common::ok(&common::memprune(&args));
        let j = common::json(&json);
        assert!(j["rows"].as_array().unwrap().len() >= 6, "{ckpt}: {j}");
        std::fs::remove_file(&json).unwrap();
    }
    // The f16 encoder pruned in memory computes as the one loaded from its file.
    let c = memprune::checkpoint::Checkpoint::load(
        &common::parity("resnet9_narrow_f16.safetensors"),
        None,
    )
    .unwrap();
    let mem = memprune::checkpoint::Checkpoint::from_tensors(
        Path::new("in-memory"),
        c.stored.clone(),
        Default::default(),
    );
    for (k, t) in &c.tensors {
        assert_eq!(mem.tensors[k].dtype(), t.dtype(), "{k}");
    }
    assert_eq!(
        mem.stored["block1.conv.weight"].dtype(),
        candle_core::DType::F16
    );
}

#[test]
fn masking_an_f64_checkpoint_keeps_the_other_rows_bit_for_bit() {
    use memprune::model::coupling::coupling_groups;
    use memprune::model::{Encoder, LoadOptions};
    use memprune::rewrite::{prune_tensors, GroupCut, PruneMode};
    let dir = tempfile::tempdir().unwrap();
    // f64 weights with bits below f32's precision, so an f32 round trip would change them.
    let p = common::edited(
        "resnet9_c1.safetensors",
        dir.path(),
        "f64.safetensors",
        |t, _| {
            for v in t.values_mut() {
                if v.dtype() == candle_core::DType::F32 {
                    let x = v.to_dtype(candle_core::DType::F64).unwrap();
                    *v = (&x + (&x * 1e-12).unwrap()).unwrap();
                }
            }
        },
    );
    let enc = Encoder::load(&p, &LoadOptions::default()).unwrap();
    let groups = coupling_groups(&enc);
    let g = groups.iter().find(|g| g.name == "block3").unwrap();
    let cut = [GroupCut {
        group: g.name.clone(),
        channels: vec![0, 5],
    }];
    let out = prune_tensors(&enc.checkpoint.stored, &groups, &cut, PruneMode::Mask).unwrap();
    let bits = |t: &Tensor| -> Vec<u64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    // Every producer of block3 (conv rows, BatchNorm entries): masked rows are 0, the
    // others keep their bits.
    for name in ["block3.conv.weight", "block3.bn.weight", "block3.bn.bias"] {
        let (w0, w1) = (&enc.checkpoint.stored[name], &out[name]);
        assert_eq!(w1.dtype(), candle_core::DType::F64, "{name}");
        for row in 0..w0.dim(0).unwrap() {
            let (a, b) = (w0.get(row).unwrap(), w1.get(row).unwrap());
            if row == 0 || row == 5 {
                assert!(bits(&b).iter().all(|&x| x == 0), "{name} row {row}");
            } else {
                assert_eq!(bits(&a), bits(&b), "{name} row {row} changed");
            }
        }
    }
    // An untouched tensor is the very same.
    let t: &Tensor = &out["block1.conv.weight"];
    assert_eq!(bits(t), bits(&enc.checkpoint.stored["block1.conv.weight"]));
}
