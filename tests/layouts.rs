//! Checkpoints as the SSL libraries write them (fixtures made with the libraries by
//! examples/make_layout_fixtures.py): lightly's nn.Sequential backbone of a torchvision
//! ResNet, a DINOv2 training checkpoint, a file with two candidate state dicts; and what
//! memprune refuses without running any pickled code: legacy torch.save files, whole pickled
//! modules, a malicious `__reduce__`.

use candle_core::{DType, Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::model::coupling::coupling_groups;
use memprune::model::{Encoder, LoadOptions};
use memprune::rewrite::{prune_tensors, write_rewritten, GroupCut, PruneMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{memprune, ok, parity, refused, s};

fn fx(name: &str) -> PathBuf {
    common::root().join("tests/fixtures/layouts").join(name)
}

fn vit(name: &str) -> PathBuf {
    common::root().join("tests/fixtures/vit").join(name)
}

/// Every tap of `enc` on the input of the reference file `io` matches its `tap.*` to 1e-4 of
/// the tap's scale.
fn matches_taps(enc: &Encoder, io: &Path) {
    let io = candle_core::safetensors::load(io, &Device::Cpu).unwrap();
    let x = io["input"].to_dtype(DType::F32).unwrap();
    let taps = enc.forward_taps(&x).unwrap();
    assert_eq!(
        io.keys().filter(|k| k.starts_with("tap.")).count(),
        enc.layers.len()
    );
    for (layer, tap) in enc.layers.iter().zip(&taps) {
        let want = &io[&format!("tap.{}", layer.name)];
        assert_eq!(tap.dims(), want.dims(), "{}", layer.name);
        let scale = want.abs().unwrap().max_all().unwrap();
        let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
        let err = (tap - want).unwrap().abs().unwrap().max_all().unwrap();
        let err = err.to_scalar::<f32>().unwrap() / scale;
        assert!(err <= 1e-4, "{}: error {err} of the scale", layer.name);
    }
}

#[test]
fn lightly_sequential_backbone_reads_as_the_torchvision_resnet_it_is() {
    let enc = Encoder::load(&fx("lightly_simclr.pth"), &LoadOptions::default()).unwrap();
    assert_eq!(
        enc.describe(),
        "resnet18 (basic blocks [2, 2, 2, 2], cifar stem)"
    );
    // The same weights as parity/resnet18_cifar: the same taps as PyTorch's.
    matches_taps(&enc, &parity("resnet18_cifar_io.safetensors"));
    // The mapping used is said, and the projection head is not the encoder's.
    let notes = enc.checkpoint.notes.join("\n");
    assert!(
        notes.contains("`0` read as conv1, `1` as bn1, `4`..`7` as layer1..layer4"),
        "{notes}"
    );
    assert!(enc.unused.iter().all(|n| n.starts_with("projection_head.")));
    let out = ok(&memprune(&["inspect", s(&fx("lightly_simclr.pth"))]));
    assert!(out.contains("read as     an nn.Sequential of a torchvision ResNet's children"));
    assert!(out.contains("prefix `backbone.` stripped"));
}

#[test]
fn lightly_backbone_of_the_full_resnet18_is_detected() {
    let text = std::fs::read_to_string(fx("lightly_resnet18_keys.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut tensors = BTreeMap::new();
    for t in v["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap().to_string();
        let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).unwrap();
        let t = if name.ends_with("num_batches_tracked") {
            Tensor::zeros((), DType::I64, &Device::Cpu)
        } else {
            Tensor::ones(shape, DType::F32, &Device::Cpu)
        };
        tensors.insert(name, t.unwrap());
    }
    assert!(tensors.contains_key("4.0.conv1.weight") && tensors.contains_key("0.weight"));
    let ck = Checkpoint::from_tensors(Path::new("lightly.pth"), tensors, BTreeMap::new());
    let enc = Encoder::from_checkpoint(ck, &LoadOptions::default()).unwrap();
    assert_eq!(
        enc.describe(),
        "resnet18 (basic blocks [2, 2, 2, 2], imagenet stem)"
    );
    assert!(enc.unused.is_empty(), "{:?}", enc.unused);
    assert_eq!(enc.params(), 11_176_512);
}

#[test]
fn a_pruned_lightly_backbone_keeps_its_names_and_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let enc = Encoder::load(&fx("lightly_simclr.pth"), &LoadOptions::default()).unwrap();
    let groups = coupling_groups(&enc);
    // The projection head reads the representation: it is sliced with the last group.
    let last = groups
        .iter()
        .find(|g| g.taps.iter().any(|t| t == "pool"))
        .unwrap();
    assert!(last
        .consumers
        .iter()
        .any(|c| c.tensor == "projection_head.layers.0.weight"));
    let cuts: Vec<GroupCut> = groups
        .iter()
        .map(|g| GroupCut {
            group: g.name.clone(),
            channels: vec![0],
        })
        .collect();
    let t = prune_tensors(&enc.checkpoint.stored, &groups, &cuts, PruneMode::Remove).unwrap();
    let out = dir.path().join("pruned.safetensors");
    write_rewritten(&out, &enc.checkpoint, &t, &BTreeMap::new()).unwrap();
    let written = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let input = &enc.checkpoint.stored_names;
    let mut names: Vec<&String> = written.keys().collect();
    names.sort();
    let mut want: Vec<&String> = input.values().collect();
    want.sort();
    assert_eq!(names, want, "the file's own names, every tensor kept");
    assert_eq!(written["backbone.0.weight"].dims()[0], 3);
    assert_eq!(written["projection_head.layers.0.weight"].dims()[1], 31);
    let back = Encoder::load(&out, &LoadOptions::default()).unwrap();
    assert!(back.params() < enc.params());
    assert_eq!(back.feature_dim(), 31);
}

#[test]
fn a_dinov2_training_checkpoint_gives_its_teacher_and_its_student_by_key() {
    // {'model': {'teacher.backbone.*', 'student.backbone.*', '*.dino_head.*'}, 'optimizer',
    // 'iteration'}: the dict under `model`, then the names under `teacher.`, `backbone.`
    // stripped.
    let opts = |key: Option<&str>| LoadOptions {
        heads: Some(4),
        key: key.map(String::from),
        ..Default::default()
    };
    let teacher = Encoder::load(&fx("dinov2_train.pth"), &opts(None)).unwrap();
    matches_taps(&teacher, &vit("dino_teacher_io.safetensors"));
    assert!(teacher.unused.iter().all(|n| n.starts_with("dino_head.")));
    let notes = teacher.checkpoint.notes.join("\n");
    assert!(notes.contains("top-level key `model`"), "{notes}");
    assert!(notes.contains("named `teacher.*`"), "{notes}");
    let student = Encoder::load(&fx("dinov2_train.pth"), &opts(Some("student"))).unwrap();
    matches_taps(&student, &vit("dino_student_io.safetensors"));
    // A key that is neither a dict nor a name prefix: the names are listed.
    let r = memprune(&[
        "inspect",
        s(&fx("dinov2_train.pth")),
        "--key",
        "ema",
        "--heads",
        "4",
    ]);
    refused(&r, &["dinov2_train.pth", "`ema`", "`student`, `teacher`"]);
}

#[test]
fn several_candidate_state_dicts_are_listed_and_one_is_chosen_by_key() {
    let f = fx("two_models.pth");
    let r = memprune(&["inspect", s(&f)]);
    refused(
        &r,
        &[
            "two_models.pth",
            "2 dicts of tensors",
            "`state_dict` (122 tensors), `ema_state_dict` (122 tensors)",
            "--key",
        ],
    );
    let out = ok(&memprune(&["inspect", s(&f), "--key", "ema_state_dict"]));
    assert!(out.contains("the state dict under the top-level key `ema_state_dict`"));
    assert!(out.contains("resnet18 (basic blocks [2, 2, 2, 2], cifar stem)"));
}

#[test]
fn a_plain_model_state_dict_with_its_metadata_reads() {
    // torch.save(model.state_dict()) is an OrderedDict with a `_metadata` attribute, set
    // after its items (it used to replace them: "top-level keys: _metadata").
    let raw = std::fs::read(fx("lightly_simclr.pth")).unwrap();
    let t = memprune::checkpoint::pth::read_state_dict(&raw).unwrap();
    // The backbone's 120 tensors and the projection head's 12.
    assert_eq!(t.len(), 132);
    assert!(t.iter().any(|(k, _)| k == "backbone.7.1.bn2.running_var"));
}

#[test]
fn legacy_files_and_whole_modules_are_named_with_the_way_to_convert_them() {
    let convert = [
        "torch.load(\"IN.pth\", weights_only=False)",
        "obj.state_dict() if isinstance(obj, torch.nn.Module) else obj",
    ];
    let cases: [(&str, &[&str]); 3] = [
        (
            "legacy_state_dict.pth",
            &["a legacy (pre-1.6, non-zip) torch.save file holding a state dict"],
        ),
        (
            "legacy_module.pth",
            &[
                "a legacy (pre-1.6, non-zip) torch.save file",
                "a whole pickled nn.Module (`torch.nn.modules.container.Sequential`)",
            ],
        ),
        (
            "whole_module.pth",
            &["a whole pickled nn.Module (`torch.nn.modules.container.Sequential`), not a state dict"],
        ),
    ];
    for (file, needles) in cases {
        let r = memprune(&["inspect", s(&fx(file))]);
        let mut all: Vec<&str> = needles.to_vec();
        all.push(file);
        all.extend(convert);
        refused(&r, &all);
    }
}

#[test]
fn no_pickled_code_runs() {
    // Each file holds an object whose __reduce__ is os.system("touch memprune_pwned"), which
    // torch.load(weights_only=False) would run in its working folder.
    let dir = tempfile::tempdir().unwrap();
    for file in ["evil.pth", "evil_legacy.pth", "evil_root.pth"] {
        let bytes = std::fs::read(fx(file)).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"system") && has(b"touch memprune_pwned"), "{file}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_memprune"))
            .args(["inspect", s(&fx(file))])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert!(!dir.path().join("memprune_pwned").exists(), "{file}");
        let _ = Checkpoint::load(&fx(file), None);
        assert!(!common::root().join("memprune_pwned").exists(), "{file}");
    }
    // The one whose whole value is the call says what it is.
    let r = memprune(&["inspect", s(&fx("evil_root.pth"))]);
    refused(
        &r,
        &[
            "evil_root.pth",
            "a call of `posix.system`",
            "runs no pickled code",
        ],
    );
    // The zip one's tensors read; the call beside them is never made.
    let ck = Checkpoint::load(&fx("evil.pth"), None).unwrap();
    assert_eq!(ck.tensors.len(), 2);
}
