//! Users' own image folders: unseen points from a test/ subfolder, --test-data or --holdout
//! (never the training images silently), one class list for every split, mixed image sizes
//! (--resize, --crop, the checkpoint's default), file names in every output, recorded points
//! refused on other data, the data line with its normalisation, and the embedded default
//! found from the working directory's repository.

use std::path::{Path, PathBuf};

mod common;
use common::{json, memprune, ok, refused, root, s};
use memprune::data::open::open_with;
use memprune::data::{DataOptions, Split};

/// `dir/<class>/<k>.jpg` for each (class, count), images of several sizes (30..70 pixels a
/// side) unless `side` is given.
fn folder(dir: &Path, classes: &[(&str, usize)], side: Option<u32>, key: u64) {
    let mut r = memprune::data::rng::Rng::from_key(&[key]);
    for (c, n) in classes {
        let d = dir.join(c);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..*n {
            let (w, h) = match side {
                Some(s) => (s, s),
                None => (30 + r.below(40) as u32, 30 + r.below(40) as u32),
            };
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 5) as u8, (y * 7) as u8, (r.below(256)) as u8])
            });
            img.save(d.join(format!("{k:03}.jpg"))).unwrap();
        }
    }
}

fn model(name: &str) -> PathBuf {
    common::parity(name)
}

/// The arguments of `measure unit` of `model` on `data`: `points` points, one view each.
fn unit_one_view<'a>(model: &'a str, data: &'a str, points: &'a str) -> Vec<&'a str> {
    vec![
        "measure", "unit", model, "--data", data, "--points", points, "--views", "1",
    ]
}

#[test]
fn a_folder_without_test_split_is_refused_as_its_own_control_and_probe_test() {
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat");
    folder(&flat, &[("cat", 5), ("dog", 5)], Some(32), 1);
    let m = model("resnet18_cifar.safetensors");
    let needles = ["flat", "--test-data DIR", "test/", "--holdout F"];
    refused(&memprune(&unit_one_view(s(&m), s(&flat), "4")), &needles);
    refused(
        &memprune(&["probe", s(&m), "--data", s(&flat), "--steps", "5"]),
        &needles,
    );
    // --holdout: seeded, disjoint, recorded in the JSON and printed.
    let j = dir.path().join("u.json");
    let out = ok(&memprune(
        &[
            &unit_one_view(s(&m), s(&flat), "3")[..],
            &[
                "--holdout",
                "0.3",
                "--holdout-seed",
                "5",
                "--json",
                s(&j),
                "-q",
            ],
        ]
        .concat(),
    ));
    assert!(
        out.contains("--holdout 0.3 (seed 5): 7 of 10 images kept"),
        "{out}"
    );
    assert!(
        out.contains("--holdout 0.3 (seed 5): 3 of 10 images held out"),
        "{out}"
    );
    let j = json(&j);
    assert_eq!(j["data_options"]["holdout"], 0.3);
    assert_eq!(j["data_options"]["holdout_seed"], 5);
    let train: Vec<String> = serde_json::from_value(j["point_names"].clone()).unwrap();
    let unseen: Vec<String> = serde_json::from_value(j["control"]["point_names"].clone()).unwrap();
    assert_eq!(unseen.len(), 3);
    assert!(
        unseen.iter().all(|u| !train.contains(u)),
        "{train:?} {unseen:?}"
    );
    // The library: the two parts are disjoint, cover the folder and follow the seed.
    let o = |seed| DataOptions {
        holdout: Some(0.3),
        holdout_seed: seed,
        ..Default::default()
    };
    let names = |split, seed| {
        let set = open_with(&flat, split, &o(seed)).unwrap();
        (0..set.len())
            .map(|i| set.point_name(i))
            .collect::<Vec<_>>()
    };
    let (tr, te) = (names(Split::Train, 5), names(Split::Test, 5));
    assert_eq!((tr.len(), te.len()), (7, 3));
    assert!(te.iter().all(|t| !tr.contains(t)));
    assert_eq!(te, names(Split::Test, 5));
    // --test-data: the unseen points from another folder, labelled by the training classes.
    let other = dir.path().join("other");
    folder(&other, &[("dog", 3)], Some(32), 2);
    let p = dir.path().join("p.json");
    ok(&memprune(&[
        "probe",
        s(&m),
        "--data",
        s(&flat),
        "--test-data",
        s(&other),
        "--steps",
        "5",
        "--json",
        s(&p),
    ]));
    assert_eq!(json(&p)["result"]["test_points"], 3);
    assert_eq!(json(&p)["train_points"], 10);
}

