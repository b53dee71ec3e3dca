//! Issue 11, one test per class: no output over an input or another output (the overwrite
//! matrix), no partial output on failure, no panic/abort in the .pth reader, bounded
//! allocations from user numbers, a linear-time glob, a gzip bomb refused early.

mod common;

use common::pth::{st, state_pickle, torch_zip};
use common::{memprune as run, parity as fx, refused, root, s};
use std::path::{Path, PathBuf};

/// The data every CLI case here measures on (relative to the repository root).
const FASHION: [&str; 2] = ["--data", "assets/fashion-mnist"];

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
    // --dump-views holds every view at once: 10^8 of them are refused before any work.
    let dir = tempfile::tempdir().unwrap();
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
        "--dump-views",
        s(&dir.path().join("views")),
    ]);
    refused(&r, &["--views", "GB"]);
    assert!(!dir.path().join("views").exists());
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

/// The peak resident memory (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

#[test]
fn views_stream_in_batches_so_memory_is_bounded_by_batch_not_k() {
    // 10^8 views of 2 points would be 313 GB at once; streamed in batches of 64 the run
    // starts and stays small. It is stopped after a few seconds of measuring.
    for metric in ["unit", "layer"] {
        let mut args = vec![
            "measure",
            metric,
            "--points",
            "2",
            "--views",
            "100000000",
            "--batch",
            "64",
            "--no-control",
            "-q",
        ];
        if metric == "layer" {
            args.extend(["--per-point"]);
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_memprune"))
            .args(&args)
            .current_dir(root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(4));
        let running = child.try_wait().unwrap().is_none();
        let peak = peak_rss(child.id());
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert!(
            running,
            "{metric}: exited early: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peak = peak.expect("VmHWM of the running process");
        assert!(peak < 1 << 30, "{metric}: peak RSS {peak} bytes");
    }
}

#[test]
fn streamed_views_give_the_numbers_of_views_in_one_batch() {
    // Batches smaller than a point's views take the streaming path; the numbers must be
    // those of a batch holding them all (UnitMem K = 10; LayerMem 2K = 8 views and K = 4
    // clean pairs).
    let dir = tempfile::tempdir().unwrap();
    let m = fx("resnet9_c1.safetensors");
    let measure = |args: &[&str], batch: &str, name: &str| {
        let out = dir.path().join(name);
        let mut a = vec!["measure"];
        a.extend_from_slice(args);
        a.extend([
            s(&m),
            "--points",
            "5",
            "--batch",
            batch,
            "-q",
            "--json",
            s(&out),
        ]);
        common::ok(&run(&a));
        let j = common::json(&out);
        (
            j["layers"].clone(),
            j.get("per_point").cloned(),
            j.get("control_per_point").cloned(),
        )
    };
    let unit = ["unit", "--views", "10"];
    assert_eq!(
        measure(&unit, "256", "u1.json"),
        measure(&unit, "3", "u2.json")
    );
    for pairing in ["views", "clean"] {
        let layer = [
            "layer",
            "--views",
            "4",
            "--pairing",
            pairing,
            "--per-point",
            "--reference",
        ];
        let mut with_ref = layer.to_vec();
        // The same widths, other (rounded) weights: SSLMem' is not 0.
        let g = s(&fx("resnet9_c1_bf16.safetensors")).to_string();
        with_ref.push(&g);
        let a = measure(&with_ref, "256", "l1.json");
        let b = measure(&with_ref, "3", "l2.json");
        let pp = a.1.as_ref().expect("per-point scores");
        assert!(pp[0]["sslmem"][0].as_f64().unwrap() != 0.0, "{pp}");
        assert_eq!(a, b, "{pairing}");
    }
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
    let bytes = std::fs::read(fx("resnet9_c1_lightning.pth")).unwrap();
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
fn experiment_and_probe_outputs_never_overwrite_an_input_and_appear_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 40);
    let model = dir.path().join("m.safetensors");
    std::fs::copy(fx("resnet9_c1.safetensors"), &model).unwrap();
    let labels = data.join("train-labels-idx1-ubyte");
    let (j, c) = (dir.path().join("t6.json"), dir.path().join("t6.svg"));
    let experiment = |extra: &[&str]| {
        let mut v = vec![
            "experiment",
            "prune",
            s(&model),
            "--data",
            s(&data),
            "--points",
            "20",
            "--views",
            "2",
            "--draws",
            "1",
            "--modes",
            "mask",
            "-q",
        ];
        v.extend_from_slice(extra);
        run(&v)
    };
    let before = snapshot(&[&model, &labels]);
    // Each output against each input kind, and against the other output.
    refused(
        &experiment(&["--json", s(&model)]),
        &["--json", "the checkpoint"],
    );
    refused(
        &experiment(&["--chart", s(&labels)]),
        &["--chart", "the data"],
    );
    refused(
        &experiment(&["--json", s(&j), "--chart", s(&j)]),
        &["the same file"],
    );
    let probe = |extra: &[&str]| {
        let mut v = vec!["probe", s(&model), "--data", s(&data), "--steps", "5"];
        v.extend_from_slice(extra);
        run(&v)
    };
    refused(
        &probe(&["--json", s(&model)]),
        &["--json", "the checkpoint"],
    );
    refused(&probe(&["--json", s(&labels)]), &["--json", "the data"]);
    let r = run(&[
        "probe",
        "--random-like",
        s(&model),
        "--data",
        s(&data),
        "--json",
        s(&model),
    ]);
    refused(&r, &["--json", "--random-like"]);
    assert_eq!(before, snapshot(&[&model, &labels]));
    assert!(!j.exists() && !c.exists());
    // The chart cannot be written (its folder would be inside a file): the JSON, staged
    // before it, must not appear either.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let r = experiment(&["--json", s(&j), "--chart", s(&blocker.join("t6.svg"))]);
    refused(&r, &["a-file"]);
    assert!(!j.exists());
    // A good run writes both.
    common::ok(&experiment(&["--json", s(&j), "--chart", s(&c)]));
    assert!(j.exists() && c.exists());
}

/// Issue 28: an output that is an input under another path (a hard link: the same device
/// and inode, as a bind mount gives) is refused; a pipe is written in place, not renamed
/// over; a symlink to a file stays a symlink and its target gets the output.
#[cfg(unix)]
#[test]
fn outputs_through_links_and_pipes_are_written_where_they_point() {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = common::tiny_idx(d, 12);
    let aug = d.join("aug.yaml");
    std::fs::write(&aug, "flip_p: 0.5\n").unwrap();
    let measure = |extra: &[&str]| {
        let mut v = vec![
            "measure",
            "unit",
            "--data",
            s(&data),
            "--points",
            "4",
            "--views",
            "1",
            "--no-control",
            "-q",
            "--augment",
            s(&aug),
        ];
        v.extend_from_slice(extra);
        run(&v)
    };
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    let linked = other.join("aug-link.json");
    std::fs::hard_link(&aug, &linked).unwrap();
    refused(&measure(&["--json", s(&linked)]), &["the augment file"]);
    assert_eq!(std::fs::read_to_string(&aug).unwrap(), "flip_p: 0.5\n");

    let target = other.join("real.csv");
    std::fs::write(&target, "old").unwrap();
    let link = d.join("out.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    common::ok(&measure(&["--csv", s(&link)]));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .starts_with("layer,unit"));

    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // The read end, open without waiting for a writer, with a buffer the JSON fits in.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    use std::os::fd::AsRawFd;
    assert!(unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) } > 0);
    common::ok(&measure(&["--json", s(&fifo)]));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let mut got = String::new();
    std::io::Read::read_to_string(&mut reader, &mut got).unwrap();
    assert!(got.contains("\"layers\""), "{got}");
}

