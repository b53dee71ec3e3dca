//! Bounded resources: sizes from user numbers and from files are checked before allocating,
//! views stream in batches so memory is bounded by the batch, layer globs match in linear
//! time, and a gzip bomb is refused after its header.

mod common;

use common::fashion_unit;

use common::policy_case::{case, write_policy};

use common::{memprune, memprune as run, parity, parity as fx, refused, root, s, tiny_idx};

#[test]
fn sizes_from_user_numbers_are_checked_before_allocating() {
    // --dump-views holds every view at once: 10^8 of them are refused before any work.
    let dir = tempfile::tempdir().unwrap();
    let r = run(&fashion_unit(
        "2",
        "100000000",
        &["--dump-views", s(&dir.path().join("views"))],
    ));
    refused(&r, &["--views", "GB"]);
    assert!(!dir.path().join("views").exists());
    let dir = tempfile::tempdir().unwrap();
    let aug = dir.path().join("aug.yaml");
    std::fs::write(&aug, "size: 100000\n").unwrap();
    let r = run(&fashion_unit("2", "2", &["--augment", s(&aug)]));
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

#[test]
fn inspect_sizes_that_do_not_fit_are_refused() {
    let m = parity("resnet9_c1.safetensors");
    refused(&memprune(&["inspect", s(&m), "--size", "0"]), &["--size 0"]);
    // Three 2x2 pools: 4x4 images end at a 0x0 map.
    refused(
        &memprune(&["inspect", s(&m), "--size", "4"]),
        &["--size 4", "resnet9_c1.safetensors", "do not fit"],
    );
    common::ok(&memprune(&["inspect", s(&m), "--size", "8"]));
}

/// Issue 28: sizes a user gives that cannot be allocated are one line naming the flag,
/// before the allocation (they used to abort).
#[test]
fn sizes_beyond_memory_are_refused_before_allocating() {
    let m = parity("resnet9_c1.safetensors");
    refused(
        &memprune(&["inspect", s(&m), "--size", "100000"]),
        &["--size 100000", "resnet9_c1.safetensors", "memory"],
    );
    // A ViT's attention scores grow as the fourth power of the side.
    let vit = common::asset("models/vit-mae-f.safetensors");
    refused(
        &memprune(&["inspect", s(&vit), "--size", "5000"]),
        &["--size 5000", "vit-mae-f.safetensors", "memory"],
    );
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_idx(dir.path(), 20);
    let out = dir.path().join("t.safetensors");
    let train = |extra: &[&str]| {
        let mut a = vec!["train", "--data", s(&data), "--out", s(&out), "-q"];
        a.extend_from_slice(extra);
        memprune(&a)
    };
    refused(
        &train(&[
            "--arch",
            "vit",
            "--framework",
            "mae",
            "--depth",
            "1000000000",
        ]),
        &["--depth", "memory"],
    );
    refused(
        &train(&[
            "--framework",
            "simclr",
            "--widths",
            "1000000000,4,4,4,4,8,8,8",
        ]),
        &["--widths", "memory"],
    );
    assert!(!out.exists());
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