#[test]
fn one_class_list_for_every_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    folder(&d.join("train"), &[("cat", 2), ("dog", 2)], Some(8), 1);
    folder(&d.join("test"), &[("dog", 2)], Some(8), 2);
    let o = DataOptions::default();
    let train = open_with(&d, Split::Train, &o).unwrap();
    let test = open_with(&d, Split::Test, &o).unwrap();
    assert_eq!(train.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
    // test's dog is the training split's dog (1), not test's first class (0).
    assert_eq!(test.labels.as_deref(), Some(&[1, 1][..]));
    assert_eq!(test.class_names, train.class_names);
    folder(&d.join("test"), &[("bird", 1)], Some(8), 3);
    let e = open_with(&d, Split::Test, &o).unwrap_err().to_string();
    assert!(
        e.contains("bird") && e.contains("not among the training split's classes (cat, dog)"),
        "{e}"
    );
}

#[test]
fn mixed_sizes_resize_crop_and_the_checkpoints_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("mixed");
    folder(&d.join("train"), &[("a", 3), ("b", 3)], None, 4);
    folder(&d.join("test"), &[("a", 2), ("b", 2)], None, 5);
    // --resize and --crop.
    let o = DataOptions {
        resize: Some(40),
        crop: Some(36),
        ..Default::default()
    };
    let set = open_with(&d, Split::Train, &o).unwrap();
    assert_eq!((set.len(), set.height, set.width), (6, 36, 36));
    // Without them and without a checkpoint size: refused, naming the flags.
    let e = open_with(&d, Split::Train, &DataOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resize N and --crop N"), "{e}");
    // An ImageNet-stem ResNet: 224 by default, and the line says so.
    let m = model("resnet18_imagenet.safetensors");
    let out = ok(&memprune(
        &[&unit_one_view(s(&m), s(&d), "2")[..], &["-q"]].concat(),
    ));
    let first = out.lines().find(|l| l.starts_with("data:")).unwrap_or(""); // the augmentation line comes first
    assert!(first.contains("3x224x224"), "{first}");
    assert!(first.contains("ImageNet-stem ResNet"), "{first}");
    // A CIFAR-stem one has no input size: refused with the flags.
    refused(
        &memprune(&unit_one_view(
            s(&model("resnet18_cifar.safetensors")),
            s(&d),
            "2",
        )),
        &["--resize N and --crop N"],
    );
}

