#!/usr/bin/env python3
"""Make the inputs the README's quickstart runs on (not committed: ~120 MB):

    /work/venv/bin/python examples/make_quickstart_inputs.py [--out qs]

- qs/vit_s16.safetensors: timm's vit_small_patch16_224, random init (seed 0), no head.
- qs/resnet50.safetensors: torchvision's resnet50, random init (seed 0).
- qs/pets/{cat,dog}/NNN.jpg: 12 JPEGs per class of random sizes (60 to 300 pixels a side),
  a folder without train/ and test/.
- qs/pets-split/{train,test}/{cat,dog}/NNN.jpg: the same layout with a test split (8 + 4
  images per class).

Needs torch, torchvision, timm, safetensors, pillow, numpy.
"""

import argparse
import os

import numpy as np
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file


def save(model, path):
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def images(root, classes, count, rng):
    """`count` JPEGs per class: smooth colour gradients plus noise, of random sizes."""
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for k in range(count):
            w, h = (int(v) for v in rng.integers(60, 301, size=2))
            y, x = np.mgrid[0:h, 0:w]
            base = rng.integers(0, 256, size=3)
            img = np.stack(
                [(base[i] + x * (i + 1) + y * (3 - i)) % 256 for i in range(3)], axis=-1
            ).astype(np.float64)
            img += rng.normal(0, 20, size=img.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
                os.path.join(root, c, f"{k:03d}.jpg"), quality=90
            )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="qs")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    save(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0),
         os.path.join(a.out, "vit_s16.safetensors"))
    torch.manual_seed(0)
    save(torchvision.models.resnet50(weights=None), os.path.join(a.out, "resnet50.safetensors"))
    rng = np.random.default_rng(0)
    images(os.path.join(a.out, "pets"), ["cat", "dog"], 12, rng)
    images(os.path.join(a.out, "pets-split", "train"), ["cat", "dog"], 8, rng)
    images(os.path.join(a.out, "pets-split", "test"), ["cat", "dog"], 4, rng)
    print(f"wrote {a.out}/pets and {a.out}/pets-split")


if __name__ == "__main__":
    main()
