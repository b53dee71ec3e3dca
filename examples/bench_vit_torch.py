#!/usr/bin/env python3
"""timm's side of examples/bench_vit.rs: the same networks, batches and threads.

    TORCH_THREADS=2 python examples/bench_vit_torch.py [RUNS] [tiny|embedded]

- tiny: ViT-Tiny/16 (vit_tiny_patch16_224) forward at 224x224, batch 64, the
  representation (forward_head(pre_logits=True)).
- embedded: the default `memprune train --arch vit` encoder (VisionTransformer(img_size=28,
  patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4, mlp_ratio=4,
  num_classes=0)) forward at batch 256 returning the taps memprune computes, by forward
  hooks: per block the attention sub-layer output after its residual add (norm2's input),
  the heads' output before proj (proj's input), fc1 after GELU (mlp.act's output) and the
  MLP sub-layer output after its residual add (the block's output), every token; then the
  representation. Also every tap reduced to act_u as memprune's UnitMem does (the token
  mean; for the heads the mean over tokens of each head's L2 norm).

Random weights (timm's init); median images/s after one warm-up, inference mode, float32.
"""
import os
import statistics
import sys
import time

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
only = sys.argv[2] if len(sys.argv) > 2 else None
versions = f"(torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads)"


def bench(f, images):
    f()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(images / (time.perf_counter() - t))
    return statistics.median(out)


if only in (None, "tiny"):
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    x = torch.randn(64, 3, 224, 224)
    with torch.inference_mode():
        fwd = bench(lambda: m.forward_head(m.forward_features(x), pre_logits=True), 64)
    print(f"timm vit_tiny forward, 224x224, batch 64: {fwd:.1f} img/s {versions}")

if only in (None, "embedded"):
    m = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6,
                          num_heads=4, mlp_ratio=4, num_classes=0).eval()
    x = torch.randn(256, 1, 28, 28)
    taps = []
    for blk in m.blocks:
        blk.norm2.register_forward_pre_hook(lambda mod, a: taps.append(a[0]))
        blk.attn.proj.register_forward_pre_hook(lambda mod, a: taps.append(a[0]))
        blk.mlp.act.register_forward_hook(lambda mod, a, out: taps.append(out))
        blk.register_forward_hook(lambda mod, a, out: taps.append(out))

    def every_tap():
        taps.clear()
        rep = m.forward_head(m.forward_features(x), pre_logits=True)
        assert len(taps) == 6 * 4
        return taps + [rep]

    def act_u():
        out = []
        for i, t in enumerate(every_tap()[:-1]):
            if i % 4 == 1:  # the heads: mean over tokens of each head's L2 norm
                n, tok, d = t.shape
                out.append(t.reshape(n, tok, 4, d // 4).norm(dim=-1).mean(1))
            else:
                out.append(t.mean(1))
        return out

    with torch.inference_mode():
        fwd = bench(every_tap, 256)
        acts = bench(act_u, 256)
    print(f"timm embedded vit forward, every tap (all tokens), 28x28, batch 256: {fwd:.1f} img/s {versions}")
    print(f"timm embedded vit forward, every tap reduced to act_u, 28x28, batch 256: {acts:.1f} img/s")
