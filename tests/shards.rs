//! Shards: 4 local shard processes (examples/shards_local.sh) merge to one run bit for bit,
//! for unit, class and layer; partials that do not belong together are refused with one
//! line and nothing written; `--shard auto` reads Slurm's and Kubernetes' variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{ok, refused, root, s};

const SCHEDULER_VARS: [&str; 7] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
    "MEMPRUNE_SHARD_COUNT",
];

/// memprune on one thread with only the scheduler variables in `env` set.
fn memprune_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut set = vec![("RAYON_NUM_THREADS", "1")];
    set.extend_from_slice(env);
    common::memprune_env(args, &set, &SCHEDULER_VARS)
}

/// The measure arguments of each metric: small, with the control, on the embedded f (and g).
fn measure_args(metric: &str) -> Vec<&'static str> {
    match metric {
        "unit" => vec!["measure", "unit", "--points", "30", "--views", "2"],
        "class" => vec!["measure", "class", "--points", "30", "--views", "2"],
        _ => vec![
            "measure",
            "layer",
            "--points",
            "30",
            "--views",
            "2",
            "--per-point",
        ],
    }
}

/// Runs examples/shards_local.sh with `n` shards; returns the merge's stdout.
fn local_shards(n: usize, dir: &Path, args: &[&str], merge_args: &str) -> Output {
    Command::new("bash")
        .arg(root().join("examples/shards_local.sh"))
        .arg(n.to_string())
        .arg(dir)
        .args(args)
        .env("MEMPRUNE", env!("CARGO_BIN_EXE_memprune"))
        .env("MERGE_ARGS", merge_args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn four_local_shard_processes_merge_to_one_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for metric in ["unit", "class", "layer"] {
        let args = measure_args(metric);
        let (one_json, one_csv) = (
            dir.path().join(format!("{metric}-one.json")),
            dir.path().join(format!("{metric}-one.csv")),
        );
        let mut one = args.clone();
        one.extend(["-q", "--json", s(&one_json), "--csv", s(&one_csv)]);
        let one_out = ok(&memprune_env(&one, &[]));

        let shards = dir.path().join(format!("{metric}-shards"));
        let (m_json, m_csv) = (
            dir.path().join(format!("{metric}-merged.json")),
            dir.path().join(format!("{metric}-merged.csv")),
        );
        let merge_args = format!("--json {} --csv {}", s(&m_json), s(&m_csv));
        let merged_out = ok(&local_shards(4, &shards, &args, &merge_args));
        for i in 0..4 {
            assert!(shards.join(format!("shard-{i}.partial")).is_file());
        }
        assert_eq!(
            std::fs::read(&one_json).unwrap(),
            std::fs::read(&m_json).unwrap(),
            "{metric}: JSON"
        );
        assert_eq!(
            std::fs::read(&one_csv).unwrap(),
            std::fs::read(&m_csv).unwrap(),
            "{metric}: CSV"
        );
        assert_eq!(one_out, merged_out, "{metric}: printed output");
        // The run really had a control and every point.
        let j = common::json(&m_json);
        assert_eq!(j["points"].as_array().unwrap().len(), 30, "{metric}");
        assert!(!j["control"]["points"].is_null(), "{metric}");
    }
}

/// Writes shard `i` of `n` of `measure unit` on `model` to `dir/name`.
fn shard(model: Option<&Path>, i: usize, n: usize, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let spec = format!("{i}/{n}");
    let mut args = vec!["measure", "unit"];
    if let Some(m) = model {
        args.push(s(m));
    }
    args.extend([
        "--points",
        "20",
        "--views",
        "1",
        "-q",
        "--shard",
        &spec,
        "--partial",
        s(&out),
    ]);
    ok(&memprune_env(&args, &[]));
    out
}

#[test]
fn partials_that_do_not_belong_together_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f: Vec<PathBuf> = (0..4)
        .map(|i| shard(None, i, 4, d, &format!("f{i}.partial")))
        .collect();
    let g = root().join("assets/models/resnet9-simclr-g.safetensors");
    let g3 = shard(Some(&g), 3, 4, d, "g3.partial");
    let json = d.join("merged.json");
    let merge = |files: &[&Path]| {
        let mut a = vec!["merge"];
        a.extend(files.iter().map(|p| s(p)));
        a.extend(["--json", s(&json)]);
        memprune_env(&a, &[])
    };
    // All four of f: fine (and the output appears).
    ok(&merge(&[&f[2], &f[0], &f[3], &f[1]]));
    assert!(json.is_file());
    std::fs::remove_file(&json).unwrap();
    // Shards of two checkpoints.
    refused(
        &merge(&[&f[0], &f[1], &f[2], &g3]),
        &[s(&g3), "not a shard of the same run", "digests.checkpoint"],
    );
    // A missing shard.
    refused(&merge(&[&f[0], &f[1], &f[3]]), &["shard 2 of 4 missing"]);
    // An overlap: the same shard twice (a copy under another name).
    let again = d.join("again.partial");
    std::fs::copy(&f[1], &again).unwrap();
    refused(
        &merge(&[&f[0], &f[1], &again, &f[2], &f[3]]),
        &[s(&again), "shard 1/4 again", "overlap"],
    );
    // Shards of another split into parts.
    let other = shard(None, 1, 3, d, "other.partial");
    refused(
        &merge(&[&f[0], &other, &f[2], &f[3]]),
        &[s(&other), "3 shards"],
    );
    // Not a partial at all.
    let junk = d.join("junk.partial");
    std::fs::write(&junk, b"{\"format\": \"something\"}").unwrap();
    refused(
        &merge(&[&f[0], &junk]),
        &[s(&junk), "not a memprune partial result"],
    );
    // A partial cannot be written over an input, and merge never writes over a partial.
    refused(
        &memprune_env(
            &[
                "merge",
                s(&f[0]),
                s(&f[1]),
                s(&f[2]),
                s(&f[3]),
                "--json",
                s(&f[1]),
            ],
            &[],
        ),
        &["refusing to write over"],
    );
    assert!(!json.exists());
    // --shard needs --partial; --partial excludes --json.
    refused(
        &memprune_env(&["measure", "unit", "--shard", "0/2"], &[]),
        &["--partial"],
    );
}

