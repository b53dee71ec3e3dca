//! Peak memory and time of fine-tuning the embedded SimCLR ResNet9 f on the embedded MNIST
//! subset: the head only, the last layer, the last three, and every layer. Each setting
//! runs in a child process of its own (this program again), so each peak resident set
//! size is that setting's alone.
//!
//!     cargo run --release --example bench_finetune [-- EPOCHS BATCH]

use memprune::data::{open, Split};
use memprune::eval::finetune::{finetune_once, FinetuneSettings};
use memprune::model::{Encoder, LoadOptions};
use std::process::Command;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn child(layers: &str, epochs: usize, batch: usize) -> anyhow::Result<()> {
    let enc = Encoder::load(&memprune::defaults::model_f(), &LoadOptions::default())?;
    let down = memprune::defaults::downstream();
    let (train, test) = (open(&down, Split::Train)?, open(&down, Split::Test)?);
    let layers: Vec<String> = layers
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let settings = FinetuneSettings {
        epochs,
        batch,
        ..FinetuneSettings::default()
    };
    let before = peak_rss_mib();
    let r = finetune_once(&enc, &layers, &train, &test, &settings, 0)?;
    println!(
        "{:.1} {:.1} {:.1} {:.2}",
        before,
        peak_rss_mib(),
        r.seconds,
        100.0 * r.accuracy
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--child" {
        return child(&args[2], args[3].parse()?, args[4].parse()?);
    }
    let epochs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let all = (1..=8)
        .map(|i| format!("block{i}"))
        .collect::<Vec<_>>()
        .join(",");
    println!("fine-tuning f on the embedded MNIST subset, {epochs} epoch(s), batch {batch}\n");
    println!(
        "{:<24} {:>16} {:>14} {:>10} {:>10}",
        "trained (+ head)", "peak RSS (MiB)", "before (MiB)", "seconds", "top-1 %"
    );
    let exe = std::env::current_exe()?;
    for (name, layers) in [
        ("head only", String::new()),
        ("block8", "block8".to_string()),
        ("block6,block7,block8", "block6,block7,block8".to_string()),
        ("all 8 blocks", all),
    ] {
        let out = Command::new(&exe)
            .args(["--child", &layers, &epochs.to_string(), &batch.to_string()])
            .output()?;
        if !out.status.success() {
            anyhow::bail!("{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let s = String::from_utf8_lossy(&out.stdout);
        let v: Vec<&str> = s.split_whitespace().collect();
        println!(
            "{:<24} {:>16} {:>14} {:>10} {:>10}",
            name, v[1], v[0], v[2], v[3]
        );
    }
    Ok(())
}
