//! The authors' ResNet9 (`tests/fixtures/parity/resnet9_authors*`, made by
//! `examples/make_authors_resnet9_fixture.py`) as its own family: its layers and taps under
//! its module names, its conv biases pruned with their channels, every tensor name kept on
//! rewrite, and removed units computing what masked ones do. (Tap parity: tests/parity.rs.)

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::coupling::coupling_groups;
use memprune::model::{Encoder, LoadOptions};
use memprune::rewrite::{prune_tensors, GroupCut, PruneMode};

mod common;
use common::parity;

fn rewritten(enc: &Encoder, cuts: &[GroupCut], mode: PruneMode) -> Encoder {
    let t = prune_tensors(&enc.checkpoint.stored, &coupling_groups(enc), cuts, mode).unwrap();
    assert_eq!(
        t.keys().collect::<Vec<_>>(),
        enc.checkpoint.stored.keys().collect::<Vec<_>>(),
        "tensor names kept"
    );
    let c = Checkpoint::from_tensors(&enc.checkpoint.path, t, Default::default());
    Encoder::from_checkpoint(c, &LoadOptions::default()).unwrap()
}

#[test]
fn the_authors_layout_loads_as_itself_and_prunes_exactly() {
    let enc = Encoder::load(
        &parity("resnet9_authors.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(enc.arch_id(), "resnet9-authors");
    let names: Vec<&str> = enc.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "prep",
            "layer1_head",
            "layer1_residual1",
            "layer1_residual2",
            "layer1_sum",
            "layer2",
            "layer3_head",
            "layer3_residual1",
            "layer3_residual2",
            "layer3_sum",
            "pool"
        ]
    );
    assert_eq!(enc.unused, ["classifier.2.bias", "classifier.2.weight"]);
    // 8 convs with bias + BN affine, at the fixture's narrow widths.
    let w = [8usize, 16, 16, 16, 32, 64, 64, 64];
    let mut cin = 3;
    let mut params = 0;
    for c in w {
        params += c * cin * 9 + c + 2 * c;
        cin = c;
    }
    assert_eq!(enc.params(), params);
    let groups: Vec<String> = coupling_groups(&enc)
        .iter()
        .map(|g| g.name.clone())
        .collect();
    assert_eq!(
        groups,
        [
            "prep",
            "layer1_sum",
            "layer1_residual1",
            "layer2",
            "layer3_sum",
            "layer3_residual1"
        ]
    );
    let cuts = [
        GroupCut {
            group: "prep".into(),
            channels: vec![0, 3],
        },
        GroupCut {
            group: "layer1_sum".into(),
            channels: vec![1, 5],
        },
        GroupCut {
            group: "layer2".into(),
            channels: vec![4],
        },
        GroupCut {
            group: "layer3_sum".into(),
            channels: vec![2, 60],
        },
    ];
    let removed = rewritten(&enc, &cuts, PruneMode::Remove);
    let masked = rewritten(&enc, &cuts, PruneMode::Mask);
    assert_eq!(
        removed.checkpoint.get("prep.conv.bias").unwrap().dims(),
        &[6]
    );
    // The classifier reads the pruned representation.
    assert_eq!(
        removed
            .checkpoint
            .get("classifier.2.weight")
            .unwrap()
            .dims(),
        &[10, 62]
    );
    let io = candle_core::safetensors::load(parity("resnet9_authors_io.safetensors"), &Device::Cpu)
        .unwrap();
    let x: &Tensor = &io["input"];
    let (tr, tm) = (
        removed.forward_taps(x).unwrap(),
        masked.forward_taps(x).unwrap(),
    );
    let mut compared = 0;
    for ((a, b), l) in tr.iter().zip(&tm).zip(&removed.layers) {
        if a.dims() == b.dims() {
            let e = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(e.to_scalar::<f32>().unwrap() < 1e-5, "{}", l.name);
            compared += 1;
        }
    }
    assert_eq!(
        compared, 2,
        "layer1_residual1 and layer3_residual1 keep their width"
    );
    // A masked channel, conv bias included, outputs exactly 0.
    let prep = tm[0]
        .narrow(1, 3, 1)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert_eq!(prep.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn images_the_final_pool_cannot_take_are_one_clear_line() {
    let enc = Encoder::load(
        &parity("resnet9_authors.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let x = Tensor::zeros((1, 3, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = enc.forward_taps(&x).unwrap_err().to_string();
    assert!(e.contains("32x32"), "{e}");
}
