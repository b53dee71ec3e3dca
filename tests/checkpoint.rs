//! Reading checkpoints: formats, prefixes, and one clear error for each kind of bad file; the
//! PyTorch `.pth` reader on torch zips of any stem, malicious or cut-short pickles (errors,
//! never a panic or an abort) and errors that name the file and the real cause.

use candle_core::Tensor;
use memprune::checkpoint::{write_safetensors_atomic, Checkpoint};
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::parity;
use common::pth::{st, state_pickle, torch_zip};
use common::{memprune, memprune as run, refused, s};

fn load_err(path: &Path) -> String {
    format!(
        "{:#}",
        Encoder::load(path, &LoadOptions::default()).unwrap_err()
    )
}

fn tensors(name: &str) -> BTreeMap<String, Tensor> {
    Checkpoint::load(&parity(name), None).unwrap().tensors
}

fn reference_taps(name: &str) -> Vec<Tensor> {
    let enc = Encoder::load(&parity(name), &LoadOptions::default()).unwrap();
    let io = candle_core::safetensors::load(
        parity("resnet9_c1_io.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    enc.forward_taps(&io["input"]).unwrap()
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| common::tensors::max_abs(&(x - y).unwrap()))
        .fold(0.0, f64::max)
}

#[test]
fn pytorch_pth_with_nesting_and_prefix_loads_like_safetensors() {
    let a = reference_taps("resnet9_c1.safetensors");
    let b = reference_taps("resnet9_c1_lightning.pth");
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn wrapper_prefixes_are_stripped_and_prefix_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let t: BTreeMap<String, Tensor> = tensors("resnet9_c1.safetensors")
        .into_iter()
        .map(|(k, v)| (format!("module.backbone.{k}"), v))
        .collect();
    let p = dir.path().join("wrapped.safetensors");
    write_safetensors_atomic(&p, &t, &BTreeMap::new(), &[]).unwrap();
    let enc = Encoder::load(&p, &LoadOptions::default()).unwrap();
    assert_eq!(enc.describe(), "resnet9");
    // An explicit prefix strips only that one, which leaves `backbone.` and fails clearly.
    let opts = LoadOptions {
        prefix: Some("module.".into()),
        ..Default::default()
    };
    let e = format!("{:#}", Encoder::load(&p, &opts).unwrap_err());
    assert!(
        e.contains("unknown encoder layout") && e.contains("backbone.block1"),
        "{e}"
    );
    let opts = LoadOptions {
        prefix: Some("module.backbone.".into()),
        ..Default::default()
    };
    assert!(Encoder::load(&p, &opts).is_ok());
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(parity("resnet9_c1.safetensors")).unwrap();
    let p = dir.path().join("cut.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("cut.safetensors") && e.contains("truncated"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn garbage_and_empty_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.safetensors");
    std::fs::write(&p, b"this is not a checkpoint at all, just text").unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("junk.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    std::fs::write(&p, b"").unwrap();
    let e = load_err(&p);
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = load_err(&dir.path().join("absent.safetensors"));
    assert!(
        e.contains("absent.safetensors") && e.contains("cannot read"),
        "{e}"
    );
}

fn write_modified(f: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = tensors("resnet9_c1.safetensors");
    f(&mut t);
    let p = dir.path().join("bad.safetensors");
    write_safetensors_atomic(&p, &t, &BTreeMap::new(), &[]).unwrap();
    (dir, p)
}

#[test]
fn missing_tensor_is_named() {
    let (_d, p) = write_modified(|t| {
        t.remove("block3.bn.running_var");
    });
    let e = load_err(&p);
    assert!(
        e.contains("bad.safetensors") && e.contains("missing tensor `block3.bn.running_var`"),
        "{e}"
    );
}

#[test]
fn wrong_shapes_are_named() {
    let (_d, p) = write_modified(|t| {
        let w = t["block3.conv.weight"].narrow(1, 0, 5).unwrap();
        t.insert("block3.conv.weight".into(), w);
    });
    let e = load_err(&p);
    assert!(
        e.contains("block3.conv.weight") && e.contains("input channels"),
        "{e}"
    );
    let (_d, p) = write_modified(|t| {
        let v = t["block2.bn.bias"].narrow(0, 0, 3).unwrap();
        t.insert("block2.bn.bias".into(), v);
    });
    let e = load_err(&p);
    assert!(e.contains("block2.bn.bias") && e.contains("shape"), "{e}");
    let (_d, p) = write_modified(|t| {
        let w = t["block4.conv.weight"].narrow(0, 0, 3).unwrap();
        t.insert("block4.conv.weight".into(), w);
    });
    let e = load_err(&p);
    assert!(e.contains("block4") && e.contains("shape"), "{e}");
}

#[test]
fn nan_weights_are_refused() {
    let (_d, p) = write_modified(|t| {
        let w = t["block5.conv.weight"].clone();
        let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[3] = f32::NAN;
        t.insert(
            "block5.conv.weight".into(),
            Tensor::from_vec(v, w.dims(), &candle_core::Device::Cpu).unwrap(),
        );
    });
    let e = load_err(&p);
    assert!(e.contains("block5.conv.weight") && e.contains("NaN"), "{e}");
}

#[test]
fn unknown_layout_says_what_was_found_and_expected() {
    let (_d, p) = write_modified(|t| {
        *t = t
            .iter()
            .map(|(k, v)| (k.replace("block", "stage"), v.clone()))
            .collect();
    });
    let e = load_err(&p);
    assert!(
        e.contains("unknown encoder layout") && e.contains("stage1") && e.contains("expected"),
        "{e}"
    );
}

#[test]
fn heads_are_reported_unused() {
    let enc = Encoder::load(&parity("resnet9_c1.safetensors"), &LoadOptions::default()).unwrap();
    assert!(
        !enc.unused.is_empty() && enc.unused.iter().all(|k| k.starts_with("projector.")),
        "{:?}",
        enc.unused
    );
}

#[test]
fn writes_keep_metadata_and_never_overwrite_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let t = tensors("resnet9_c1.safetensors");
    let p = dir.path().join("out.safetensors");
    let meta: BTreeMap<String, String> = [("memprune.test".to_string(), "yes".to_string())].into();
    write_safetensors_atomic(&p, &t, &meta, &[]).unwrap();
    let back = Checkpoint::load(&p, None).unwrap();
    assert_eq!(
        back.metadata.get("memprune.test").map(String::as_str),
        Some("yes")
    );
    let before = std::fs::read(&p).unwrap();
    let e = write_safetensors_atomic(&p, &t, &BTreeMap::new(), &[&p])
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing to write over an input"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn the_same_tensors_and_metadata_give_the_same_bytes() {
    // The safetensors crate writes its metadata map in hash order; memprune's writer
    // sorts it, so two writes (each with a fresh hash seed) agree byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let t = tensors("resnet9_c1.safetensors");
    let meta: BTreeMap<String, String> = (0..40)
        .map(|i| (format!("memprune.key{i}"), format!("[{i}, \"v\"]")))
        .collect();
    let (a, b) = (dir.path().join("a.st"), dir.path().join("b.st"));
    write_safetensors_atomic(&a, &t, &meta, &[]).unwrap();
    write_safetensors_atomic(&b, &t, &meta, &[]).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let back = Checkpoint::load(&a, Some("")).unwrap();
    assert_eq!(back.metadata.get("memprune.key7").unwrap(), "[7, \"v\"]");
}

fn pth_err(bytes: &[u8]) -> String {
    format!(
        "{:#}",
        memprune::checkpoint::pth::read_state_dict(bytes).unwrap_err()
    )
}

#[test]
fn pth_reader_reads_torch_zips_of_any_stem_and_the_real_fixture() {
    for stem in [
        "a",
        "abcdefghijklmnopqrstu",
        "abcdefghijklmnopqrstuv",
        &"s".repeat(61),
    ] {
        let t = memprune::checkpoint::pth::read_state_dict(&torch_zip(
            stem,
            state_pickle("w", &[2, 2], 5, 5),
        ))
        .unwrap();
        assert_eq!(t.len(), 1, "{stem}");
        assert_eq!(
            t[0].1.to_vec2::<f32>().unwrap(),
            [[1.0, 2.0], [3.0, 4.0]],
            "{stem}"
        );
    }
    // The real torch.save file (ZIP64 records, Lightning nesting) reads as before.
    let bytes = std::fs::read(parity("resnet9_c1_lightning.pth")).unwrap();
    let t = memprune::checkpoint::pth::read_state_dict(&bytes).unwrap();
    assert!(t.len() > 20 && t.iter().any(|(k, _)| k.starts_with("module.")));
}

#[test]
fn malicious_pickles_are_errors_not_panics() {
    let e = pth_err(&torch_zip("x", state_pickle("w", &[2, 2], 2, 5)));
    assert!(e.contains("_rebuild_tensor_v2 with 2 arguments"), "{e}");
    let e = pth_err(&torch_zip("x", state_pickle("w", &[2, 2], 5, 1)));
    assert!(e.contains("storage reference with 1 fields"), "{e}");
    let e = pth_err(&torch_zip(
        "x",
        state_pickle("w", &[1 << 30, 1 << 30], 5, 5),
    ));
    assert!(e.contains("storage holds 4 elements"), "{e}");
    let e = pth_err(&torch_zip(
        "x",
        state_pickle("w", &[1 << 30, 1 << 30, 1 << 30, 1 << 30], 5, 5),
    ));
    assert!(e.contains("overflow"), "{e}");
    let e = pth_err(&torch_zip("x", state_pickle("w", &[3, 2], 5, 5)));
    assert!(e.contains("storage holds 4 elements"), "{e}");
    // Deep nesting: a million MARKs; a million nested lists.
    let mut p = vec![0x80, 2];
    p.extend(vec![b'('; 1 << 20]);
    assert!(pth_err(&torch_zip("x", p)).contains("deeper than"));
    let mut p = vec![0x80, 2];
    p.extend(vec![b']'; 1 << 20]);
    p.extend(vec![b'a'; (1 << 20) - 1]);
    p.push(b'.');
    assert!(pth_err(&torch_zip("x", p)).contains("deeper than"));
    // Billion laughs: 30 levels of ten references each; shared, never copied.
    let mut p = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..30 {
        p.push(b'(');
        p.extend([b'h', 0].repeat(10));
        p.extend([b'l', b'q', 0]);
    }
    p.push(b'.');
    let t = std::time::Instant::now();
    assert!(pth_err(&torch_zip("x", p)).contains("no dict of tensors"));
    assert!(t.elapsed().as_secs_f64() < 1.0);
    // Truncated, unknown opcodes, stray stops: errors.
    for p in [
        vec![0x80],
        vec![0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff],
        vec![b'.'],
        vec![b'i'],
    ] {
        pth_err(&torch_zip("x", p));
    }
    // Every prefix of a good file is an error, never a panic.
    let good = torch_zip("x", state_pickle("w", &[2, 2], 5, 5));
    for n in 0..good.len() {
        let _ = memprune::checkpoint::pth::read_state_dict(&good[..n]);
    }
}

#[test]
fn pth_errors_are_one_line_name_the_file_and_the_real_cause() {
    let dir = tempfile::tempdir().unwrap();
    // Tensors nowhere the reader looks: the keys it found are named.
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(st("epoch"));
    p.extend([b'K', 3]);
    p.extend(st("weights"));
    p.extend([b'}', b'u', b'.']);
    let f = dir.path().join("nested.pth");
    std::fs::write(&f, torch_zip("nested", p)).unwrap();
    let r = run(&["inspect", s(&f)]);
    refused(&r, &["nested.pth", "top-level keys: epoch, weights"]);
    // A legacy (non-zip) torch.save file is called that, with the way out.
    let f = dir.path().join("legacy.pth");
    std::fs::write(
        &f,
        [
            0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
        ],
    )
    .unwrap();
    let r = run(&["inspect", s(&f)]);
    refused(&r, &["legacy.pth", "legacy", "re-save"]);
    // A malformed tensor: one line, the file and the tensor named, nothing else printed.
    let f = dir.path().join("short.pth");
    std::fs::write(&f, torch_zip("short", state_pickle("w", &[2, 2], 3, 5))).unwrap();
    let r = run(&["inspect", s(&f)]);
    refused(&r, &["short.pth", "tensor `w`"]);
    assert!(!String::from_utf8_lossy(&r.stderr).contains("skipping"));
}

#[test]
fn pth_errors_give_the_real_cause_and_any_stem_reads() {
    use memprune::checkpoint::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    // Nested under `state_dict` with a broken tensor: the broken tensor is the error, not
    // "key model_state_dict not found" from the last key tried.
    let broken = common::pth::torch_zip(
        "abcdefghijklmnopqrstu",
        common::pth::nested("state_dict", common::pth::state_pickle("w", &[2, 2], 2, 5)),
    );
    let p = dir.path().join("abcdefghijklmnopqrstu.pth");
    std::fs::write(&p, broken).unwrap();
    let r = memprune(&["inspect", s(&p)]);
    refused(
        &r,
        &["abcdefghijklmnopqrstu.pth", "tensor `w`", "2 arguments"],
    );
    assert!(!String::from_utf8_lossy(&r.stderr).contains("model_state_dict"));
    // And a good one with that 21-character stem reads.
    let good = common::pth::torch_zip(
        "abcdefghijklmnopqrstu",
        common::pth::state_pickle("w", &[2, 2], 5, 5),
    );
    std::fs::write(&p, good).unwrap();
    let t = Checkpoint::load(&p, None).unwrap();
    assert_eq!(
        t.tensors["w"].to_vec2::<f32>().unwrap(),
        [[1.0, 2.0], [3.0, 4.0]]
    );
    // A good .pth reads silently (candle's reader printed `skipping: ...` lines).
    let r = memprune(&["inspect", s(&parity("resnet9_c1_lightning.pth"))]);
    assert!(r.status.success());
    assert_eq!(String::from_utf8_lossy(&r.stderr), "");
    // A legacy (non-zip) torch.save file is named as such, not as a bad safetensors file.
    let p = dir.path().join("old.pt");
    std::fs::write(
        &p,
        [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, b'.'],
    )
    .unwrap();
    let r = memprune(&["inspect", s(&p)]);
    refused(&r, &["old.pt", "legacy"]);
    assert!(!String::from_utf8_lossy(&r.stderr).contains("safetensors file"));
}
