#!/usr/bin/env python3
"""Write tests/fixtures/vit/timm_w128_h4{,_io}.safetensors (see tests/fixtures/README.md).

    python examples/make_vit_heads_fixture.py [--out tests/fixtures/vit]

A timm VisionTransformer whose head count shapes cannot tell: width 128 with 4 heads of
width 32 (a guess from the width says 2), 2 blocks, MLP 128, patch 7, 1 input channel,
img_size 28 (grid 4x4), seeded random float16 weights, no metadata. The `_io` file holds
`input` (4, 1, 28, 28), `features` (timm's forward_head(pre_logits=True), the class token
after `norm`) and `masked.A.B`: the features with head A of block 1 and head B of block 2
masked (their columns of `attn.proj.weight` zeroed, so that the head's output never
reaches the residual stream), for every A, B in 0..4. Computed in float64 from the stored
weights, stored as float32. Needs torch, timm, safetensors; deterministic (one thread).
"""

import argparse
import os

import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

torch.set_num_threads(1)
WIDTH, HEADS, DEPTH = 128, 4, 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/vit")
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=WIDTH,
                              depth=DEPTH, num_heads=HEADS, mlp_ratio=1.0, num_classes=0)
    g = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        # Stored as float16; the reference runs on exactly those values.
        for p in model.parameters():
            p.copy_(p.half().float())
    model.eval()
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "timm_w128_h4.safetensors"))

    x = torch.randn((4, 1, 28, 28), generator=g)
    ref = model.double()
    hd = WIDTH // HEADS

    def features():
        with torch.no_grad():
            return ref.forward_head(ref.forward_features(x.double()), pre_logits=True).float()

    io = {"input": x.contiguous(), "features": features()}
    saved = [b.attn.proj.weight.detach().clone() for b in ref.blocks]
    for a in range(HEADS):
        for b in range(HEADS):
            with torch.no_grad():
                for blk, w, h in zip(ref.blocks, saved, (a, b)):
                    blk.attn.proj.weight.copy_(w)
                    blk.attn.proj.weight[:, h * hd:(h + 1) * hd] = 0
            io[f"masked.{a}.{b}"] = features()
    save_file({k: v.contiguous() for k, v in io.items()},
              os.path.join(out, "timm_w128_h4_io.safetensors"))


if __name__ == "__main__":
    main()
