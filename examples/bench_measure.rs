//! Speed and memory of memprune's measure path, as figures to put beside PyTorch's
//! (`examples/bench_measure_torch.py` runs the same networks, batches and threads).
//!
//!     cargo run --release --example bench_measure            # all figures
//!     RAYON_NUM_THREADS=2 cargo run --release --example bench_measure
//!
//!     BENCH_ONLY=r18@224 cargo run --release --example bench_measure  # one case (for perf)
//!
//! Cases: r9@32, r18@32, r18@224, unitmem, memory, r50-unit, r50-layer, vits-unit,
//! vits-layer (BENCH_ONLY takes a comma list; the last four only when named or with
//! BENCH_ONLY=imagenet, as they take minutes).
//! Prints: forward images/s for the paper's ResNet9 at 32x32 (batch 256), torchvision
//! resnet18 at 32x32 (batch 256) and 224x224 (batch 32); UnitMem points/s at K = 10 on the
//! embedded Fashion-MNIST; and the peak resident memory of UnitMem (mean) at N = 1,000 and
//! N = 20,000 points (needs the full Fashion-MNIST of Debian's dataset-fashion-mnist).
//!
//! ImageNet-size cases (each run in a child process, `RUNS` rounds, default 3, medians):
//! torchvision resnet50 and timm ViT-S/16, random weights, at 224x224 on random RGB images,
//! at the default batch (`fit_batch` lowers it to the memory budget, as `measure` does):
//! `*-unit` = UnitMem (mean) of 6 points x K = 10 views (`measure unit`), `*-layer` =
//! SSLMem' of f and g (two random encoders) on 3 points x K = 10 view pairs (`measure
//! layer`). Prints views/s (images through one encoder per second) and the child's peak
//! resident memory. `examples/bench_measure_torch.py imagenet` does the same with forward
//! hooks.

use candle_core::{Device, Tensor};
use memprune::checkpoint::Checkpoint;
use memprune::data::{self, Split};
use memprune::measure::{self, ViewSettings};
use memprune::metrics::unit_mem::Reduce;
use memprune::model::{Encoder, LoadOptions};
use std::collections::BTreeMap;
use std::time::Instant;

#[path = "common/random_models.rs"]
#[allow(dead_code)]
mod random_models;

#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

fn random_encoder(shapes: &[(String, Vec<usize>)]) -> Encoder {
    let mut t = BTreeMap::new();
    for (name, shape) in shapes {
        let v = if name.ends_with("running_var")
            || name.ends_with("bn.weight")
            || name.ends_with("bn1.weight")
        {
            Tensor::rand(0.5f32, 1.5, shape.as_slice(), &Device::Cpu)
        } else if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            Tensor::randn(
                0f32,
                (2.0 / fan_in).sqrt() as f32,
                shape.as_slice(),
                &Device::Cpu,
            )
        } else {
            Tensor::randn(0f32, 0.1, shape.as_slice(), &Device::Cpu)
        };
        t.insert(name.clone(), v.unwrap());
    }
    let ckpt = Checkpoint::from_tensors(std::path::Path::new("random"), t, Default::default());
    Encoder::from_checkpoint(ckpt, &LoadOptions::default()).unwrap()
}

fn resnet9_shapes(in_channels: usize) -> Vec<(String, Vec<usize>)> {
    let widths = [32, 64, 64, 64, 128, 256, 256, 256];
    let mut v = Vec::new();
    let mut cin = in_channels;
    for (i, &w) in widths.iter().enumerate() {
        v.push((format!("block{}.conv.weight", i + 1), vec![w, cin, 3, 3]));
        for s in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("block{}.bn.{s}", i + 1), vec![w]));
        }
        cin = w;
    }
    v
}

