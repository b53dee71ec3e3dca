//! Bad input: each input that used to exit 0 on nonsense or answer in an unclear or
//! multi-line way is refused with exit code 1 and one line that names the file or the flag
//! and the problem, and writes nothing.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{edited, memprune, parity, refused, s, tiny_idx};
use std::path::Path;

/// `inspect` of a ResNet9 fixture copy edited by `edit`, expected refused with `needles`.
fn inspect_refused(dir: &Path, fixture: &str, edit: impl FnOnce(&mut Tensors), needles: &[&str]) {
    let p = edited(fixture, dir, "bad.safetensors", |t, _| edit(t));
    let mut n = vec!["bad.safetensors"];
    n.extend_from_slice(needles);
    refused(&memprune(&["inspect", s(&p)]), &n);
}

type Tensors = std::collections::BTreeMap<String, Tensor>;

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn zero_unit_layers_and_impossible_kernels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A ResNet9 block with no output channel (its BatchNorm too), and the next block
    // reading those 0 channels: consistent shapes, so it used to load and measure.
    inspect_refused(
        d,
        "resnet9_c1.safetensors",
        |t| {
            t.insert("block3.conv.weight".into(), zeros(&[0, 16, 3, 3]));
            for k in ["weight", "bias", "running_mean", "running_var"] {
                t.insert(format!("block3.bn.{k}"), zeros(&[0]));
            }
            t.insert("block4.conv.weight".into(), zeros(&[16, 0, 3, 3]));
        },
        &["block3.conv.weight", "at least one output channel"],
    );
    // A zero-size kernel, in a family that reads its kernel size from the shape.
    let p = edited("resnet18_cifar.safetensors", d, "k0.safetensors", |t, _| {
        t.insert("conv1.weight".into(), zeros(&[4, 3, 0, 0]));
    });
    refused(
        &memprune(&["inspect", s(&p)]),
        &["k0.safetensors", "conv1.weight", "[4, 3, 0, 0]"],
    );
    // torchvision ResNets have odd square kernels only.
    for (shape, what) in [([4, 4, 2, 2], "even"), ([4, 4, 3, 1], "non-square")] {
        let p = edited(
            "resnet18_cifar.safetensors",
            d,
            &format!("{what}.safetensors"),
            |t, _| {
                t.insert("layer1.0.conv1.weight".into(), zeros(&shape));
            },
        );
        refused(
            &memprune(&["inspect", s(&p)]),
            &[
                &format!("{what}.safetensors"),
                "layer1.0.conv1.weight",
                "square with an odd side",
            ],
        );
    }
    // A ViT whose MLP has no hidden unit.
    let vit = common::root().join("tests/fixtures/vit/vit_tiny.safetensors");
    let c = memprune::checkpoint::Checkpoint::load(&vit, None).unwrap();
    let mut t = c.stored;
    let w = t["blocks.0.mlp.fc2.weight"].dim(0).unwrap();
    t.insert("blocks.0.mlp.fc1.weight".into(), zeros(&[0, w]));
    t.insert("blocks.0.mlp.fc1.bias".into(), zeros(&[0]));
    t.insert("blocks.0.mlp.fc2.weight".into(), zeros(&[w, 0]));
    let p = d.join("vit0.safetensors");
    memprune::checkpoint::write_safetensors_atomic(&p, &t, &c.metadata, &[]).unwrap();
    refused(
        &memprune(&["inspect", s(&p)]),
        &["vit0.safetensors", "blocks.0.mlp.fc1.weight", "hidden unit"],
    );
}

#[test]
fn a_resnet_with_a_missing_stage_or_block_is_an_error_not_a_shorter_network() {
    let dir = tempfile::tempdir().unwrap();
    let gone = |prefix: &'static str, name: &str| {
        edited("resnet18_cifar.safetensors", dir.path(), name, |t, _| {
            t.retain(|k, _| !k.starts_with(prefix))
        })
    };
    let p = gone("layer3.", "no-stage3.safetensors");
    refused(
        &memprune(&["inspect", s(&p)]),
        &["no-stage3.safetensors", "`layer4`", "`layer3`"],
    );
    let p = gone("layer2.0.", "no-block.safetensors");
    refused(
        &memprune(&["inspect", s(&p)]),
        &["no-block.safetensors", "`layer2.1`", "`layer2.0`"],
    );
    // The whole network still loads as itself.
    let text = common::ok(&memprune(&[
        "inspect",
        s(&parity("resnet18_cifar.safetensors")),
        "--size",
        "32",
    ]));
    assert!(text.contains("layer4.1"), "{text}");
}

#[test]
fn empty_or_duplicated_candidate_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.json");
    for (list, name, needle) in [
        ("[]", "empty.safetensors", "empty list"),
        ("[3, 7, 3]", "dup.safetensors", "point 3 twice"),
    ] {
        let p = edited("resnet9_c1.safetensors", dir.path(), name, |_, m| {
            m.insert("memprune.candidates".into(), list.into());
        });
        let r = memprune(&[
            "measure",
            "layer",
            s(&p),
            "--reference",
            s(&p),
            "--views",
            "2",
            "-q",
            "--json",
            s(&out),
        ]);
        refused(&r, &[name, "memprune.candidates", needle]);
        assert!(!out.exists());
    }
}

