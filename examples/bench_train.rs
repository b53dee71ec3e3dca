//! SimCLR training throughput of the embedded ResNet9 (28x28 Fashion-MNIST, batch 256,
//! 2 views per image): median images/s over a few steps after one warm-up step.
//!
//! `cargo run --release --example bench_train -- [steps] [widths]`
//! (widths comma separated, default the paper's). Compare `examples/bench_train_torch.py`.

use memprune::data::{self, Normalization, Split};
use memprune::train::optim::{OptimizerConfig, OptimizerKind};
use memprune::train::split::SplitKind;
use memprune::train::{Framework, TrainConfig, Trainer};
use std::time::Instant;

#[global_allocator]
static ALLOC: memprune::block_cache::BlockCache = memprune::block_cache::BlockCache::new();

fn main() -> anyhow::Result<()> {
    // As the memprune binary does (MEMPRUNE_BLOCK_CACHE=0: the system allocator).
    memprune::block_cache::enable_from_env();
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let widths: Vec<usize> = match args.get(2) {
        Some(s) => s.split(',').map(|x| x.parse()).collect::<Result<_, _>>()?,
        None => memprune::model::resnet9_init::PAPER_WIDTHS.to_vec(),
    };
    let set = data::open(&memprune::defaults::data(), Split::Train)?;
    let batch = 256;
    let cfg = TrainConfig {
        arch: memprune::train::init::TrainArch::Resnet9,
        framework: Framework::Simclr,
        widths: widths.clone(),
        epochs: 1,
        batch,
        lr: 0.3,
        optimizer: OptimizerConfig::new(OptimizerKind::Lars, 1e-6),
        warmup_epochs: 1.0,
        seed: 0,
        split: SplitKind::All,
        split_seed: 0,
        temperature: 0.5,
        augment: Framework::Simclr.default_augment(),
        normalization: Normalization::default_for(set.kind, set.channels),
        save_dtype: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        init_from: None,
        trainable: None,
        planted: None,
        vit: Default::default(),
    };
    let mut t = Trainer::new(cfg, &set, "embedded", None)?;
    let order = t.epoch_order(0);
    let mut rates = Vec::new();
    for k in 0..=steps {
        let pts = &order[k * batch..(k + 1) * batch];
        let t0 = Instant::now();
        let loss = t.step(pts, 0)?;
        let dt = t0.elapsed().as_secs_f64();
        if k > 0 {
            rates.push(batch as f64 / dt);
        }
        eprintln!(
            "step {k}: loss {loss:.4}, {dt:.2} s, {:.1} img/s",
            batch as f64 / dt
        );
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = rates[rates.len() / 2];
    println!(
        "memprune SimCLR ResNet9 {widths:?} 1x28x28 batch {batch} ({} threads): median {med:.1} images/s ({:.3} s/step, {steps} steps)",
        rayon::current_num_threads(),
        batch as f64 / med
    );
    Ok(())
}
