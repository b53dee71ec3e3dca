//! `memprune report` and a policy's `output.report` end to end: every image is a PNG data
//! URI, the images shown are the real argmax points and SSLMem' extremes (against `measure
//! unit` and `measure layer --per-point`), the charts are there, the same seed gives the
//! same file whatever the threads or batch, and outputs never replace inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{json, memprune, memprune_threads, ok, refused, root, s};

fn model() -> PathBuf {
    common::parity("resnet9_c1.safetensors")
}

fn reference() -> PathBuf {
    common::parity("resnet9_c1_bf16.safetensors")
}

/// The attributes of every `<img>` tag of `html`.
fn images(html: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for part in html.split("<img ").skip(1) {
        let tag = &part[..part.find('>').expect("an unclosed <img>")];
        let mut attrs = BTreeMap::new();
        let mut rest = tag;
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].trim().rsplit(' ').next().unwrap().to_string();
            let after = &rest[eq + 2..];
            let end = after.find('"').unwrap();
            attrs.insert(name, after[..end].to_string());
            rest = &after[end + 1..];
        }
        out.push(attrs);
    }
    out
}

fn report_args<'a>(out: &'a str, m: &'a str, g: &'a str, batch: &'a str) -> Vec<&'a str> {
    vec![
        "report",
        m,
        "--reference",
        g,
        "--points",
        "24",
        "--candidates",
        "12",
        "--views",
        "3",
        "--batch",
        batch,
        "--out",
        out,
        "-q",
    ]
}

fn layer_by_name<'a>(layers: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    layers
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}

