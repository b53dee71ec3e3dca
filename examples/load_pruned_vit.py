"""Load a ViT that memprune pruned (MLP neurons and/or attention heads removed) into timm.

timm's VisionTransformer is built from the checkpoint's shapes; `shrink_to` (load_pruned.py)
resizes every Linear to the checkpoint, and each block's attention gets its head count from
memprune's metadata (`memprune.heads`, one per block), so nobody resets `num_heads` by hand:

    from load_pruned_vit import vit_from
    model = vit_from("out/vit-keep-high-mem.safetensors")   # eval mode, no classifier

Run as a script with a second checkpoint, the same pruning in `mask` mode (shapes kept), it
checks itself: both load in timm and give the same class-token features on a random batch
(memprune's own tests check removed == masked, and masked == timm on unpruned layouts).

    python examples/load_pruned_vit.py REMOVED.safetensors MASKED.safetensors
"""
import os
import sys

import safetensors.torch
import timm
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
from load_pruned import shrink_to  # noqa: E402

# Tensors of an MAE checkpoint that are not part of the encoder.
NOT_ENCODER = ("decoder_", "mask_token")


def vit_from(path):
    sd = safetensors.torch.load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    sd = {k: v for k, v in sd.items() if not k.startswith(NOT_ENCODER)}
    width, chans, patch, _ = sd["patch_embed.proj.weight"].shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    cls = "cls_token" in sd
    grid = int(round((sd["pos_embed"].shape[1] - int(cls)) ** 0.5))
    heads = [int(h) for h in meta.get("memprune.heads", "").split(",") if h.strip()]
    if len(heads) == 1:
        heads = heads * depth
    if len(heads) != depth:
        raise SystemExit(f"{path}: `memprune.heads` lists {len(heads)} blocks, the checkpoint has {depth}")
    inner = sd["blocks.0.attn.proj.weight"].shape[1]
    head_dim = inner // heads[0]
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=width, depth=depth,
        num_heads=max(1, width // head_dim), mlp_ratio=4.0, num_classes=0, global_pool="token",
        class_token=cls, qkv_bias="blocks.0.attn.qkv.bias" in sd,
    )
    shrink_to(model, sd)
    for block, h in zip(model.blocks, heads):
        block.attn.num_heads = h
        block.attn.head_dim = head_dim
        block.attn.attn_dim = h * head_dim
    return model.eval()


if __name__ == "__main__":
    removed, masked = vit_from(sys.argv[1]), vit_from(sys.argv[2])
    c = removed.patch_embed.proj.in_channels
    s = removed.patch_embed.img_size[0]
    x = torch.randn(8, c, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = removed(x), masked(x)
    widths = [blk.mlp.fc1.out_features for blk in removed.blocks]
    heads = [blk.attn.num_heads for blk in removed.blocks]
    err = (a - b).abs().max().item() / b.abs().max().item()
    print(f"timm loaded {sys.argv[1]}: MLP widths {widths}, heads {heads}; "
          f"max |removed - masked| / max |masked| = {err:.2e}")
