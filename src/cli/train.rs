//! `memprune train`: train an encoder.

use super::set_threads;
use anyhow::{bail, Result};
use clap::Args;
use memprune::data::augment::AugmentConfig;
use memprune::data::normalize::Normalization;
use memprune::data::{self, Split};
use memprune::defaults;
use memprune::model::{Encoder, LoadOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    framework: memprune::train::Framework,
    /// Architecture: the paper's ResNet9, or torchvision's resnet18/34/50 (CIFAR stem for
    /// images of 64 pixels or less, else the ImageNet stem).
    #[arg(long, value_enum, default_value_t = memprune::train::init::TrainArch::Resnet9)]
    arch: memprune::train::init::TrainArch,
    /// ResNet9: the 8 block widths (blocks 2 and 4, 6 and 8 must match; default the paper's
    /// 32,64,64,64,128,256,256,256). ResNets: the 4 stage widths (default 64,128,256,512).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// ViT: transformer blocks (default 6).
    #[arg(long)]
    depth: Option<usize>,
    /// ViT: model width (default 128).
    #[arg(long)]
    width: Option<usize>,
    /// ViT: attention heads (default 4).
    #[arg(long)]
    heads: Option<usize>,
    /// ViT: MLP hidden width (default 4 x width).
    #[arg(long)]
    mlp: Option<usize>,
    /// ViT: patch side in pixels (default 4: a 7x7 grid on 28x28 images).
    #[arg(long)]
    patch: Option<usize>,
    /// MAE decoder: blocks (default 2), width (default 64), heads (default 4).
    #[arg(long)]
    decoder_depth: Option<usize>,
    #[arg(long)]
    decoder_width: Option<usize>,
    #[arg(long)]
    decoder_heads: Option<usize>,
    /// Training data (the train split is read). Default: the embedded Fashion-MNIST subset.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per step (SSL: 2 views each).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Peak learning rate. Default: simclr 0.3 (LARS) or 0.5 (sgd) or 1e-3 (adamw);
    /// simsiam 0.05; supervised 0.1 (sgd) or 1e-3 (adamw); each times batch/256 except adamw;
    /// mae 1e-3 (adamw).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay (on conv and linear weights only). Default: ViTs 0.05; simclr 1e-6,
    /// else 5e-4.
    #[arg(long)]
    wd: Option<f64>,
    /// Default: adamw for ViTs (betas 0.9/0.95 for MAE), lars for simclr, sgd otherwise.
    #[arg(long, value_enum)]
    optimizer: Option<memprune::train::optim::OptimizerKind>,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long)]
    nesterov: bool,
    /// LARS trust coefficient.
    #[arg(long, default_value_t = 0.02)]
    lars_eta: f64,
    /// Linear warm-up (epochs, may be fractional), then cosine decay to 0.
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    /// NT-Xent temperature (SimCLR).
    #[arg(long, default_value_t = 0.5)]
    temperature: f64,
    /// Seed of the initialisation, views and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// all, shared+candidates (LayerMem's f) or shared+independent (LayerMem's g).
    #[arg(long, value_enum, default_value_t = memprune::train::split::SplitKind::All)]
    split: memprune::train::split::SplitKind,
    /// Seed of the 80/10/10 split (f and g must share it).
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Augmentation settings as YAML (as `measure --augment`). Default: docs/METRICS.md's SSL
    /// augmentation; supervised: crop scale 0.5..1 and flips only.
    #[arg(long)]
    augment: Option<PathBuf>,
    /// Checkpoint to write (a resume state `<out>.state.safetensors` is written beside it).
    #[arg(long)]
    out: PathBuf,
    /// Continue from this checkpoint (or its resume state) up to --epochs.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Fine-tune: start the encoder from this checkpoint (its architecture and widths,
    /// so --arch and --widths are ignored) with fresh heads.
    #[arg(long)]
    init: Option<PathBuf>,
    /// With --init: the layers to train, comma separated, as `memprune inspect` names them;
    /// the others are frozen (folded BatchNorm, weights unchanged). Default: the layers the
    /// checkpoint's policy marked trainable (`memprune.trainable`), else all.
    #[arg(long, value_delimiter = ',', requires = "init")]
    trainable: Option<Vec<String>>,
    /// A file of point indices (as `measure --indices`) known to be atypical, planted in the
    /// data to check localization against a known answer; recorded in `memprune.planted`.
    #[arg(long)]
    planted: Option<PathBuf>,
    /// Store the weights as f16 (half the size; the resume state stays f32).
    #[arg(long)]
    f16: bool,
    /// Where the model trains: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda`
    /// feature (views are made on the CPU and copied over; memprune's CPU-only kernels fall
    /// back to candle's ops there; checkpoints are written from a CPU copy).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    device: String,
    /// CPU threads (default: all).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: TrainArgs, quiet: bool) -> Result<()> {
    use memprune::train::{Framework, TrainConfig, Trainer};
    set_threads(a.threads)?;
    let device = memprune::model::device::parse(&a.device)?;
    {
        // Before any work: --out and its resume state are neither the data, --init nor
        // --augment (--resume continues in place, so --out may be the resumed checkpoint).
        let mut set = memprune::output::OutputSet::new();
        set.input(&a.data.clone().unwrap_or_else(defaults::data), "the data");
        if let Some(init) = &a.init {
            set.input(init, "--init");
        }
        if let Some(p) = &a.augment {
            set.input(p, "the augment file");
        }
        set.output(&a.out, "--out")?;
        memprune::output::parent_exists(&a.out, "--out")?;
        set.output(&memprune::train::state_path(&a.out), "--out's resume state")?;
    }
    let data_path = a.data.clone().unwrap_or_else(defaults::data);
    let set = data::open(&data_path, Split::Train)?;
    let init_is_vit = match &a.init {
        Some(p) => Encoder::load(p, &LoadOptions::default())?.arch.arch_id() == "vit",
        None => false,
    };
    let vit = a.arch == memprune::train::init::TrainArch::Vit
        || a.framework == Framework::Mae
        || init_is_vit;
    let kind = a
        .optimizer
        .unwrap_or_else(|| a.framework.default_optimizer(vit));
    let lr =
        a.lr.unwrap_or_else(|| a.framework.default_lr(kind, a.batch));
    let wd =
        a.wd.unwrap_or_else(|| a.framework.default_weight_decay(vit));
    let mut optimizer = a.framework.optimizer_config(kind, wd);
    let d = memprune::train::vit_init::VitShape::default();
    let width = a.width.unwrap_or(d.width);
    let vit_shape = memprune::train::vit_init::VitShape {
        depth: a.depth.unwrap_or(d.depth),
        width,
        heads: a.heads.unwrap_or(d.heads),
        mlp: a.mlp.unwrap_or(4 * width),
        patch: a.patch.unwrap_or(d.patch),
        decoder_depth: a.decoder_depth.unwrap_or(d.decoder_depth),
        decoder_width: a.decoder_width.unwrap_or(d.decoder_width),
        decoder_heads: a.decoder_heads.unwrap_or(d.decoder_heads),
    };
    optimizer.momentum = a.momentum;
    optimizer.nesterov = a.nesterov;
    optimizer.eta = a.lars_eta;
    let augment = match &a.augment {
        Some(p) => AugmentConfig::load(p)?,
        None => a.framework.default_augment(),
    };
    let widths = if a.arch == memprune::train::init::TrainArch::Vit {
        if a.widths.is_some() {
            bail!("--widths sizes ResNets; a ViT takes --depth, --width, --heads, --mlp, --patch");
        }
        vit_shape.check_sizes()?;
        vit_shape.widths()
    } else {
        a.widths.clone().unwrap_or_else(|| a.arch.default_widths())
    };
    if a.init.is_none() {
        a.arch.check_widths(&widths)?;
    }
    let cfg = TrainConfig {
        framework: a.framework,
        arch: a.arch,
        widths: widths.clone(),
        epochs: a.epochs,
        batch: a.batch,
        lr,
        optimizer,
        warmup_epochs: a.warmup_epochs,
        seed: a.seed,
        split: a.split,
        split_seed: a.split_seed,
        temperature: a.temperature,
        augment,
        normalization: Normalization::default_for(set.kind, set.channels),
        save_dtype: if a.f16 {
            candle_core::DType::F16
        } else {
            candle_core::DType::F32
        },
        init_from: a.init.clone(),
        trainable: a.trainable.clone(),
        planted: match &a.planted {
            Some(p) => Some(memprune::data::subset::Subset::from_file(p, set.len())?.indices),
            None => None,
        },
        vit: vit_shape,
        device,
    };
    let label = data_path.display().to_string();
    let mut trainer = Trainer::new(cfg, &set, &label, a.resume.as_deref())?;
    if !quiet {
        eprintln!(
            "training {} {} {:?} on {} of {} points of {} ({}), {} epochs x {} steps of {}, {} lr {} wd {}{}",
            a.framework.name(),
            match &trainer.cfg.init_from {
                Some(p) => format!("from {}", p.display()),
                None => a.arch.name().to_string(),
            },
            trainer.cfg.widths,
            trainer.points.len(),
            set.len(),
            label,
            a.split.name(),
            a.epochs,
            trainer.steps_per_epoch(),
            trainer.batch_size(),
            kind.name(),
            lr,
            wd,
            if trainer.epochs_done > 0 { format!(", resuming after epoch {}", trainer.epochs_done) } else { String::new() }
        );
    }
    if let (false, Some(t)) = (quiet, &trainer.cfg.trainable) {
        eprintln!("training {}; every other layer frozen", t.join(", "));
    }
    use std::io::IsTerminal;
    let s = trainer.run(&a.out, std::io::stderr().is_terminal(), quiet)?;
    println!(
        "trained {} epochs in {:.1} s ({:.1} s/epoch), final loss {:.4}: {}",
        s.epochs,
        s.seconds,
        if s.epoch_seconds.is_empty() {
            0.0
        } else {
            s.epoch_seconds.iter().sum::<f64>() / s.epoch_seconds.len() as f64
        },
        s.final_loss,
        a.out.display()
    );
    Ok(())
}
