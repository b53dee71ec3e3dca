#!/usr/bin/env bash
# Trains the embedded default encoders (assets/models) on the embedded Fashion-MNIST subset
# (train split, 10,000 images, 1x28x28), one after the other, with 2 threads:
#   f: SimCLR ResNet9, split shared+candidates (9,000 images)
#   g: SimCLR ResNet9, split shared+independent (9,000 images), LayerMem's reference
#   supervised: ResNet9 with a linear head, split all (10,000 images)
# Widths: the paper's ResNet9 (32,64,64,64,128,256,256,256); f and g 20 SimCLR epochs each,
# the supervised encoder 8 epochs: about 70 minutes on 2 cores (times in
# assets/models/README.md). Then probes each encoder and the baselines.
#
# usage: examples/train_embedded.sh [OUT_DIR]   (default assets/models)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-assets/models}
BIN=${MEMPRUNE:-target/release/memprune}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"
W=32,64,64,64,128,256,256,256
COMMON="--arch resnet9 --widths $W --batch 256 --seed 0 --split-seed 0 --threads 2"

"$BIN" train --framework simclr $COMMON --split shared+candidates --epochs 20 \
  --optimizer lars --lr 0.3 --wd 1e-6 --warmup-epochs 1 --temperature 0.5 \
  --out "$OUT/resnet9-simclr-f.safetensors"
"$BIN" train --framework simclr $COMMON --split shared+independent --epochs 20 \
  --optimizer lars --lr 0.3 --wd 1e-6 --warmup-epochs 1 --temperature 0.5 \
  --out "$OUT/resnet9-simclr-g.safetensors"
"$BIN" train --framework supervised $COMMON --split all --epochs 8 \
  --optimizer sgd --lr 0.1 --wd 5e-4 --warmup-epochs 1 \
  --out "$OUT/resnet9-supervised.safetensors"
# The resume states ($OUT/*.state.safetensors, git-ignored) stay: `--resume` continues a run.

for m in resnet9-simclr-f resnet9-simclr-g resnet9-supervised; do
  "$BIN" probe "$OUT/$m.safetensors" --threads 2
done
"$BIN" probe --random-init $W --threads 2
"$BIN" probe --raw --threads 2
