//! Issue 11, one test per class: no output over an input or another output (the overwrite
//! matrix), no partial output on failure, no panic/abort in the .pth reader, bounded
//! allocations from user numbers, a linear-time glob, a gzip bomb refused early.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fx(name: &str) -> PathBuf {
    root().join("tests/fixtures/parity").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memprune"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// Exit 1, one line on stderr containing every needle.
fn refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not refused: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

/// The data every CLI case here measures on (relative to the repository root).
const FASHION: [&str; 2] = ["--data", "assets/fashion-mnist"];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const POLICY: &str = "model: MODEL\ndata: {path: DATA, points: 8INDICES}\nmetrics: {views: 2}\nactions:\n  - prune: {criterion: unitmem, end: low, fraction: 0.25, mode: remove}\nevaluation: {speed: false, probe: false}\noutput: {checkpoint: CKPT, json: JSON}\n";

struct Case {
    dir: tempfile::TempDir,
    policy: PathBuf,
    model: PathBuf,
    data: PathBuf,
    indices: PathBuf,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    std::fs::copy(fx("resnet9_c1.safetensors"), &model).unwrap();
    let data = root().join("assets/fashion-mnist");
    let indices = dir.path().join("indices.txt");
    std::fs::write(&indices, "0\n1\n2\n3\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    Case {
        dir,
        policy,
        model,
        data,
        indices,
    }
}

fn write_policy(c: &Case, ckpt: &Path, json: &Path, with_indices: bool) {
    let text = POLICY
        .replace("MODEL", s(&c.model))
        .replace("DATA", s(&c.data))
        .replace(
            "8INDICES",
            &if with_indices {
                format!("null, indices: {}", s(&c.indices))
            } else {
                "8".into()
            },
        )
        .replace("CKPT", s(ckpt))
        .replace("JSON", s(json));
    std::fs::write(&c.policy, text).unwrap();
}

fn snapshot(paths: &[&Path]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn policy_outputs_never_overwrite_an_input_or_each_other() {
    let c = case();
    let out = c.dir.path().join("out.safetensors");
    let json = c.dir.path().join("out.json");
    let link = c.dir.path().join("link.json");
    std::os::unix::fs::symlink(&c.policy, &link).unwrap();
    let data_file = c.data.join("train-labels-idx1-ubyte.gz");
    // (checkpoint, json, needle): each output against each input kind, and each other.
    let cases: Vec<(PathBuf, PathBuf, &str)> = vec![
        (c.policy.clone(), json.clone(), "the policy file"),
        (out.clone(), c.policy.clone(), "the policy file"),
        (c.model.clone(), json.clone(), "the model"),
        (out.clone(), c.model.clone(), "the model"),
        (out.clone(), c.indices.clone(), "the indices file"),
        (c.indices.clone(), json.clone(), "the indices file"),
        (out.clone(), data_file.clone(), "the data"),
        (
            out.clone(),
            root().join("assets/models/resnet9-simclr-g.safetensors"),
            "the reference",
        ),
        (out.clone(), out.clone(), "the same file"),
        (out.clone(), link.clone(), "the policy file"),
        (
            c.dir.path().join("./sub/../out.safetensors"),
            out.clone(),
            "the same file",
        ),
    ];
    for (ckpt, j, needle) in cases {
        write_policy(&c, &ckpt, &j, true);
        let before = snapshot(&[&c.policy, &c.model, &c.indices, &data_file]);
        let r = run(&["--policy", s(&c.policy), "-q"]);
        refused(&r, &["policy.yaml", needle]);
        assert_eq!(
            before,
            snapshot(&[&c.policy, &c.model, &c.indices, &data_file]),
            "{ckpt:?} {j:?}"
        );
        if ckpt != c.policy && ckpt != c.model && ckpt != c.indices {
            assert!(!ckpt.exists() || ckpt == j, "{ckpt:?}");
        }
    }
}

#[test]
fn measure_and_train_outputs_never_overwrite_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 20);
    let aug = dir.path().join("aug.yaml");
    std::fs::write(&aug, "flip: 0.5\n").unwrap();
    let model = dir.path().join("m.safetensors");
    std::fs::copy(fx("resnet9_c1.safetensors"), &model).unwrap();
    let labels = data.join("train-labels-idx1-ubyte");
    let a = dir.path().join("a.csv");
    let base = [
        "measure",
        "unit",
        s(&model),
        "--data",
        s(&data),
        "--points",
        "4",
        "--views",
        "2",
        "-q",
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        run(&v)
    };
    let before = snapshot(&[&aug, &model, &labels]);
    refused(
        &with(&["--json", s(&aug), "--augment", s(&aug)]),
        &["the augment file"],
    );
    refused(&with(&["--csv", s(&model)]), &["the checkpoint"]);
    refused(&with(&["--json", s(&labels)]), &["the data"]);
    refused(
        &with(&["--csv", s(&a), "--json", s(&a)]),
        &["the same file"],
    );
    refused(&with(&["--dump-views", s(&data)]), &["the data"]);
    let train = |out: &Path, extra: &[&str]| {
        let mut v = vec![
            "train",
            "--framework",
            "simclr",
            "--data",
            s(&data),
            "--out",
            s(out),
            "--epochs",
            "1",
            "-q",
        ];
        v.extend_from_slice(extra);
        run(&v)
    };
    refused(&train(&labels, &[]), &["--out", "the data"]);
    refused(&train(&model, &["--init", s(&model)]), &["--init"]);
    refused(&train(&aug, &["--augment", s(&aug)]), &["the augment file"]);
    assert_eq!(before, snapshot(&[&aug, &model, &labels]));
    assert!(!a.exists());
}

