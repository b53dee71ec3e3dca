#!/usr/bin/env bash
# Reproduces the paper's findings on the embedded default, one command:
#   examples/findings.sh [OUT_DIR]        (default out/findings; Table 6 is most of its time)
# 1. LayerMem by depth (f against g, the 1,000 candidate points, 10 view pairs)
# 3. UnitMem and ClassMem of the SSL encoder f and of the supervised encoder (1000 points)
# 5. Table 5: fine-tune the two highest-dLayerMem layers, or the last two, then probe
# 6. Table 6: pruning top / random / low UnitMem units, linear-probe accuracy
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/findings}
mkdir -p "$OUT"
cargo build --release -q
M=target/release/memprune
F=assets/models/resnet9-simclr-f.safetensors
S=assets/models/resnet9-supervised.safetensors

echo "== Finding 1: LayerMem by depth"
$M measure layer --points 1000 -q --json "$OUT/layer.json"
echo; echo "== Finding 3: UnitMem and ClassMem, SSL (f) against supervised"
for m in "$F" "$S"; do
  n=$(basename "$m" .safetensors)
  $M measure unit "$m" -q --json "$OUT/unit-$n.json"
  $M measure class "$m" -q --json "$OUT/class-$n.json"
done
echo; echo "== Finding 5: which layers to fine-tune (Table 5)"
$M --policy policies/finetune-most-mem.yaml -q
FT=out/finetune-most-mem.safetensors
$M train --framework supervised --init "$FT" --epochs 2 -q --out "$OUT/ft-dlayermem.safetensors"
$M train --framework supervised --init "$FT" --trainable block7,block8 --epochs 2 -q \
  --out "$OUT/ft-last2.safetensors"
for m in ft-dlayermem ft-last2; do $M probe "$OUT/$m.safetensors" -q; done
echo; echo "== Finding 6: pruning by UnitMem (Table 6)"
$M experiment prune -q --json "$OUT/table6.json" --chart "$OUT/table6.svg"
