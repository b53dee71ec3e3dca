#!/usr/bin/env bash
# Trains the embedded default encoders (assets/models) on the embedded memorization data set
# (assets/fashion-mnist-planted: 500 Fashion-MNIST training images, 10 of f's 50 candidates
# replaced by MNIST digits; 1x28x28), one after the other, with 2 threads:
#   f: SimCLR ResNet9, split shared+candidates (450 images, the digits among them)
#   g: SimCLR ResNet9, split shared+independent (450 images), LayerMem's reference
#   supervised: ResNet9 with a linear head, split all (500 images)
#   vit-mae-f, vit-mae-g: MAE ViTs (6 blocks, width 128, 4 heads, patch 4), the same f/g
#   split, for the paper's Table 2 (attention against FC)
# The regime (few images, many epochs) is chosen so that memorization stands out of the
# controls (assets/models/README.md has the regimes tried). Widths: the paper's ResNet9.
# Then probes each encoder and the baselines. Timed end to end: see assets/models/README.md.
#
# usage: examples/train_embedded.sh [OUT_DIR]   (default assets/models)
#        PARTS=vit examples/train_embedded.sh    (only the ViTs; PARTS=resnet only the ResNets)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-assets/models}
BIN=${MEMPRUNE:-target/release/memprune}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"
DATA=assets/fashion-mnist-planted
W=32,64,64,64,128,256,256,256
COMMON="--arch resnet9 --widths $W --data $DATA --planted $DATA/planted.txt --seed 0 --split-seed 0 --threads 2"
SSL="--framework simclr --epochs 300 --batch 225 --optimizer lars --lr 0.3 --wd 1e-6 --warmup-epochs 10 --temperature 0.5"

PARTS=${PARTS:-resnet vit}
if [[ " $PARTS " == *" resnet "* ]]; then
"$BIN" train $SSL $COMMON --split shared+candidates --out "$OUT/resnet9-simclr-f.safetensors"
"$BIN" train $SSL $COMMON --split shared+independent --out "$OUT/resnet9-simclr-g.safetensors"
"$BIN" train --framework supervised $COMMON --split all --epochs 100 --batch 250 \
  --optimizer sgd --lr 0.1 --wd 5e-4 --warmup-epochs 5 \
  --out "$OUT/resnet9-supervised.safetensors"
# The resume states ($OUT/*.state.safetensors, git-ignored) stay: `--resume` continues a run.

for m in resnet9-simclr-f resnet9-simclr-g resnet9-supervised; do
  "$BIN" probe "$OUT/$m.safetensors" --data $DATA --threads 2
done
"$BIN" probe --random-init $W --data $DATA --threads 2
"$BIN" probe --raw --data $DATA --threads 2
fi

if [[ " $PARTS " == *" vit "* ]]; then
# MAE: AdamW (betas 0.9/0.95) lr 1e-3, weight decay 0.05, batch 64 (7 steps per epoch),
# 20 warm-up epochs, 75 % of the 49 patches masked, fixed sin-cos position embeddings,
# decoder 2 blocks of width 64. The shipped pair was trained with 1 thread each, f and g
# side by side (the same numbers as with 2 threads: tests).
VIT="--arch vit --depth 6 --width 128 --heads 4 --mlp 512 --patch 4 --framework mae \
  --epochs 400 --batch 64 --lr 1e-3 --wd 0.05 --warmup-epochs 20 \
  --data $DATA --planted $DATA/planted.txt --seed 0 --split-seed 0 --threads 2"
"$BIN" train $VIT --split shared+candidates --out "$OUT/vit-mae-f.safetensors"
"$BIN" train $VIT --split shared+independent --out "$OUT/vit-mae-g.safetensors"
for m in vit-mae-f vit-mae-g; do
  "$BIN" probe "$OUT/$m.safetensors" --data $DATA --threads 2
done
"$BIN" probe --random-like "$OUT/vit-mae-f.safetensors" --data $DATA --threads 2
fi