#[test]
fn report_shows_png_images_of_the_real_argmax_points_and_sslmem_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let (m, g) = (model(), reference());
    let out = dir.path().join("r.html");
    let text = ok(&memprune(&report_args(s(&out), s(&m), s(&g), "256")));
    assert!(text.contains("wrote"), "{text}");
    let html = std::fs::read_to_string(&out).unwrap();
    // Nothing to fetch: no link, script, stylesheet or external image (SVG's xmlns is a name).
    for needle in [
        "src=\"http",
        "href=\"http",
        "url(",
        "<script",
        "<link",
        "@import",
    ] {
        assert!(!html.contains(needle), "{needle}");
    }

    // Every image is a PNG data URI of a 28x28 image upscaled to 84x84.
    let imgs = images(&html);
    assert!(imgs.len() > 50, "{} images", imgs.len());
    for a in &imgs {
        let src = &a["src"];
        let b64 = src
            .strip_prefix("data:image/png;base64,")
            .unwrap_or_else(|| panic!("not a PNG data URI: {}", &src[..src.len().min(40)]));
        let bytes = base64::decode(b64).unwrap();
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        assert_eq!((img.width(), img.height()), (84, 84));
        // The caption names the file and the record beside the index.
        let name = format!("train-images-idx3-ubyte.gz#{}", a["data-point"]);
        assert_eq!(a["data-name"], name);
        assert_eq!(
            a["alt"],
            format!("training point {} {name}", a["data-point"])
        );
        assert!(html.contains(&format!("<code>{name}</code>")));
        assert!(html.contains(&format!("<b>#{}</b>", a["data-point"])));
    }

    // The units shown are each layer's highest-excess units, with their real argmax.
    let uj = dir.path().join("u.json");
    ok(&memprune(&[
        "measure",
        "unit",
        s(&m),
        "--points",
        "24",
        "--views",
        "3",
        "--json",
        s(&uj),
        "-q",
    ]));
    let units = json(&uj)["layers"].clone();
    let mut shown: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for a in imgs.iter().filter(|a| a["class"] == "unit") {
        let l = layer_by_name(&units, &a["data-layer"]);
        let u: usize = a["data-unit"].parse().unwrap();
        let point: u64 = a["data-point"].parse().unwrap();
        assert_eq!(l["units"][u]["argmax"].as_u64().unwrap(), point, "{a:?}");
        let excess: f64 = a["data-excess"].parse().unwrap();
        // serde_json's parser may be 1 ulp off the written value.
        assert!((l["control"]["excess"][u].as_f64().unwrap() - excess).abs() < 1e-12);
        shown.entry(a["data-layer"].clone()).or_default().push(u);
    }
    assert_eq!(shown.len(), units.as_array().unwrap().len());
    for (name, us) in &shown {
        let l = layer_by_name(&units, name);
        let ex: Vec<f64> = l["control"]["excess"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mut order: Vec<usize> = (0..ex.len())
            .filter(|&u| !l["units"][u]["dead"].as_bool().unwrap())
            .collect();
        order.sort_by(|&a, &b| {
            let sc = |u: usize| l["units"][u]["score"].as_f64().unwrap();
            ex[b]
                .total_cmp(&ex[a])
                .then(sc(b).total_cmp(&sc(a)))
                .then(a.cmp(&b))
        });
        order.truncate(8);
        assert_eq!(us, &order, "{name}");
    }

    // The points shown per layer are its highest and lowest SSLMem' candidates.
    let lj = dir.path().join("l.json");
    ok(&memprune(&[
        "measure",
        "layer",
        s(&m),
        "--reference",
        s(&g),
        "--points",
        "12",
        "--views",
        "3",
        "--per-point",
        "--json",
        s(&lj),
        "-q",
    ]));
    let lj = json(&lj);
    let names: Vec<String> = lj["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    let per_point = lj["per_point"].as_array().unwrap();
    assert_eq!(per_point.len(), 12);
    for (li, name) in names.iter().enumerate() {
        let mut order: Vec<(u64, f64)> = per_point
            .iter()
            .map(|p| {
                (
                    p["point"].as_u64().unwrap(),
                    p["sslmem"][li].as_f64().unwrap(),
                )
            })
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let got: Vec<(u64, f64)> = imgs
            .iter()
            .filter(|a| a["class"] == "sslmem" && &a["data-layer"] == name)
            .map(|a| {
                (
                    a["data-point"].parse().unwrap(),
                    a["data-sslmem"].parse().unwrap(),
                )
            })
            .collect();
        let mut want: Vec<(u64, f64)> = order[..6].to_vec();
        want.extend(order[6..].iter().rev());
        let points = |v: &[(u64, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(points(&got), points(&want), "{name}");
        for (a, b) in got.iter().zip(&want) {
            assert!((a.1 - b.1).abs() < 1e-12, "{name}: {a:?} {b:?}");
        }
    }
    // The corrected LayerMem of the table is measure layer's (same points, seed, control).
    let l0 = &lj["layers"][names.len() - 1];
    assert!(html.contains(&format!("{:+.4}", l0["corrected"].as_f64().unwrap())));

    // The charts, with the layer names on their axes; the settings with the digest.
    for id in [
        "chart-layermem",
        "chart-dlayermem",
        "chart-unitmem",
        "chart-excess",
    ] {
        let at = html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        let chart = &html[at..at + html[at..].find("</svg>").unwrap()];
        assert!(chart.contains("<svg"), "{id}");
        for n in &names {
            assert!(
                chart.contains(&format!(">{n}<")) || chart.contains(&format!(">\n{n}\n<")),
                "{id}: {n}"
            );
        }
    }
    use sha2::Digest;
    let digest = format!("{:x}", sha2::Sha256::digest(std::fs::read(&m).unwrap()));
    assert!(html.contains(&digest));
    assert!(html.contains(env!("CARGO_PKG_VERSION")));
}

/// The report up to its settings (which name the batch and the command line).
fn results(html: &str) -> &str {
    &html[..html.find("<section id=\"settings\">").unwrap()]
}

#[test]
fn report_is_identical_across_threads_and_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (m, g) = (model(), reference());
    let run = |threads: &str, batch: &str, name: &str| {
        let out = dir.path().join(name);
        ok(&memprune_threads(
            &report_args(s(&out), s(&m), s(&g), batch),
            threads,
        ));
        std::fs::read_to_string(out).unwrap()
    };
    let a = run("1", "256", "a.html");
    let b = run("2", "256", "b.html");
    // The command lines differ in the output name only.
    assert_eq!(a.replace("a.html", "x"), b.replace("b.html", "x"));
    let c = run("2", "7", "c.html");
    assert_eq!(results(&a), results(&c));
}

/// The names in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn report_never_writes_over_its_inputs_and_writes_nothing_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("f.safetensors");
    let g = dir.path().join("g.safetensors");
    std::fs::copy(model(), &m).unwrap();
    std::fs::copy(reference(), &g).unwrap();
    let before = (std::fs::read(&m).unwrap(), std::fs::read(&g).unwrap());
    let files = listing(dir.path());
    for (out, what) in [(&m, "the checkpoint"), (&g, "the reference")] {
        let r = memprune(&report_args(s(out), s(&m), s(&g), "256"));
        refused(&r, &[s(out), "refusing to write over", what]);
        assert!(r.stdout.is_empty());
    }
    // Inside the data folder.
    let data = root().join("assets/fashion-mnist-planted");
    let inside = data.join("report.html");
    let r = memprune(&report_args(s(&inside), s(&m), s(&g), "256"));
    refused(&r, &["inside", "the data"]);
    assert!(!inside.exists());
    // A failure after the checks (a data folder without a test split) leaves nothing.
    let d = common::tiny_idx(dir.path(), 8);
    std::fs::remove_file(d.join("t10k-images-idx3-ubyte")).unwrap();
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap();
    let out = dir.path().join("new").join("r.html");
    let r = memprune(&[
        "report",
        s(&m),
        "--data",
        s(&d),
        "--points",
        "4",
        "--out",
        s(&out),
        "-q",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(!dir.path().join("new").exists());
    assert_eq!(listing(dir.path()), {
        let mut f = files.clone();
        f.push("tiny-idx".into());
        f.sort();
        f
    });
    assert_eq!(
        before,
        (std::fs::read(&m).unwrap(), std::fs::read(&g).unwrap())
    );
    // Bad numbers: one line, nothing written.
    for (flag, v) in [
        ("--points", "0"),
        ("--candidates", "0"),
        ("--views", "0"),
        ("--batch", "0"),
    ] {
        let out = dir.path().join("bad.html");
        let mut a = report_args(s(&out), s(&m), s(&g), "256");
        let at = a.iter().position(|x| *x == flag).unwrap();
        a[at + 1] = v;
        refused(&memprune(&a), &[flag]);
        assert!(!out.exists());
    }
}

#[test]
fn report_on_the_embedded_default_has_the_symmetric_control_and_marks_planted_points() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    ok(&memprune(&[
        "report",
        "--points",
        "12",
        "--candidates",
        "50",
        "--views",
        "2",
        "--out",
        s(&out),
        "-q",
    ]));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("corrected (symmetric control)"));
    assert!(html.contains("g's own 50 independent points"));
    assert!(html.contains("resnet9-simclr-g.safetensors"));
    // f records 10 planted digits among its first candidates: some are shown, and marked.
    let planted: Vec<u64> = serde_json::from_str(
        &memprune::checkpoint::Checkpoint::load(&memprune::defaults::model_f(), None)
            .unwrap()
            .metadata["memprune.planted"],
    )
    .unwrap();
    let marked = html.matches("<figure class=\"planted\">").count();
    let shown_planted = images(&html)
        .iter()
        .filter(|a| planted.contains(&a["data-point"].parse().unwrap()))
        .count();
    assert!(marked > 0);
    assert_eq!(marked, shown_planted);
}

#[test]
fn report_runs_on_the_embedded_vit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit.html");
    ok(&memprune(&[
        "report",
        "assets/models/vit-mae-f.safetensors",
        "--reference",
        "assets/models/vit-mae-g.safetensors",
        "--points",
        "6",
        "--candidates",
        "4",
        "--views",
        "2",
        "--pool",
        "avg",
        "--out",
        s(&out),
        "-q",
    ]));
    let html = std::fs::read_to_string(&out).unwrap();
    // LayerMem on the sub-layer outputs, UnitMem on every unit kind.
    assert!(html.contains("id=\"points-block6.mlp\""));
    assert!(html.contains("id=\"units-block1.fc1\""));
    assert!(html.contains("id=\"units-block1.heads\""));
    assert!(html.contains("pool Some(Avg)"));
    assert!(images(&html)
        .iter()
        .all(|a| a["src"].starts_with("data:image/png;base64,")));
}