#[test]
fn probe_and_train_numbers_that_cannot_work_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 20);
    let json = dir.path().join("p.json");
    for (flag, v) in [
        ("--lr", "NaN"),
        ("--lr", "-1"),
        ("--l2", "inf"),
        ("--steps", "0"),
    ] {
        let r = memprune(&[
            "probe",
            "--raw",
            "--data",
            s(&data),
            flag,
            v,
            "--json",
            s(&json),
        ]);
        refused(&r, &[flag, v]);
        assert!(!json.exists());
    }
    let out = dir.path().join("t.safetensors");
    for (flag, v) in [
        ("--epochs", "0"),
        ("--warmup-epochs", "NaN"),
        ("--warmup-epochs", "-1"),
        ("--lr", "NaN"),
        ("--temperature", "0"),
        ("--momentum", "1.5"),
        ("--wd", "-1"),
        ("--lars-eta", "0"),
    ] {
        let r = memprune(&[
            "train",
            "--framework",
            "simclr",
            "--widths",
            "2,4,4,4,4,8,8,8",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "-q",
            flag,
            v,
        ]);
        refused(&r, &[flag]);
        assert!(!out.exists() && !memprune::train::state_path(&out).exists());
    }
    // Counts of points, views and draws that would measure nothing.
    let m = parity("resnet9_c1.safetensors");
    for metric in ["unit", "layer"] {
        let r = memprune(&[
            "measure",
            metric,
            s(&m),
            "--points",
            "0",
            "--json",
            s(&json),
        ]);
        refused(&r, &["--points must be at least 1"]);
    }
    for (flag, v) in [("--points", "0"), ("--views", "0"), ("--draws", "0")] {
        let r = memprune(&[
            "experiment",
            "prune",
            s(&m),
            "--data",
            s(&data),
            flag,
            v,
            "--json",
            s(&json),
        ]);
        refused(&r, &[flag]);
    }
    assert!(!json.exists());
}

fn policy_refused(body: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let p = dir.path().join("policy.yaml");
    let text = body
        .replace("MODEL", s(&parity("resnet9_c1.safetensors")))
        .replace("OUT", s(&out));
    std::fs::write(&p, text).unwrap();
    for cmd in [
        vec!["--policy", s(&p), "-q"],
        vec!["plan", "--policy", s(&p)],
    ] {
        let mut n = vec!["policy.yaml"];
        n.extend_from_slice(needles);
        refused(&memprune(&cmd), &n);
        assert!(!out.exists());
    }
}

const TAIL: &str = "evaluation: {speed: false, probe: false}\noutput: {checkpoint: OUT}\n";

#[test]
fn policies_that_select_nothing_or_contradict_themselves_are_refused() {
    let prune = "actions:\n  - prune: {criterion: unitmem, fraction: 0.25}\n";
    policy_refused(
        &format!("model: MODEL\ndata: {{points: 8, range: 0..8}}\n{prune}{TAIL}"),
        &["line 2", "points", "range"],
    );
    policy_refused(
        &format!("model: MODEL\ndata: {{points: 0}}\n{prune}{TAIL}"),
        &["data.points"],
    );
    for sel in ["{by: dlayermem, top: 0}", "{last: 0}", "{layers: []}"] {
        policy_refused(
            &format!("model: MODEL\nreference: MODEL\nactions:\n  - train: {sel}\n{TAIL}"),
            &["line 4", "actions[0].train", "selects no layer"],
        );
    }
    policy_refused(
        &format!(
            "model: MODEL\nactions:\n  - prune: {{criterion: random, fraction: 0.1, layers: []}}\n{TAIL}"
        ),
        &["line 3", "layers is empty"],
    );
}

#[test]
fn parse_errors_are_one_line_and_negative_numbers_are_read_as_numbers() {
    refused(
        &memprune(&["measure", "unit", "--frobnicate"]),
        &["--frobnicate", "memprune measure unit --help"],
    );
    refused(&memprune(&["measure"]), &["needs a subcommand"]);
    refused(
        &memprune(&["train", "--framework", "simclr"]),
        &["--out", "memprune train --help"],
    );
    // A negative value is the flag's value, refused by the value's own check.
    refused(
        &memprune(&["measure", "unit", "--views", "-3"]),
        &["-3", "--views"],
    );
    refused(&memprune(&["inspect", "--size", "-1"]), &["-1", "--size"]);
    // Where a negative value makes sense, it is read.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("u.json");
    common::ok(&memprune(&[
        "measure",
        "unit",
        s(&parity("resnet9_c1.safetensors")),
        "--points",
        "2",
        "--views",
        "1",
        "--no-control",
        "--mean",
        "-0.5",
        "--std",
        "2",
        "-q",
        "--json",
        s(&json),
    ]));
    let j = common::json(&json);
    assert_eq!(j["normalization"]["mean"][0].as_f64(), Some(-0.5), "{j}");
    // --help and --version still print as usual, with exit code 0.
    assert!(memprune(&["--version"]).status.success());
    assert!(memprune(&["measure", "unit", "--help"]).status.success());
}

