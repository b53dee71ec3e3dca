#!/usr/bin/env python3
"""Where a timm ViT forward spends its time, by operator (torch.profiler), for
docs/VIT-PROFILE.md beside memprune's profile of the same forward:

    TORCH_THREADS=1 python examples/profile_vit_torch.py [vit_tiny_patch16_224] [BATCH]

Random weights, inference mode, 224x224, one warm-up forward, then one profiled forward.
"""
import os
import sys

import timm
import torch
from torch.profiler import ProfilerActivity, profile

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
name = sys.argv[1] if len(sys.argv) > 1 else "vit_tiny_patch16_224"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
m = timm.create_model(name, pretrained=False).eval()
x = torch.randn(batch, 3, 224, 224)
with torch.inference_mode():
    m.forward_features(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        m.forward_features(x)
print(f"{name}, batch {batch}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