#[test]
fn outputs_name_each_point_by_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    folder(&d.join("train"), &[("cat", 3), ("dog", 3)], Some(16), 6);
    folder(&d.join("test"), &[("cat", 2), ("dog", 2)], Some(16), 7);
    let m = model("resnet18_cifar.safetensors");
    let (csv, j) = (dir.path().join("u.csv"), dir.path().join("u.json"));
    ok(&memprune(
        &[
            &unit_one_view(s(&m), s(&d), "4")[..],
            &["--csv", s(&csv), "--json", s(&j), "-q"],
        ]
        .concat(),
    ));
    let text = std::fs::read_to_string(&csv).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let at = header
        .iter()
        .position(|h| *h == "argmax_name")
        .expect("argmax_name column");
    for line in text.lines().skip(1) {
        let name = line.split(',').nth(at).unwrap();
        assert!(
            name.starts_with("train/cat/") || name.starts_with("train/dog/"),
            "{line}"
        );
    }
    let j = json(&j);
    let unit = &j["layers"][0]["units"][0];
    assert!(
        unit["argmax_name"].as_str().unwrap().starts_with("train/"),
        "{unit}"
    );
    assert!(j["control"]["point_names"][0]
        .as_str()
        .unwrap()
        .starts_with("test/"));
    // LayerMem's per-point CSV.
    let lc = dir.path().join("l.csv");
    ok(&memprune(&[
        "measure",
        "layer",
        s(&m),
        "--reference",
        s(&m),
        "--data",
        s(&d),
        "--range",
        "0..2",
        "--views",
        "2",
        "--per-point",
        "--csv",
        s(&lc),
        "-q",
    ]));
    let lt = std::fs::read_to_string(&lc).unwrap();
    assert!(lt.starts_with("point,set,name,"), "{lt}");
    assert!(lt.contains("0,candidate,train/cat/000.jpg,"), "{lt}");
    assert!(lt.contains(",control,test/"), "{lt}");
    // embed: the names beside the indices.
    let e = dir.path().join("e.npy");
    ok(&memprune(&[
        "embed",
        s(&m),
        "--data",
        s(&d),
        "--out",
        s(&e),
    ]));
    let names = std::fs::read_to_string(dir.path().join("e.names.txt")).unwrap();
    assert_eq!(names.lines().next(), Some("train/cat/000.jpg"));
    assert_eq!(names.lines().count(), 6);
    // IDX: the file and the record's index in it.
    let idx = memprune::data::open(&root().join("assets/mnist"), Split::Test).unwrap();
    assert_eq!(idx.point_name(17), "t10k-images-idx3-ubyte.gz#17");
}

#[test]
fn a_checkpoints_recorded_points_are_refused_on_other_data() {
    // The embedded f records its Fashion-MNIST candidates and planted points.
    refused(
        &memprune(&["measure", "layer", "--data", "assets/mnist", "--views", "1"]),
        &[
            "resnet9-simclr-f",
            "recorded candidate points",
            "assets/mnist",
            "--range",
            "--indices",
        ],
    );
    // Points given explicitly: measured, without the planted table.
    let out = ok(&memprune(&[
        "measure",
        "layer",
        "--data",
        "assets/mnist",
        "--views",
        "1",
        "--range",
        "0..3",
        "-q",
        "--no-control",
    ]));
    assert!(!out.contains("planted"), "{out}");
}

#[test]
fn the_data_line_gives_the_normalisation() {
    let out = ok(&memprune(&[
        "measure",
        "unit",
        "--points",
        "3",
        "--views",
        "1",
        "-q",
        "--no-control",
    ]));
    let first = out.lines().find(|l| l.starts_with("data:")).unwrap_or(""); // the augmentation line comes first
    assert!(
        first.starts_with("data: assets/fashion-mnist-planted"),
        "{first}"
    );
    assert!(
        first.contains("normalisation mean [0.286] std [0.353]"),
        "{first}"
    );
    let out = ok(&memprune(&["probe", "--raw", "--steps", "3"]));
    assert!(
        out.contains("normalisation mean [0.286] std [0.353]"),
        "{out}"
    );
}

#[test]
fn the_embedded_default_is_the_working_directorys_repository() {
    let bin = env!("CARGO_BIN_EXE_memprune");
    let run = |cwd: &Path, home: Option<&Path>| {
        let mut c = std::process::Command::new(bin);
        c.args(["inspect"])
            .current_dir(cwd)
            .env_remove("MEMPRUNE_HOME");
        if let Some(h) = home {
            c.env("MEMPRUNE_HOME", h);
        }
        c.output().unwrap()
    };
    // Outside any clone: not another checkout's files, but how to get the default.
    let away = tempfile::tempdir().unwrap();
    refused(
        &run(away.path(), None),
        &["embedded default is not here", "MEMPRUNE_HOME", "clone"],
    );
    // In a subfolder of the repository, and with MEMPRUNE_HOME.
    let out = ok(&run(&root().join("src"), None));
    assert!(out.contains("resnet9-simclr-f.safetensors"), "{out}");
    ok(&run(away.path(), Some(root())));
}