#[test]
fn errors_from_deep_inside_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // An integer weight: no more candle's bare "unexpected dtype".
    inspect_refused(
        dir.path(),
        "resnet9_c1.safetensors",
        |t| {
            let w = t["block2.conv.weight"].to_dtype(DType::I64).unwrap();
            t.insert("block2.conv.weight".into(), w);
        },
        &["block2.conv.weight", "I64", "floating point"],
    );
    // Images too small for the pools: no more a bare "max_pool2d: bad geometry".
    let tiny = dir.path().join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    common::write_idx(
        &tiny.join("train-images-idx3-ubyte"),
        0x803,
        &[6, 4, 4],
        &[7; 96],
    );
    common::write_idx(
        &tiny.join("train-labels-idx1-ubyte"),
        0x801,
        &[6],
        &[0, 1, 0, 1, 0, 1],
    );
    let r = memprune(&[
        "measure",
        "unit",
        s(&parity("resnet9_c1.safetensors")),
        "--data",
        s(&tiny),
        "--points",
        "2",
        "--views",
        "2",
        "--no-control",
        "-q",
    ]);
    refused(&r, &["tiny", "resnet9_c1.safetensors", "4x4", "do not fit"]);
}

#[test]
fn an_error_is_printed_as_one_line_whatever_its_causes_hold() {
    use memprune::report::error_line::error_line;
    // A cause with a backtrace appended (as candle's, under RUST_BACKTRACE=1) and a
    // context: the context and the first line of each cause.
    let e = anyhow::anyhow!("shape mismatch in add\n   0: candle_core::error::Error::bt\n   1: x")
        .context("data/tiny: model.safetensors");
    assert_eq!(
        error_line(&e),
        "data/tiny: model.safetensors: shape mismatch in add"
    );
    assert_eq!(error_line(&anyhow::anyhow!("plain")), "plain");
}

/// Issue 28: a ViT patch as large as the images leaves one patch; named as such, not as a
/// NaN loss.
#[test]
fn a_vit_patch_as_large_as_the_images_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 20); // 8x8 images
    let out = dir.path().join("t.safetensors");
    let r = memprune(&[
        "train",
        "--arch",
        "vit",
        "--framework",
        "mae",
        "--patch",
        "8",
        "--depth",
        "1",
        "--width",
        "8",
        "--heads",
        "2",
        "--epochs",
        "1",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "-q",
    ]);
    refused(&r, &["--patch 8", "1 patch"]);
    assert!(!out.exists());
}

/// Issue 28: a JPEG cut short is refused (the decoder filled it with gray); 16-bit
/// grayscale PNGs read as one channel, as 8-bit ones do.
#[test]
fn truncated_jpegs_are_refused_and_16_bit_gray_is_one_channel() {
    use memprune::data::folder::read_image_folder;
    let dir = tempfile::tempdir().unwrap();
    let folder = |name: &str, file: &str, bytes: &[u8]| {
        let root = dir.path().join(name);
        for c in ["a", "b"] {
            std::fs::create_dir_all(root.join(c)).unwrap();
            std::fs::write(root.join(c).join(file), bytes).unwrap();
        }
        root
    };
    // Large and varied enough that half the file ends inside the image data.
    let img = image::RgbImage::from_fn(128, 128, |x, y| {
        image::Rgb([((x * 7) ^ (y * 13)) as u8, (x * y) as u8, (x + 3 * y) as u8])
    });
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    assert!(read_image_folder(&folder("whole", "0.jpg", &jpeg)).is_ok());
    let half = folder("half", "0.jpg", &jpeg[..jpeg.len() / 2]);
    let e = format!("{:#}", read_image_folder(&half).unwrap_err());
    assert!(e.contains("0.jpg") && e.contains("cut short"), "{e}");

    let gray = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(8, 8, |x, _| {
        image::Luma([(x * 8000) as u16])
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma16(gray)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let set = read_image_folder(&folder("gray16", "0.png", &png)).unwrap();
    assert_eq!(set.channels, 1);
}

/// Issue 28: ResNets pass the checks a ViT does, in the same place (Checkpoint::check_loaded):
/// a bias without its weight is an incomplete pair, not an unused tensor.
#[test]
fn resnets_refuse_incomplete_pairs_as_vits_do() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["resnet9_c1.safetensors", "resnet18_cifar.safetensors"] {
        inspect_refused(
            dir.path(),
            fixture,
            |t| {
                t.insert("fc.bias".into(), zeros(&[10]));
                t.remove("fc.weight");
            },
            &["fc.bias", "incomplete"],
        );
    }
}
