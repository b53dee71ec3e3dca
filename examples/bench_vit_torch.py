#!/usr/bin/env python3
"""timm's side of examples/bench_vit.rs: ViT-Tiny/16 forward at 224x224, batch 64.

    TORCH_THREADS=2 python examples/bench_vit_torch.py [RUNS]

Random weights (timm's init); median images/s after one warm-up, inference mode, float32.
"""
import os
import statistics
import sys
import time

import timm
import torch

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
m = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
x = torch.randn(64, 3, 224, 224)


def bench(f):
    f()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(64 / (time.perf_counter() - t))
    return statistics.median(out)


with torch.inference_mode():
    fwd = bench(lambda: m.forward_head(m.forward_features(x), pre_logits=True))
print(f"timm vit_tiny forward, 224x224, batch 64: {fwd:.1f} img/s "
      f"(torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads)")
