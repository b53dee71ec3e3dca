//! `memprune train`: train an encoder.

use super::{choice, set_threads};
use anyhow::Result;
use clap::Args;
use memprune::jobs::train::{TrainRequest, TrainStart, VitSizes, DEFAULTS};
use memprune::train::init::TrainArch;
use memprune::train::optim::OptimizerKind;
use memprune::train::split::SplitKind;
use memprune::train::Framework;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, value_parser = choice::of::<Framework>())]
    framework: Framework,
    /// Architecture: the paper's ResNet9, torchvision's resnet18/34/50 (CIFAR stem for
    /// images of 64 pixels or less, else the ImageNet stem), or a ViT.
    #[arg(long, value_parser = choice::arch(), default_value_t = TrainArch::default())]
    arch: TrainArch,
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
    #[arg(long, default_value_t = DEFAULTS.epochs)]
    epochs: usize,
    /// Images per step (SSL: 2 views each).
    #[arg(long, default_value_t = DEFAULTS.batch)]
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
    #[arg(long, value_parser = choice::of::<OptimizerKind>())]
    optimizer: Option<OptimizerKind>,
    #[arg(long, default_value_t = DEFAULTS.momentum)]
    momentum: f64,
    #[arg(long)]
    nesterov: bool,
    /// LARS trust coefficient.
    #[arg(long, default_value_t = DEFAULTS.lars_eta)]
    lars_eta: f64,
    /// Linear warm-up (epochs, may be fractional), then cosine decay to 0.
    #[arg(long, default_value_t = DEFAULTS.warmup_epochs)]
    warmup_epochs: f64,
    /// NT-Xent temperature (SimCLR).
    #[arg(long, default_value_t = DEFAULTS.temperature)]
    temperature: f64,
    /// Seed of the initialisation, views and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// all, shared+candidates (LayerMem's f) or shared+independent (LayerMem's g).
    #[arg(long, value_parser = choice::of::<SplitKind>(), default_value_t = SplitKind::All)]
    split: SplitKind,
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

impl TrainArgs {
    fn request(self) -> TrainRequest {
        TrainRequest {
            framework: self.framework,
            arch: self.arch,
            widths: self.widths,
            vit: VitSizes {
                depth: self.depth,
                width: self.width,
                heads: self.heads,
                mlp: self.mlp,
                patch: self.patch,
                decoder_depth: self.decoder_depth,
                decoder_width: self.decoder_width,
                decoder_heads: self.decoder_heads,
            },
            data: self.data,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            wd: self.wd,
            optimizer: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov,
            lars_eta: self.lars_eta,
            warmup_epochs: self.warmup_epochs,
            temperature: self.temperature,
            seed: self.seed,
            split: self.split,
            split_seed: self.split_seed,
            augment: self.augment,
            out: self.out,
            resume: self.resume,
            init: self.init,
            trainable: self.trainable,
            planted: self.planted,
            f16: self.f16,
            device: self.device,
        }
    }
}

pub fn run(a: TrainArgs, quiet: bool) -> Result<()> {
    use std::io::IsTerminal;
    set_threads(a.threads)?;
    let request = a.request();
    let s = request.run(std::io::stderr().is_terminal(), quiet, |start| {
        if !quiet {
            print_start(start);
        }
    })?;
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
        request.out.display()
    );
    Ok(())
}

/// What the run starts from, on stderr.
fn print_start(s: &TrainStart) {
    eprintln!(
        "training {} {} {:?} on {} of {} points of {} ({}), {} epochs x {} steps of {}, {} lr {} wd {}{}",
        s.framework.name(),
        s.from,
        s.widths,
        s.train_points,
        s.data_points,
        s.data,
        s.split.name(),
        s.epochs,
        s.steps_per_epoch,
        s.batch,
        s.optimizer.name(),
        s.lr,
        s.wd,
        if s.epochs_done > 0 {
            format!(", resuming after epoch {}", s.epochs_done)
        } else {
            String::new()
        }
    );
    if let Some(t) = &s.trainable {
        eprintln!("training {}; every other layer frozen", t.join(", "));
    }
}