/// Issue 28: SIGTERM (or SIGINT) while a policy is evaluated removes its staged files and
/// the folders it created for its outputs.
#[cfg(unix)]
#[test]
fn an_interrupt_removes_staged_outputs_and_created_folders() {
    let c = case();
    let out = c.dir.path().join("out");
    write_policy(
        &c,
        &out.join("sub/ckpt.safetensors"),
        &out.join("sub/r.json"),
        false,
    );
    let text = std::fs::read_to_string(&c.policy)
        .unwrap()
        .replace("probe: false", "probe: true");
    std::fs::write(&c.policy, text).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_memprune"))
        .args(["--policy", s(&c.policy), "-q"])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let staged = || {
        std::fs::read_dir(out.join("sub"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false)
    };
    let t = std::time::Instant::now();
    while !staged() && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(staged(), "no staged file appeared");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted (SIGTERM)"));
    let left: Vec<_> = walk(&out);
    assert!(!out.exists(), "left: {left:?}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(d) {
        Ok(r) => r
            .flatten()
            .flat_map(|e| {
                let mut v = vec![e.path()];
                v.extend(walk(&e.path()));
                v
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Issue 28: YAML files are bounded before serde_yaml parses them (size, aliases, nesting),
/// and a UTF-8 byte-order mark is read as the start of the text.
#[test]
fn yaml_bombs_and_devices_are_refused_fast_and_a_bom_is_read() {
    let c = case();
    let t = std::time::Instant::now();
    refused(&run(&["--policy", "/dev/zero"]), &["/dev/zero", "1 MiB"]);
    let aug = c.dir.path().join("aug.yaml");
    let bomb = format!(
        "s: &s {}\nl: [{}]\n",
        "x".repeat(10_000),
        vec!["*s"; 1000].join(", ")
    );
    std::fs::write(&aug, &bomb).unwrap();
    refused(
        &run(&["measure", "unit", "--points", "4", "--augment", s(&aug)]),
        &[s(&aug), "aliases"],
    );
    std::fs::write(&c.policy, "[".repeat(200_000)).unwrap();
    refused(
        &run(&["--policy", s(&c.policy)]),
        &[s(&c.policy), "nested deeper"],
    );
    assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    // A BOM: the policy reads (and runs) as without one.
    let json = c.dir.path().join("r.json");
    write_policy(&c, &c.dir.path().join("ck.safetensors"), &json, false);
    let text = std::fs::read_to_string(&c.policy).unwrap();
    std::fs::write(&c.policy, format!("\u{feff}{text}")).unwrap();
    common::ok(&run(&["--policy", s(&c.policy), "-q"]));
    assert!(json.is_file());
}

/// Issue 28: `train --out` into a folder that does not exist fails before any training.
#[test]
fn train_out_into_a_missing_folder_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 12);
    let out = dir.path().join("missing/m.safetensors");
    let t = std::time::Instant::now();
    refused(
        &run(&[
            "train",
            "--framework",
            "simclr",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--epochs",
            "1",
            "-q",
        ]),
        &["--out", "does not exist"],
    );
    assert!(t.elapsed().as_secs() < 5);
    assert!(!dir.path().join("missing").exists());
}