#[test]
fn a_policy_writes_its_report_with_the_plan_and_the_before_after_table() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("p.safetensors");
    let html_path = dir.path().join("p.html");
    let json_path = dir.path().join("p.json");
    let policy = dir.path().join("p.yaml");
    let write_policy = |report: &Path| {
        std::fs::write(
            &policy,
            format!(
                "model: {}\ndata: {{points: 16}}\nmetrics: {{views: 2}}\nactions:\n  - prune: {{criterion: unitmem-excess, end: low, fraction: 0.25, mode: remove}}\nevaluation: {{probe: false, speed: false}}\noutput: {{checkpoint: {}, json: {}, report: {}}}\n",
                s(&model()),
                s(&ckpt),
                s(&json_path),
                s(report)
            ),
        )
        .unwrap();
    };
    // The report may be neither the policy file, the model, nor another output.
    for (bad, needle) in [
        (policy.clone(), "the policy file"),
        (model(), "the model"),
        (ckpt.clone(), "output.checkpoint"),
    ] {
        write_policy(&bad);
        let before = std::fs::read(&bad).ok();
        let r = memprune(&["--policy", s(&policy), "-q"]);
        refused(&r, &["output.report", needle]);
        assert!(!ckpt.exists() && !json_path.exists());
        assert_eq!(std::fs::read(&bad).ok(), before);
    }
    write_policy(&html_path);
    ok(&memprune(&["--policy", s(&policy), "-q"]));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let r = json(&json_path);
    assert!(html.contains("<section id=\"policy\">"));
    for g in r["plan"]["groups"].as_array().unwrap() {
        let n = g["channels"].as_u64().unwrap();
        let k = g["pruned"].as_array().unwrap().len() as u64;
        let row = format!(
            "<tr><td>{}</td><td>{n}</td><td>{k}</td><td>{}</td>",
            g["group"].as_str().unwrap(),
            n - k
        );
        assert!(html.contains(&row), "{row}");
    }
    let params = |w: &str| r[w]["cost"]["params"].as_u64().unwrap();
    assert!(html.contains(&format!(
        "<tr><td>parameters</td><td>{}</td><td>{}</td>",
        params("before"),
        params("after")
    )));
    // No reference for a model of one's own: the report says LayerMem was not measured.
    assert!(html.contains("Not measured: no reference encoder"));
    assert!(html.contains("id=\"chart-unitmem\""));
}
