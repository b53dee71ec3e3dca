//! The device a measurement runs on: `cpu`, or `cuda[:N]` in a build with the `cuda`
//! feature (candle's CUDA backend). memprune's own CPU kernels (the GEMM convolution, the
//! max-pool, the per-channel means, the ViT's LayerNorm and softmax) run on the CPU only;
//! on another device each of them falls back to candle's own op.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse(spec: &str) -> Result<Device> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .with_context(|| format!("--device {spec}: `{n}` is not a GPU index"))?,
            None => bail!("--device {spec}: expected cpu, cuda or cuda:N"),
        },
    };
    if !cfg!(feature = "cuda") {
        bail!("--device {spec}: this memprune was built without CUDA (build it with `cargo build --release --features cuda`)");
    }
    Device::new_cuda(ordinal).with_context(|| format!("--device {spec}: no such CUDA device"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_parses_and_bad_specs_are_refused() {
        assert!(super::parse("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            assert!(super::parse(bad).is_err(), "{bad}");
        }
        if !cfg!(feature = "cuda") {
            let e = super::parse("cuda:0").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