/// The shard `--shard auto` picks under the scheduler variables `env`.
fn auto_shard(env: &[(&str, &str)], extra: &[&str]) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.partial");
    let mut args = vec![
        "measure",
        "unit",
        "--points",
        "8",
        "--views",
        "1",
        "--no-control",
        "-q",
        "--shard",
        "auto",
        "--partial",
        s(&out),
    ];
    args.extend(extra);
    ok(&memprune_env(&args, env));
    let j = common::json(&out);
    (
        j["shard"]["index"].as_u64().unwrap() as usize,
        j["shard"]["count"].as_u64().unwrap() as usize,
    )
}

#[test]
fn shard_auto_reads_slurm_and_kubernetes_variables() {
    // A Slurm array --array=1-4, task 3: shard 2 of 4.
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "4"),
        ("SLURM_ARRAY_TASK_STEP", "1"),
    ];
    assert_eq!(auto_shard(&slurm, &[]), (2, 4));
    // --array=0-2, task 0.
    assert_eq!(
        auto_shard(
            &[
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "3")
            ],
            &[]
        ),
        (0, 3)
    );
    // A Kubernetes Indexed Job: the index from the Job, the count from the variable or
    // from --shard-count.
    let k8s = [("JOB_COMPLETION_INDEX", "1"), ("MEMPRUNE_SHARD_COUNT", "5")];
    assert_eq!(auto_shard(&k8s, &[]), (1, 5));
    assert_eq!(auto_shard(&k8s, &["--shard-count", "2"]), (1, 2));
    // Nothing set, or a Job without a count: one clear line.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.partial");
    // `measure unit` of 8 points, shard `shard` (with `extra`), under the variables `env`.
    let unit = |shard: &str, extra: &[&str], env: &[(&str, &str)]| {
        let args = ["measure", "unit", "--points", "8", "--shard", shard];
        memprune_env(&[&args[..], extra, &["--partial", s(&out)]].concat(), env)
    };
    let run = |env: &[(&str, &str)]| unit("auto", &[], env);
    refused(&run(&[]), &["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]);
    refused(
        &run(&[("JOB_COMPLETION_INDEX", "0")]),
        &["MEMPRUNE_SHARD_COUNT"],
    );
    // Shard counts beyond the points, explicit or from the scheduler (issue 28).
    refused(
        &run(&[("JOB_COMPLETION_INDEX", "0"), ("MEMPRUNE_SHARD_COUNT", "9")]),
        &["--shard 0/9", "at most 8"],
    );
    let huge = ["--shard-count", "18446744073709551615"];
    refused(
        &unit("auto", &huge, &[("JOB_COMPLETION_INDEX", "0")]),
        &["at most"],
    );
    refused(
        &unit("0/1000000000", &[], &[]),
        &["--shard 0/1000000000", "at most"],
    );
    assert!(!out.exists());
}

#[test]
fn an_edited_partial_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f: Vec<PathBuf> = (0..2)
        .map(|i| shard(None, i, 2, d, &format!("f{i}.partial")))
        .collect();
    let json = d.join("merged.json");
    let merge = || memprune_env(&["merge", s(&f[0]), s(&f[1]), "--json", s(&json)], &[]);
    ok(&merge());
    std::fs::remove_file(&json).unwrap();
    // A shard index past the count (panicked before), with the digest recomputed so that
    // the contents are what is checked.
    let mut p = memprune::shard::partial::Partial::read(&f[1]).unwrap();
    p.shard.index = 5;
    p.seal();
    std::fs::write(&f[1], p.to_json().unwrap()).unwrap();
    refused(&merge(), &[s(&f[1]), "index must be below the count"]);
    // Any edit without it: the digest.
    p.shard.index = 1;
    if let memprune::shard::partial::State::Unit { train, .. } = &mut p.state {
        train.layers[0].max[0] = f64::NAN;
    }
    std::fs::write(&f[1], p.to_json().unwrap()).unwrap();
    refused(&merge(), &[s(&f[1]), "digest does not match"]);
    // /dev/zero as a partial: at once.
    refused(
        &memprune_env(&["merge", s(&f[0]), "/dev/zero"], &[]),
        &["/dev/zero", "not a memprune partial result"],
    );
    assert!(!json.exists());
}
