//! Reading checkpoints: formats, prefixes, and one clear error for each kind of bad file.

use candle_core::Tensor;
use memprune::checkpoint::{write_safetensors_atomic, Checkpoint};
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

fn load_err(path: &Path) -> String {
    format!(
        "{:#}",
        Encoder::load(path, &LoadOptions::default()).unwrap_err()
    )
}

fn tensors(name: &str) -> BTreeMap<String, Tensor> {
    Checkpoint::load(&fx(name), None).unwrap().tensors
}

fn reference_taps(name: &str) -> Vec<Tensor> {
    let enc = Encoder::load(&fx(name), &LoadOptions::default()).unwrap();
    let io =
        candle_core::safetensors::load(fx("resnet9_c1_io.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    enc.forward_taps(&io["input"]).unwrap()
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
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
    let bytes = std::fs::read(fx("resnet9_c1.safetensors")).unwrap();
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
    let enc = Encoder::load(&fx("resnet9_c1.safetensors"), &LoadOptions::default()).unwrap();
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