#[test]
fn a_failed_run_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let a = dir.path().join("new/a.csv");
    let dump = dir.path().join("views");
    // The JSON cannot be written (its folder would be inside a file): the CSV and the dumped
    // views, written before it, must not remain, nor the folders made for them.
    let r = run(&[
        "measure",
        "unit",
        FASHION[0],
        FASHION[1],
        "--points",
        "4",
        "--views",
        "2",
        "-q",
        "--csv",
        s(&a),
        "--dump-views",
        s(&dump),
        "--json",
        s(&blocker.join("b.json")),
    ]);
    refused(&r, &["a-file"]);
    assert!(!a.exists() && !a.parent().unwrap().exists());
    assert!(!dump.exists());
    // A policy whose JSON fails leaves no checkpoint.
    let c = case();
    let ckpt = c.dir.path().join("out/pruned.safetensors");
    write_policy(
        &c,
        &ckpt,
        &c.dir.path().join("x/y").join("..").join("z.json"),
        false,
    );
    std::fs::write(c.dir.path().join("x"), "a file").unwrap();
    let r = run(&["--policy", s(&c.policy), "-q"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(!ckpt.exists() && !ckpt.parent().unwrap().exists());
    // A good run leaves exactly its outputs, and no temporary files.
    let r = run(&[
        "measure",
        "unit",
        FASHION[0],
        FASHION[1],
        "--points",
        "4",
        "--views",
        "2",
        "-q",
        "--csv",
        s(&a),
        "--dump-views",
        s(&dump),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a.parent().unwrap()), ["a.csv"]);
    assert_eq!(names(&dump), ["meta.json", "points.npy", "views.npy"]);
}

#[test]
fn sizes_from_user_numbers_are_checked_before_allocating() {
    let r = run(&[
        "measure",
        "unit",
        FASHION[0],
        FASHION[1],
        "--points",
        "2",
        "--views",
        "100000000",
        "-q",
    ]);
    refused(&r, &["--views", "GB"]);
    let dir = tempfile::tempdir().unwrap();
    let aug = dir.path().join("aug.yaml");
    std::fs::write(&aug, "size: 100000\n").unwrap();
    let r = run(&[
        "measure",
        "unit",
        FASHION[0],
        FASHION[1],
        "--points",
        "2",
        "--views",
        "2",
        "-q",
        "--augment",
        s(&aug),
    ]);
    refused(&r, &["augment size"]);
}

#[test]
fn layer_globs_match_in_linear_time() {
    use memprune::plan::policy::glob_match;
    let p = format!("{}x", "*".repeat(400));
    let name = "a".repeat(300);
    let t = std::time::Instant::now();
    assert!(!glob_match(&p, &name));
    assert!(glob_match(&format!("{}a", "*".repeat(400)), &name));
    assert!(t.elapsed().as_secs_f64() < 1.0, "{:?}", t.elapsed());
    for (p, n, m) in [
        ("block*", "block1", true),
        ("b?ock1", "block1", true),
        ("*res*", "res2", true),
        ("*.weight", "block1.conv.weight", true),
        ("block", "block1", false),
        ("", "", true),
        ("*", "", true),
        ("?", "", false),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXbYd", false),
    ] {
        assert_eq!(glob_match(p, n), m, "{p} {n}");
    }
}

#[test]
fn a_gzip_bomb_is_refused_after_its_header() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // Declares 10 images of 8x8 (640 bytes), inflates to 64 MB.
    let mut header = 0x803u32.to_be_bytes().to_vec();
    for d in [10u32, 8, 8] {
        header.extend(d.to_be_bytes());
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let p = dir.path().join("bomb-images-idx3-ubyte.gz");
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let t = std::time::Instant::now();
    let e = format!(
        "{:#}",
        memprune::data::idx::read_idx_images(&p).unwrap_err()
    );
    assert!(e.contains("inflates past"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 2.0);
}

// ---- .pth: a zip writer like torch.save's (stored entries, data aligned to 64 bytes) ----

fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in entries {
        let off = out.len();
        let pad = (64 - (off + 30 + name.len()) % 64) % 64;
        let le16 = |v: usize| (v as u16).to_le_bytes();
        let le32 = |v: usize| (v as u32).to_le_bytes();
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(le32(data.len()));
        out.extend(le32(data.len()));
        out.extend(le16(name.len()));
        out.extend(le16(pad));
        out.extend(name.as_bytes());
        out.extend(vec![0u8; pad]);
        out.extend(data);
        cd.extend(0x0201_4b50u32.to_le_bytes());
        cd.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend(le32(data.len()));
        cd.extend(le32(data.len()));
        cd.extend(le16(name.len()));
        cd.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cd.extend(le32(off));
        cd.extend(name.as_bytes());
    }
    let cd_off = out.len();
    out.extend(&cd);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((cd.len() as u32).to_le_bytes());
    out.extend((cd_off as u32).to_le_bytes());
    out.extend([0, 0]);
    out
}

fn st(x: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((x.len() as u32).to_le_bytes());
    v.extend(x.as_bytes());
    v
}

/// `{name: _rebuild_tensor_v2((storage, FloatStorage, "0", cpu, n), 0, shape, stride)}`,
/// with `rebuild_args`/`pid_fields` cut short when asked.
fn state_pickle(name: &str, shape: &[u32], rebuild_args: usize, pid_fields: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(st(name));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    let mut pid = vec![b'('];
    let fields: [Vec<u8>; 5] = [
        st("storage"),
        b"ctorch\nFloatStorage\n".to_vec(),
        st("0"),
        st("cpu"),
        vec![b'K', 4],
    ];
    for f in fields.iter().take(pid_fields) {
        pid.extend(f);
    }
    pid.extend(b"tQ");
    let mut size = vec![b'('];
    let mut stride = vec![b'('];
    let mut acc = 1u64;
    let mut strides = Vec::new();
    for &d in shape.iter().rev() {
        strides.push(acc.min(1 << 30) as u32);
        acc = acc.saturating_mul(d as u64);
    }
    strides.reverse();
    for (&d, &s) in shape.iter().zip(&strides) {
        size.push(b'J');
        size.extend(d.to_le_bytes());
        stride.push(b'J');
        stride.extend(s.to_le_bytes());
    }
    size.push(b't');
    stride.push(b't');
    let args = [pid, vec![b'K', 0], size, stride, vec![0x89]];
    for a in args.iter().take(rebuild_args) {
        p.extend(a);
    }
    p.extend(b"tRu.");
    p
}

fn torch_zip(stem: &str, pickle: Vec<u8>) -> Vec<u8> {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    zip(&[
        (format!("{stem}/data.pkl"), pickle),
        (format!("{stem}/byteorder"), b"little".to_vec()),
        (format!("{stem}/data/0"), data),
    ])
}

fn pth_err(bytes: &[u8]) -> String {
    format!("{:#}", memprune::pth::read_state_dict(bytes).unwrap_err())
}

#[test]
fn pth_reader_reads_torch_zips_of_any_stem_and_the_real_fixture() {
    for stem in [
        "a",
        "abcdefghijklmnopqrstu",
        "abcdefghijklmnopqrstuv",
        &"s".repeat(61),
    ] {
        let t = memprune::pth::read_state_dict(&torch_zip(stem, state_pickle("w", &[2, 2], 5, 5)))
            .unwrap();
        assert_eq!(t.len(), 1, "{stem}");
        assert_eq!(
            t[0].1.to_vec2::<f32>().unwrap(),
            [[1.0, 2.0], [3.0, 4.0]],
            "{stem}"
        );
    }
    // The real torch.save file (ZIP64 records, Lightning nesting) reads as before.
    let bytes = std::fs::read(fx("resnet9_c1_lightning.pth")).unwrap();
    let t = memprune::pth::read_state_dict(&bytes).unwrap();
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
        let _ = memprune::pth::read_state_dict(&good[..n]);
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
