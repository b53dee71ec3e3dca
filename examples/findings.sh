#!/usr/bin/env bash
# The paper's findings on the embedded default, with memprune's intervals and controls, in
# one command (timed in the README):
#   examples/findings.sh [OUT_DIR]        (default out/findings)
# 1. LayerMem by depth: f against g on f's 50 candidates, 10 view pairs; control: as many
#    test points neither saw (corrected = LayerMem - control), and the symmetric estimate
#    (g's own independent points); the planted digits against the other candidates.
# 2. Table 2 (ViT, MAE): attention against FC LayerMem and dLayerMem per block, on the
#    embedded MAE ViT pair, every token flattened (the authors' LayerMem script) and the
#    class token only; the same controls.
# 3. UnitMem and ClassMem of the SSL encoder f and of the supervised encoder, each beside
#    the same units on as many unseen test points; UnitMem-excess per layer; the planted
#    digits as argmax of the highest-excess units.
# 5. Table 5: `memprune experiment finetune` (f transferred to the embedded MNIST subset:
#    head only, top-k by corrected dLayerMem, last k, 3 random; 3 seeds). About 25 min of
#    the total; FINDINGS_SKIP_TABLE5=1 skips it.
# 6. Table 6: pruning top / random / low UnitMem and UnitMem-excess units.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/findings}
mkdir -p "$OUT"
cargo build --release -q
M=target/release/memprune
F=assets/models/resnet9-simclr-f.safetensors
S=assets/models/resnet9-supervised.safetensors

echo "== Finding 1: LayerMem by depth (control: unseen test points)"
$M measure layer -q --json "$OUT/layer.json"
echo; echo "== Finding 1, symmetric estimate (control: g's independent points)"
$M measure layer -q --control independent --json "$OUT/layer-symmetric.json"
echo; echo "== Finding 2: ViT attention against FC (Table 2), MAE pair, every token"
VF=assets/models/vit-mae-f.safetensors
VG=assets/models/vit-mae-g.safetensors
$M measure layer "$VF" --reference "$VG" -q --json "$OUT/vit-layer.json"
echo; echo "== Finding 2, class token only"
$M measure layer "$VF" --reference "$VG" --tokens cls -q --json "$OUT/vit-layer-cls.json"
echo; echo "== Finding 2, symmetric estimate (control: g's independent points)"
$M measure layer "$VF" --reference "$VG" --control independent -q --json "$OUT/vit-layer-symmetric.json"
echo; echo "== Finding 3: UnitMem and ClassMem, SSL (f) against supervised"
for m in "$F" "$S"; do
  n=$(basename "$m" .safetensors)
  $M measure unit "$m" -q --json "$OUT/unit-$n.json"
  $M measure class "$m" -q --json "$OUT/class-$n.json"
done
echo; echo "== Finding 5: which layers to fine-tune (Table 5)"
if [ -z "${FINDINGS_SKIP_TABLE5:-}" ]; then
  $M experiment finetune -q --json "$OUT/table5.json"
fi
echo; echo "== Finding 6: pruning by UnitMem and UnitMem-excess (Table 6)"
$M experiment prune -q --json "$OUT/table6.json" --chart "$OUT/table6.svg"
