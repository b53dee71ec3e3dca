#!/usr/bin/env bash
# The GPU check: builds memprune with `--features cuda`, runs the CPU-vs-GPU parity tests of
# measure (tests/measure_on_gpu.rs: every tap and every act_u of resnet18, resnet50, ViT-Tiny
# and DINOv2 with registers, at batches of 1 and 5), then the ViT and measure benchmarks on
# the GPU beside PyTorch on the same GPU.
#
#   examples/gpu_check.sh [RUNS]          # on a machine with an NVIDIA GPU and its driver
#
# Needs: nvidia-smi, a CUDA 13 toolkit (or examples/cuda_setup.sh DIR and the exports it
# prints), and for the PyTorch side a Python with torch (CUDA build), torchvision and timm
# ($PYTHON, default python3). Prints every figure; writes nothing outside target/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
py=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [[ -z "${CUDA_COMPUTE_CAP:-}" ]]; then
  CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)
  export CUDA_COMPUTE_CAP
fi
echo "== build (--features cuda, compute capability $CUDA_COMPUTE_CAP)"
cargo build --release --features cuda --bins --examples

echo "== CPU-vs-GPU parity of measure (ResNet and ViT, every tap and act_u)"
cargo test --release --features cuda --test measure_on_gpu

echo "== ViT forward on the GPU: memprune, then PyTorch + timm (same GPU, same batches)"
for section in tiny base embedded; do
  BENCH_DEVICE=cuda target/release/examples/bench_vit "$runs" "$section"
  DEVICE=cuda "$py" examples/bench_vit_torch.py "$runs" "$section"
done

echo "== measure on the GPU (ImageNet-size cases): memprune, then PyTorch with forward hooks"
BENCH_DEVICE=cuda BENCH_ONLY=imagenet RUNS=$runs target/release/examples/bench_measure
DEVICE=cuda RUNS=$runs "$py" examples/bench_measure_torch.py imagenet
