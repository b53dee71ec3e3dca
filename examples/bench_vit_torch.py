#!/usr/bin/env python3
"""timm's side of examples/bench_vit.rs: the same networks, batches and threads.

    TORCH_THREADS=2 python examples/bench_vit_torch.py [RUNS] [tiny|embedded|mae|simclr]

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

- mae, simclr: one training step of that encoder as `memprune train --arch vit` runs it
  (src/train/mae.rs, src/model/vit_init.rs, src/train/model.rs), batch 256 images, AdamW
  lr 1e-3, weight decay 0.05 on tensors of rank >= 2 (memprune's rule). MAE as the MAE
  reference (models_mae.py): fixed sin-cos position embeddings (not trained), 75 % of the
  49 patches masked by a random shuffle per image (12 kept), decoder Linear(128, 64) +
  mask token + 2 timm Blocks of width 64 (4 heads, MLP 256) + LayerNorm + Linear(64, 16),
  loss on the masked patches' pixels normalised per patch (norm_pix_loss), betas
  0.9/0.95. SimCLR: 2 views of each image (512), the class token after the final norm,
  projector Linear(128, 512)-BatchNorm1d-ReLU-Linear(512, 128), NT-Xent temperature 0.5.
  The inputs are a fixed random batch: memprune's steps also make their views (random
  resized crops, flips; a few ms), which is not timed here.

Random weights (timm's init); median images/s after one warm-up, float32 (the forwards in
inference mode).
"""
import os
import statistics
import sys
import time

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer

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

def embedded_vit():
    return VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6,
                             num_heads=4, mlp_ratio=4, num_classes=0)


if only in (None, "embedded"):
    m = embedded_vit().eval()
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


class Mae(nn.Module):
    """The MAE reference's forward (models_mae.py) around timm's ViT, at memprune's sizes."""

    def __init__(self):
        super().__init__()
        self.enc = embedded_vit()
        self.enc.pos_embed.requires_grad_(False)  # fixed sin-cos, as MAE (random here)
        self.decoder_embed = nn.Linear(128, 64)
        self.mask_token = nn.Parameter(torch.randn(1, 1, 64) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, 50, 64), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(64, 4, mlp_ratio=4, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(2)])
        self.decoder_norm = nn.LayerNorm(64, eps=1e-6)
        self.decoder_pred = nn.Linear(64, 16)

    def forward(self, imgs, ratio=0.75):
        enc = self.enc
        x = enc.patch_embed(imgs) + enc.pos_embed[:, 1:, :]
        n, length, d = x.shape
        keep = int(length * (1 - ratio))
        ids_shuffle = torch.argsort(torch.rand(n, length), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones(n, length)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(n, -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in enc.blocks:
            x = blk(x)
        x = enc.norm(x)
        x = self.decoder_embed(x)
        fill = self.mask_token.repeat(n, length + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], fill], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        # patchify (1 channel: memprune's and MAE's pixel orders agree), norm_pix_loss
        target = imgs.reshape(n, 1, 7, 4, 7, 4).permute(0, 2, 4, 3, 5, 1).reshape(n, 49, 16)
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


class Simclr(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = embedded_vit()
        self.projector = nn.Sequential(nn.Linear(128, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                       nn.Linear(512, 128))

    def forward(self, x, t=0.5):
        z = self.projector(self.enc(x))
        n = z.shape[0] // 2
        u = F.normalize(z, dim=1)
        sim = u @ u.t() / t
        sim.fill_diagonal_(float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
        return F.cross_entropy(sim, target)


def adamw(model, betas):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                              {"params": rest, "weight_decay": 0.0}], lr=1e-3, betas=betas)


for name, model, betas, views in [("mae", Mae, (0.9, 0.95), 1), ("simclr", Simclr, (0.9, 0.999), 2)]:
    if only not in (None, name):
        continue
    torch.manual_seed(0)
    model = model().train()
    opt = adamw(model, betas)
    x = torch.randn(256 * views, 1, 28, 28)

    def step():
        loss = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    r = bench(step, 256)
    extra = " (512 views)" if views == 2 else ""
    print(f"timm embedded vit {name} training step, batch 256{extra}: {r:.1f} img/s "
          f"({256 / r:.3f} s/step) {versions}")
