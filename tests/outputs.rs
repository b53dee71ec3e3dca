//! Outputs: none is written over an input or another output (the overwrite matrix), none
//! is left partial when a run fails or is interrupted, outputs through links and pipes go
//! where they point, and files follow the umask.

mod common;

use common::fashion_unit;

use common::policy_case::{case, write_policy};

use common::{memprune as run, parity as fx, refused, root, s};
use std::path::{Path, PathBuf};

fn snapshot(paths: &[&Path]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The arguments of one SimCLR epoch on `data`, writing `out`, quiet.
fn one_epoch<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut v = vec!["train", "--framework", "simclr", "--data", data];
    v.extend(["--out", out, "--epochs", "1", "-q"]);
    v
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
        let mut v = one_epoch(s(&data), s(out));
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
    let r = run(&fashion_unit(
        "4",
        "2",
        &[
            "--csv",
            s(&a),
            "--dump-views",
            s(&dump),
            "--json",
            s(&blocker.join("b.json")),
        ],
    ));
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
    let r = run(&fashion_unit(
        "4",
        "2",
        &["--csv", s(&a), "--dump-views", s(&dump)],
    ));
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
fn experiment_and_probe_outputs_never_overwrite_an_input_and_appear_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 40);
    let model = dir.path().join("m.safetensors");
    std::fs::copy(fx("resnet9_c1.safetensors"), &model).unwrap();
    let labels = data.join("train-labels-idx1-ubyte");
    let (j, c) = (dir.path().join("t6.json"), dir.path().join("t6.svg"));
    let experiment = |extra: &[&str]| {
        let mut v = common::small_prune(s(&model), s(&data), "mask");
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

/// Issue 28: `train --out` into a folder that does not exist fails before any training.
#[test]
fn train_out_into_a_missing_folder_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::tiny_idx(dir.path(), 12);
    let out = dir.path().join("missing/m.safetensors");
    let t = std::time::Instant::now();
    refused(
        &run(&one_epoch(s(&data), s(&out))),
        &["--out", "does not exist"],
    );
    assert!(t.elapsed().as_secs() < 5);
    assert!(!dir.path().join("missing").exists());
}

/// Outputs get the mode a directly written file would: 0666 less the umask (they used to
/// be 0600 whatever the umask, tempfile's default for the staged file).
#[cfg(unix)]
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unit.json");
    for (umask, mode) in [("022", 0o644), ("027", 0o640)] {
        let _ = std::fs::remove_file(&out);
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_memprune"))
            .args(["measure", "unit", "--points", "10", "--views", "2", "-q"])
            .args(["--no-control", "--json", out.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap();
        common::ok(&st);
        let got = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}: mode {got:o}");
    }
}