fn resnet18_shapes() -> Vec<(String, Vec<usize>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity/resnet18_keys.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["dtype"] != "int64")
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                serde_json::from_value(t["shape"].clone()).unwrap(),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn forward_throughput(name: &str, enc: &Encoder, batch: usize, size: usize, runs: usize) {
    let x = Tensor::randn(
        0f32,
        1.0,
        (batch, enc.in_channels(), size, size),
        &Device::Cpu,
    )
    .unwrap();
    enc.forward_taps(&x).unwrap();
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            enc.forward_taps(&x).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let med = median(times);
    println!("{name:<34} batch {batch:>3}  {size:>3}x{size:<3}  {:>8.1} img/s  (median of {runs}, {:.3} s/batch)", batch as f64 / med, med);
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Child mode: UnitMem (mean) over N points of the full Fashion-MNIST, then print peak RSS.
fn memory_child(n: usize) {
    memprune::block_cache::enable_from_env();
    let set = data::open(
        std::path::Path::new("/usr/share/datasets/fashion-mnist"),
        Split::Train,
    )
    .unwrap();
    let enc = random_encoder(&resnet9_shapes(1));
    let points = data::Subset::first(n, set.len()).unwrap().indices;
    let settings = ViewSettings {
        augment: Default::default(),
        normalization: data::Normalization::default_for(set.kind, 1),
        seed: 0,
        batch: 256,
    };
    let pb = indicatif::ProgressBar::hidden();
    let layers = measure::unit_mem(&enc, &set, &points, 1, Reduce::Mean, &settings, &pb).unwrap();
    assert!(!layers.is_empty());
    println!("{}", peak_rss_kib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--memory-child" {
        memory_child(args[2].parse().unwrap());
        return;
    }
    if args.len() == 3 && args[1] == "--case" {
        imagenet_case(&args[2]);
        return;
    }
    // As the memprune binary does (MEMPRUNE_BLOCK_CACHE=0: the system allocator).
    memprune::block_cache::enable_from_env();
    let threads = candle_core::utils::get_num_threads();
    println!("memprune measure benchmark: {threads} thread(s)\n");
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |case: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|c| c == case))
    };
    let imagenet = ["r50-unit", "r50-layer", "vits-unit", "vits-layer"];
    let named: Vec<&str> = imagenet
        .iter()
        .copied()
        .filter(|c| {
            only.as_deref()
                .is_some_and(|o| o.split(',').any(|x| x == *c || x == "imagenet"))
        })
        .collect();
    if !named.is_empty() {
        imagenet_rounds(&named);
    }
    if only.is_some()
        && !["r9@32", "r18@32", "r18@224", "unitmem", "memory"]
            .iter()
            .any(|c| wanted(c))
    {
        return;
    }
    let r9 = random_encoder(&resnet9_shapes(3));
    let r18 = random_encoder(&resnet18_shapes());
    if wanted("r9@32") {
        forward_throughput("paper ResNet9 forward (all taps)", &r9, 256, 32, 5);
    }
    if wanted("r18@32") {
        forward_throughput("resnet18 forward (all taps)", &r18, 256, 32, 5);
    }
    if wanted("r18@224") {
        forward_throughput("resnet18 forward (all taps)", &r18, 32, 224, 5);
    }
    if !wanted("unitmem") && !wanted("memory") {
        return;
    }

    let set = data::open(&memprune::defaults::data(), Split::Train).unwrap();
    let enc = random_encoder(&resnet9_shapes(1));
    let settings = ViewSettings {
        augment: Default::default(),
        normalization: data::Normalization::default_for(set.kind, 1),
        seed: 0,
        batch: 250,
    };
    let points = data::Subset::first(200, set.len()).unwrap().indices;
    let pb = indicatif::ProgressBar::hidden();
    if wanted("unitmem") {
        unit_mem_throughput(&enc, &set, &points, &settings, &pb);
    }
    if wanted("memory") {
        memory_figures();
    }
}

