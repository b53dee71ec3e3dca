#!/usr/bin/env bash
# Installs what `cargo build --features cuda` needs on a machine without a CUDA toolkit,
# from PyPI's NVIDIA wheels only (no GPU and no driver needed to build):
#
#   examples/cuda_setup.sh /opt/cuda-wheels
#   export CUDA_ROOT=/opt/cuda-wheels/nvidia/cu13 PATH=/opt/cuda-wheels/nvidia/cu13/bin:$PATH
#   CUDA_COMPUTE_CAP=90 cargo build --release --features cuda
#
# CUDA 13.4: the newest toolkit that cudarc 0.19 (candle 0.11's CUDA bindings) knows. The
# cu12 nvcc wheels hold no `nvcc` driver, the CUDA 13 ones do. Set CUDA_COMPUTE_CAP to the
# GPU's compute capability (90 for an H100/H200, 80 for an A100): with no GPU, nothing can
# detect it. To run, the machine needs NVIDIA's driver (its libcuda.so.1) and the libraries
# below on LD_LIBRARY_PATH ($CUDA_ROOT/lib).
set -euo pipefail
dest=${1:?usage: examples/cuda_setup.sh DIR}
py=${PYTHON:-python3}
"$py" -m pip install --no-deps --target "$dest" \
  nvidia-cuda-nvcc==13.4.92 'nvidia-cuda-runtime==13.4.*' 'nvidia-cuda-crt==13.4.*' \
  nvidia-cuda-cccl 'nvidia-cublas==13.*' 'nvidia-curand==10.*' 'nvidia-cuda-nvrtc==13.4.*'
# nvvm (cicc, nvcc's front end) shares the nvidia/cu13 folder, which pip --target does not merge.
tmp=$(mktemp -d)
"$py" -m pip install --no-deps --target "$tmp" 'nvidia-nvvm==13.4.*'
cp -a "$tmp/nvidia/cu13/." "$dest/nvidia/cu13/"
rm -rf "$tmp"
root=$dest/nvidia/cu13
# The linker wants unversioned names; the wheels ship only the versioned ones.
for lib in cudart cublas cublasLt curand nvrtc; do
  so=$(ls "$root/lib/lib$lib.so."* | head -n 1)
  ln -sf "$(basename "$so")" "$root/lib/lib$lib.so"
done
# libcuda comes with the driver, not the toolkit: link against a stub (as the toolkit's own
# lib/stubs/libcuda.so), every driver function cudarc declares, replaced at run time by the
# driver's libcuda.so.1.
sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | head -n 1)
mkdir -p "$root/lib/stubs"
grep -oE 'fn cu[A-Za-z0-9_]+\(' "$sys" | sed -E 's/fn (.*)\(/void \1(void) {}/' | sort -u \
  > "$root/lib/stubs/libcuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda_stub.c"
echo "CUDA_ROOT=$root"
