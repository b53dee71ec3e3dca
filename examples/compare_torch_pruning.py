"""Torch-Pruning's rows of docs/COMPRESSION.md's comparison: the embedded ResNet9 (and the
MAE ViT) pruned by Torch-Pruning with its default criterion (`GroupMagnitudeImportance(p=2)`,
the group L2 norm its README and examples use, per layer, no recovery), at 30 % and 50 %
of the units, in one step and in 3 (`iterative_steps`); then evaluated by memprune exactly
as its own rows are (a policy whose model is the Torch-Pruning checkpoint and that only
freezes: its "before" figures are that model's).

    /work/venv/bin/python examples/compare_torch_pruning.py [resnet9] [vit]
    # appends to out/table/torch_pruning.jsonl; examples/compression_table.py table prints it

Needs torch, timm, torch-pruning and safetensors; memprune's binary at target/release.
"""
import json
import os
import subprocess
import sys

import safetensors.torch
import torch
import torch_pruning as tp

sys.path.insert(0, os.path.dirname(__file__))
from resnet9 import ResNet9, widths_from_state_dict  # noqa: E402

OUT = "out/table"
BIN = os.environ.get("MEMPRUNE", "target/release/memprune")
MODELS = {
    "resnet9": "assets/models/resnet9-simclr-f.safetensors",
    "vit": "assets/models/vit-mae-f.safetensors",
}


def resnet9(path):
    sd = safetensors.torch.load_file(path)
    enc = {k: v for k, v in sd.items() if k.startswith("block")}
    widths, c = widths_from_state_dict(enc)
    m = ResNet9(widths=widths, in_channels=c)
    m.load_state_dict(enc)
    return m.eval(), torch.randn(1, c, 28, 28), {}


def vit(path):
    from load_pruned_vit import vit_from
    import timm

    m = vit_from(path)
    c = m.patch_embed.proj.in_channels
    s = m.patch_embed.img_size[0]
    heads = {a.qkv: a.num_heads for a in m.modules()
             if isinstance(a, timm.models.vision_transformer.Attention)}
    return m, torch.randn(1, c, s, s), {"num_heads": heads, "prune_num_heads": True,
                                         "prune_head_dims": False}


def prune(model, fraction, steps):
    m, x, extra = {"resnet9": resnet9, "vit": vit}[model](MODELS[model])
    if "num_heads" in extra:
        extra["head_pruning_ratio"] = fraction
    pruner = tp.pruner.MetaPruner(
        m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=fraction, iterative_steps=steps, **extra)
    for _ in range(steps):
        pruner.step()
    meta = {}
    if model == "vit":
        meta["memprune.heads"] = ",".join(str(b.attn.num_heads) for b in m.blocks)
        for b in m.blocks:  # timm reads these in forward; TP updates num_heads only
            b.attn.head_dim = b.attn.qkv.out_features // 3 // b.attn.num_heads
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    name = f"tp-{model}-{int(fraction * 100)}-{steps}step"
    path = os.path.join(OUT, name + ".safetensors")
    safetensors.torch.save_file(sd, path, metadata=meta)
    return name, path


def evaluate(name, path):
    pol = os.path.join(OUT, name + ".yaml")
    js = os.path.join(OUT, name + ".json")
    with open(pol, "w") as f:
        f.write(f"model: {path}\nactions:\n  - freeze: {{last: 1}}\n"
                "evaluation: {probe: true, knn: true, speed: false}\n"
                f"output: {{checkpoint: {OUT}/{name}.copy.safetensors, json: {js}}}\n")
    r = subprocess.run([BIN, "--policy", pol, "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name}: {r.stderr.strip()}")
    return json.load(open(js))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for model in sys.argv[1:] or ["resnet9"]:
        for fraction in (0.3, 0.5):
            for steps in (1, 3):
                name, path = prune(model, fraction, steps)
                rep = evaluate(name, path)
                row = {"model": model, "fraction": fraction, "steps": steps,
                       "importance": "GroupMagnitudeImportance(p=2)", "report": rep}
                with open(os.path.join(OUT, "torch_pruning.jsonl"), "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name, rep["before"]["cost"]["params"], rep["before"]["probe_accuracy"], flush=True)
