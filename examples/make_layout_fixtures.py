#!/usr/bin/env python3
"""Write the checkpoint-layout fixtures in tests/fixtures/layouts/ (see tests/fixtures/README.md).

    python examples/make_layout_fixtures.py [--out tests/fixtures/layouts]

Needs torch, torchvision, lightly and safetensors (the tests themselves need none of them).
Every file is a checkpoint as a library or a user writes it, from weights already in
tests/fixtures/, so the tests compare against the existing reference taps:

- lightly_simclr.pth: lightly's documented SimCLR (`backbone = nn.Sequential(*list(
  resnet.children())[:-1])` of a torchvision ResNet, lightly's SimCLRProjectionHead),
  `torch.save(model.state_dict())`. The ResNet is torchvision's own class and blocks at
  the widths of parity/resnet18_cifar (4, 8, 16, 32) with the CIFAR stem as lightly's and
  solo-learn's CIFAR examples make it (3x3 stride-1 conv1, maxpool replaced by Identity),
  loaded with those weights (strict), so its taps are parity/resnet18_cifar_io's.
- lightly_resnet18_keys.json: the names and shapes of the same construction on
  torchvision's full resnet18 (no weights).
- dinov2_train.pth: a DINOv2 training checkpoint as Meta's trainer saves it:
  {'model': SSLMetaArch state dict, 'optimizer', 'iteration'}, the networks' names under
  `teacher.backbone.`, `student.backbone.`, `teacher.dino_head.`, ... The backbones are the
  teacher and student of vit/dino_teacher.pth (so vit/dino_teacher_io and dino_student_io
  are their taps).
- two_models.pth: {'state_dict': ..., 'ema_state_dict': ...}: two candidate state dicts.
- legacy_state_dict.pth: a state dict in the legacy (pre-1.6, non-zip) format.
- legacy_module.pth: a whole pickled nn.Module in the legacy format.
- whole_module.pth: a whole pickled nn.Module (torch.save(model)), zip format.
- evil.pth, evil_legacy.pth: state dicts with one entry whose `__reduce__` runs
  `os.system("touch memprune_pwned")` on unpickling; evil_root.pth: that object alone.
  Loading them with memprune must create no file.
"""

import argparse
import json
import os

import torch
import torch.nn as nn
import torchvision
from lightly.models.modules import SimCLRProjectionHead
from safetensors.torch import load_file
from torchvision.models.resnet import BasicBlock, ResNet

torch.set_num_threads(1)
torch.manual_seed(0)
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")


def narrow_torchvision_resnet(widths=(4, 8, 16, 32), blocks=(2, 2, 2, 2)):
    """torchvision's ResNet class and BasicBlock at narrow widths (its constructor fixes
    64..512), children in torchvision's order: conv1, bn1, relu, maxpool, layer1..4,
    avgpool, fc."""
    m = ResNet(BasicBlock, list(blocks), num_classes=10)
    m.inplanes = widths[0]
    m.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(widths[0])
    for s, (w, n) in enumerate(zip(widths, blocks), start=1):
        setattr(m, f"layer{s}", m._make_layer(BasicBlock, w, n, stride=1 if s == 1 else 2))
    m.fc = nn.Linear(widths[-1], 10)
    return m


def cifar_stem(m):
    # lightly's and solo-learn's CIFAR ResNets: a 3x3 stride-1 conv1, no max-pool.
    m.conv1 = nn.Conv2d(3, m.conv1.out_channels, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


class SimCLR(nn.Module):
    """lightly's documented SimCLR model (the SimCLR example of lightly's documentation)."""

    def __init__(self, backbone, dim):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, dim, 16)

    def forward(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


class Evil:
    """Unpickling this runs a shell command that creates a file in the working folder."""

    def __reduce__(self):
        return (os.system, ("touch memprune_pwned",))


def keys_json(sd, source):
    return {
        "source": source,
        "tensors": [
            {"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in sd.items()
        ],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(FIXTURES, "layouts"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    # 1. lightly's backbone of a torchvision ResNet (CIFAR stem), weights of resnet18_cifar.
    ref = load_file(os.path.join(FIXTURES, "parity", "resnet18_cifar.safetensors"))
    resnet = cifar_stem(narrow_torchvision_resnet())
    resnet.load_state_dict(ref, strict=True)
    resnet.eval()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    model = SimCLR(backbone, 32).eval()
    io = load_file(os.path.join(FIXTURES, "parity", "resnet18_cifar_io.safetensors"))
    with torch.no_grad():
        got = backbone(io["input"]).flatten(1)
    err = (got - io["tap.pool"]).abs().max().item()
    assert err < 1e-4, f"the Sequential backbone does not give resnet18_cifar's pool ({err})"
    torch.save(model.state_dict(), os.path.join(a.out, "lightly_simclr.pth"))
    full = nn.Sequential(*list(torchvision.models.resnet18().children())[:-1])
    with open(os.path.join(a.out, "lightly_resnet18_keys.json"), "w") as f:
        src = f"torchvision {torchvision.__version__}: nn.Sequential(*list(resnet18().children())[:-1])"
        json.dump(keys_json(full.state_dict(), src), f, indent=1)
        f.write("\n")

    # 2. DINOv2's training checkpoint: one SSLMetaArch state dict under `model`.
    dino = torch.load(os.path.join(FIXTURES, "vit", "dino_teacher.pth"), weights_only=True)
    meta = {}
    for who in ("teacher", "student"):
        for k, v in dino[who].items():
            k = k.removeprefix("module.")
            if k.startswith("backbone."):
                meta[f"{who}.{k}"] = v
            else:
                meta[f"{who}.dino_head.{k.removeprefix('head.')}"] = v
    torch.save({"model": meta, "optimizer": {"state": {}, "param_groups": []}, "iteration": 12},
               os.path.join(a.out, "dinov2_train.pth"))

    # 3. Two candidate state dicts.
    sd = {k: v for k, v in ref.items()}
    # Two dicts (not one referenced twice).
    torch.save({"state_dict": sd, "ema_state_dict": dict(sd), "epoch": 3},
               os.path.join(a.out, "two_models.pth"))

    # 4. What memprune refuses: legacy files, whole modules, and code in the pickle.
    small = {"conv1.weight": ref["conv1.weight"], "bn1.weight": ref["bn1.weight"]}
    torch.save(small, os.path.join(a.out, "legacy_state_dict.pth"),
               _use_new_zipfile_serialization=False)
    tiny = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2))
    torch.save(tiny, os.path.join(a.out, "legacy_module.pth"),
               _use_new_zipfile_serialization=False)
    torch.save(tiny, os.path.join(a.out, "whole_module.pth"))
    torch.save(dict(small, evil=Evil()), os.path.join(a.out, "evil.pth"))
    torch.save(dict(small, evil=Evil()), os.path.join(a.out, "evil_legacy.pth"),
               _use_new_zipfile_serialization=False)
    torch.save(Evil(), os.path.join(a.out, "evil_root.pth"))

    total = 0
    for name in sorted(os.listdir(a.out)):
        size = os.path.getsize(os.path.join(a.out, name))
        total += size
        print(f"{name}: {size} bytes")
    assert total < 1_500_000, total


if __name__ == "__main__":
    main()