fn unit_mem_throughput(
    enc: &Encoder,
    set: &data::ImageSet,
    points: &[usize],
    settings: &ViewSettings,
    pb: &indicatif::ProgressBar,
) {
    measure::unit_mem(enc, set, &points[..25], 10, Reduce::Mean, settings, pb).unwrap();
    let times: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            measure::unit_mem(enc, set, points, 10, Reduce::Mean, settings, pb).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    println!(
        "{:<34} K = 10, 28x28, 200 points  {:>8.1} points/s",
        "UnitMem, paper ResNet9 (1 ch)",
        200.0 / median(times)
    );
}

fn memory_figures() {
    if std::path::Path::new("/usr/share/datasets/fashion-mnist").exists() {
        let exe = std::env::current_exe().unwrap();
        let mut rss = Vec::new();
        for n in [1000usize, 20000] {
            let out = std::process::Command::new(&exe)
                .args(["--memory-child", &n.to_string()])
                .output()
                .unwrap();
            let kib: u64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            println!(
                "{:<34} N = {n:>6}, K = 1        peak RSS {:>8.1} MiB",
                "UnitMem (mean) memory",
                kib as f64 / 1024.0
            );
            rss.push(kib as f64);
        }
        println!(
            "{:<34} growth from N = 1,000 to 20,000: {:+.1} %",
            "",
            100.0 * (rss[1] / rss[0] - 1.0)
        );
    } else {
        println!("(memory figures need /usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist)");
    }
}

/// Child mode: one ImageNet-size case; prints `views seconds peak_kib` and the batch line.
fn imagenet_case(case: &str) {
    use memprune::metrics::layer_mem::Pairing;
    memprune::block_cache::enable_from_env();
    let make = || match case {
        "r50-unit" | "r50-layer" => random_models::resnet50(),
        _ => random_models::vit(384, 1536, 12, 6, 16, 14, 3),
    };
    let f = make();
    let set = random_models::random_images(8, 224, 1);
    let settings = ViewSettings {
        augment: Default::default(),
        normalization: data::Normalization::default_for(set.kind, 3),
        seed: 0,
        batch: memprune::defaults::BATCH,
    };
    let pb = indicatif::ProgressBar::hidden();
    let k = 10;
    let t = Instant::now();
    let views = if case.ends_with("-unit") {
        let points: Vec<usize> = (0..6).collect();
        measure::unit_mem(&f, &set, &points, k, Reduce::Mean, &settings, &pb).unwrap();
        points.len() * k
    } else {
        let g = make();
        let points: Vec<usize> = (0..3).collect();
        measure::layer_mem_points(&f, &g, &set, &points, k, Pairing::Views, &settings, &pb)
            .unwrap();
        points.len() * 2 * k * 2
    };
    println!("{views} {} {}", t.elapsed().as_secs_f64(), peak_rss_kib());
}

/// `RUNS` rounds (default 3) of every case in `cases`, each in a child process; medians.
fn imagenet_rounds(cases: &[&str]) {
    let rounds: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let exe = std::env::current_exe().unwrap();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut batch_lines: Vec<String> = vec![String::new(); cases.len()];
    for _ in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let out = std::process::Command::new(&exe)
                .args(["--case", case])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            assert_eq!(
                v.len(),
                3,
                "{case}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            rates[i].push(v[0] / v[1]);
            rss[i].push(v[2] / 1024.0);
            batch_lines[i] = String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| l.starts_with("batch:"))
                .unwrap_or("batch: 256 (the default, not lowered)")
                .to_string();
        }
    }
    for (i, case) in cases.iter().enumerate() {
        let what = match *case {
            "r50-unit" => "resnet50 UnitMem, 6 points x K = 10, 224x224",
            "r50-layer" => "resnet50 LayerMem (f, g), 3 points x 10 pairs",
            "vits-unit" => "ViT-S/16 UnitMem, 6 points x K = 10, 224x224",
            _ => "ViT-S/16 LayerMem (f, g), 3 points x 10 pairs",
        };
        println!(
            "{what:<48} {:>7.2} views/s  peak RSS {:>7.1} MiB  (median of {rounds}; {})",
            median(rates[i].clone()),
            median(rss[i].clone()),
            batch_lines[i]
        );
    }
}
