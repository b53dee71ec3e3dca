#!/usr/bin/env python3
"""Write the ViT parity fixtures in tests/fixtures/vit/ (see tests/fixtures/README.md).

    python examples/make_vit_fixtures.py [--out tests/fixtures/vit]

Needs torch, timm, safetensors, numpy (the tests themselves do not). Deterministic:
seeded random weights, one thread, reference taps computed in float64 on the CPU with
timm's own modules, stored as float32.

Layouts (small configurations: the tensor layout is the point, not the size):
- vit_tiny: timm's vit_tiny_patch16_224 (width 192, 3 heads, MLP 768, patch 16) with 2
  blocks at img_size 32 (grid 2x2), float16 weights; also run at 48x48 (the position
  embedding resampled by timm's dynamic_img_size), the `_io48` file.
- dino_teacher.pth: a DINO training checkpoint: {'teacher': ..., 'student': ..., 'epoch'}
  with `backbone.` names and a DINO head, width 64, 4 heads (given by --heads), patch 8.
- dinov2_reg: DINOv2-style (LayerScale ls1/ls2.gamma, 4 register tokens, no_embed_class,
  patch 14, qkv without bias, global_pool='avg' with fc_norm), width 64, 4 heads.
- mae.pth: an MAE pretraining checkpoint {'model': encoder + decoder tensors}, width 64,
  4 heads, patch 8.

Each `<name>_io.safetensors` holds `input` (N, C, H, W) and `tap.<layer>` for every layer
memprune measures (all tokens), plus `features` (timm's forward_head(pre_logits=True)).
"""

import argparse
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

torch.set_num_threads(1)


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def taps(model, x):
    """Every layer memprune measures, in float64, with timm's modules."""
    out = {}
    heads_in = []
    hooks = [blk.attn.proj.register_forward_pre_hook(lambda m, a: heads_in.append(a[0]))
             for blk in model.blocks]
    t = model.patch_embed(x)
    t = model._pos_embed(t)
    t = model.norm_pre(t)
    for i, blk in enumerate(model.blocks):
        b = f"block{i + 1}"
        t = t + blk.ls1(blk.attn(blk.norm1(t)))
        out[f"tap.{b}.attn"] = t
        out[f"tap.{b}.heads"] = heads_in[-1]
        y = blk.norm2(t)
        out[f"tap.{b}.fc1"] = blk.mlp.act(blk.mlp.fc1(y))
        t = t + blk.ls2(blk.mlp(y))
        out[f"tap.{b}.mlp"] = t
    t = model.norm(t)
    out["tap.pool"] = model.forward_head(t, pre_logits=True)
    for h in hooks:
        h.remove()
    want = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(want, out["tap.pool"], atol=1e-12), "manual forward differs"
    out["features"] = want
    return out


def write_io(model, x, path):
    m = model.double()
    with torch.no_grad():
        t = taps(m, x.double())
    t = {k: v.float().contiguous() for k, v in t.items()}
    t["input"] = x.float().contiguous()
    save_file(t, path)
    model.float()


def sd(model, dtype=torch.float32):
    return {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..",
                                                  "tests", "fixtures", "vit"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator().manual_seed(100)

    # 1. vit_tiny_patch16_224's layout, 2 blocks, at 32x32; weights float16.
    m = VisionTransformer(img_size=32, patch_size=16, embed_dim=192, depth=2, num_heads=3,
                          mlp_ratio=4, num_classes=10, dynamic_img_size=True)
    randomise(m, 1)
    half = sd(m, torch.float16)
    save_file(half, os.path.join(a.out, "vit_tiny.safetensors"))
    m.load_state_dict({k: v.float() for k, v in half.items()})
    write_io(m, torch.randn(2, 3, 32, 32, generator=g), os.path.join(a.out, "vit_tiny_io.safetensors"))
    write_io(m, torch.randn(1, 3, 48, 48, generator=g), os.path.join(a.out, "vit_tiny_io48.safetensors"))

    # 2. A DINO training checkpoint (teacher and student, `backbone.` prefix, DINO head).
    def dino_vit(seed):
        v = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                              mlp_ratio=4, num_classes=0)
        return randomise(v, seed)
    teacher, student = dino_vit(2), dino_vit(3)

    def wrapped(v, seed):
        d = {f"backbone.{k}": t for k, t in v.state_dict().items()}
        hg = torch.Generator().manual_seed(seed)
        d["head.mlp.0.weight"] = torch.randn(32, 64, generator=hg)
        d["head.mlp.0.bias"] = torch.randn(32, generator=hg)
        d["head.last_layer.weight_g"] = torch.ones(16, 1)
        d["head.last_layer.weight_v"] = torch.randn(16, 32, generator=hg)
        return d
    torch.save({"teacher": wrapped(teacher, 20), "student": wrapped(student, 30), "epoch": 3},
               os.path.join(a.out, "dino_teacher.pth"))
    x = torch.randn(2, 3, 32, 32, generator=g)
    write_io(teacher, x, os.path.join(a.out, "dino_teacher_io.safetensors"))
    write_io(student, x, os.path.join(a.out, "dino_student_io.safetensors"))

    # 3. DINOv2-style: LayerScale, 4 registers, no_embed_class, qkv without bias, fc_norm.
    v2 = VisionTransformer(img_size=28, patch_size=14, embed_dim=64, depth=2, num_heads=4,
                           mlp_ratio=4, num_classes=0, init_values=1e-5, reg_tokens=4,
                           no_embed_class=True, qkv_bias=False, global_pool="avg",
                           in_chans=1)
    randomise(v2, 4)
    save_file(sd(v2), os.path.join(a.out, "dinov2_reg.safetensors"))
    write_io(v2, torch.randn(2, 1, 28, 28, generator=g), os.path.join(a.out, "dinov2_reg_io.safetensors"))

    # 4. An MAE pretraining checkpoint: {'model': encoder + decoder}.
    enc = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                            mlp_ratio=4, num_classes=0)
    randomise(enc, 5)
    dec = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                            mlp_ratio=4, num_classes=0)
    randomise(dec, 6)
    full = dict(enc.state_dict())
    full["mask_token"] = torch.zeros(1, 1, 32)
    full["decoder_embed.weight"] = torch.randn(32, 64, generator=g)
    full["decoder_embed.bias"] = torch.zeros(32)
    full["decoder_pos_embed"] = dec.pos_embed.detach().clone()
    for k, t in dec.blocks.state_dict().items():
        full[f"decoder_blocks.{k}"] = t
    full["decoder_norm.weight"] = torch.ones(32)
    full["decoder_norm.bias"] = torch.zeros(32)
    full["decoder_pred.weight"] = torch.randn(8 * 8 * 3, 32, generator=g)
    full["decoder_pred.bias"] = torch.zeros(8 * 8 * 3)
    torch.save({"model": full, "epoch": 799}, os.path.join(a.out, "mae.pth"))
    write_io(enc, torch.randn(2, 3, 32, 32, generator=g), os.path.join(a.out, "mae_io.safetensors"))

    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print(f"wrote {a.out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
