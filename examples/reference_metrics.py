#!/usr/bin/env python3
"""Independent reference implementation of memprune's UnitMem and LayerMem
(see docs/METRICS.md), for checking memprune's numbers. Uses numpy + torch only, and the
model definitions in examples/resnet9.py and examples/torchvision_resnet.py; no
memprune code.

It reads a views directory written by `memprune ... --dump-views DIR`:

    DIR/points.npy  int64   (P,)             global point indices, in order
    DIR/views.npy   float32 (P, V, C, S, S)  the exact normalised views
    DIR/meta.json   {"metric": "unit"|"layer", "views": K, "pairing": "views"|"clean",
                     "reduce": "mean"|"median", ...}
    DIR/clean.npy   float32 (P, C, S, S)     only for pairing "clean"

UnitMem: V = K. LayerMem, pairing "views": V = 2K, pair j = views (2j, 2j+1);
pairing "clean": V = K, pair j = (clean, view j).

Usage:
    python examples/reference_metrics.py unit  --model CKPT.safetensors [--arch resnet9|resnet] \
        --views-dir DIR [--reduce mean|median]
    python examples/reference_metrics.py layer --model F.safetensors --reference G.safetensors \
        [--arch resnet9|resnet] --views-dir DIR

Prints JSON on stdout:
    unit:  {"metric": "unitmem", "layers": [{"name", "unit_mem": [..], "argmax": [point..],
            "mu_max": [..], "mu_rest": [..], "dead": n, "signed": bool}]}
    layer: {"metric": "layermem", "layers": [{"name", "layer_mem", "dlayer_mem"}],
            "per_point": [{"point", "sslmem": [per layer], "ssl_f": [..], "ssl_g": [..]}]}
("dead", "signed", "ssl_f", "ssl_g" are extras for debugging.)

Conventions (where docs/METRICS.md leaves a choice):
- argmax = the first maximal point in point order.
- median of the other N-1 values = numpy's median (mean of the two middle values when
  N-1 is even; torch.median would return the lower one).
- dead unit: mu_max <= 0 -> UnitMem 0 (mu_max and mu_rest still reported).
- a view whose tap is all zeros keeps a zero rep (no division by 0); if
  SSL_f + SSL_g == 0 the point's SSLMem' is 0.
- every tap is a layer, in tap order, `pool` included; dLayerMem of the first is null.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet9 import ResNet9, widths_from_state_dict  # noqa: E402
import torchvision_resnet  # noqa: E402

HEADS = ("fc.", "projector.")


def load_encoder(path, arch=None, dtype=torch.float64):
    """Build the encoder from a safetensors checkpoint (any float dtype) in `dtype`."""
    sd = load_file(path)
    if arch is None:
        arch = "resnet9" if "block1.conv.weight" in sd else "resnet"
    if arch == "resnet9":
        widths, c_in = widths_from_state_dict(sd)
        model = ResNet9(widths, in_channels=c_in)
    elif arch == "resnet":
        model = torchvision_resnet.from_state_dict_layout(sd)
    else:
        raise SystemExit(f"unknown arch {arch}")
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        raise SystemExit(f"{path}: missing tensors {missing}")
    bad = [k for k in unexpected if not k.startswith(HEADS)]
    if bad:
        raise SystemExit(f"{path}: unexpected tensors {bad}")
    return model.to(dtype).eval()


@torch.no_grad()
def taps_of(model, x, dtype, batch=64):
    """x: numpy (B, C, S, S) -> {tap: numpy (B, ...)} in tap order."""
    out = {}
    for i in range(0, x.shape[0], batch):
        t = model.forward_taps(torch.from_numpy(x[i:i + batch]).to(dtype))
        for k, v in t.items():
            out.setdefault(k, []).append(v.double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def read_views(d):
    meta = json.load(open(os.path.join(d, "meta.json")))
    points = np.load(os.path.join(d, "points.npy"))
    views = np.load(os.path.join(d, "views.npy"))
    clean = None
    if meta.get("pairing") == "clean" and meta.get("metric") == "layer":
        clean = np.load(os.path.join(d, "clean.npy"))
    assert points.dtype == np.int64 and views.dtype == np.float32
    assert views.ndim == 5 and views.shape[0] == points.shape[0]
    return meta, points, views, clean


def _num(x):
    x = float(x)
    return x if np.isfinite(x) else None


def unit_mem(model, points, views, reduce="mean", dtype=torch.float64):
    P, V = views.shape[:2]
    assert P >= 2, "UnitMem needs at least 2 points"
    taps = taps_of(model, views.reshape(P * V, *views.shape[2:]), dtype)
    layers = []
    for name, t in taps.items():
        act = t.reshape(P, V, t.shape[1], -1).mean(axis=3)  # (P, V, C): spatial mean
        mu = act.mean(axis=1)                               # (P, C): mean over the K views
        k = np.argmax(mu, axis=0)                           # first maximal point
        units = np.arange(mu.shape[1])
        mu_max = mu[k, units]
        rest_mask = np.ones_like(mu, dtype=bool)
        rest_mask[k, units] = False
        rest = mu.T[rest_mask.T].reshape(mu.shape[1], P - 1)  # (C, P-1), point order kept
        mu_rest = rest.mean(axis=1) if reduce == "mean" else np.median(rest, axis=1)
        dead = mu_max <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            um = np.where(dead, 0.0, (mu_max - mu_rest) / (mu_max + mu_rest))
        layers.append({
            "name": name,
            "unit_mem": [_num(v) for v in um],
            "argmax": [int(points[i]) for i in k],
            "mu_max": [_num(v) for v in mu_max],
            "mu_rest": [_num(v) for v in mu_rest],
            "dead": int(dead.sum()),
            "signed": bool((act < 0).any()),
        })
    return {"metric": "unitmem", "layers": layers}


def _reps(t, lead):
    r = t.reshape(*lead, -1)
    n = np.linalg.norm(r, axis=-1, keepdims=True)
    return r / np.where(n > 0, n, 1.0)


def ssl_distances(model, views, clean, pairing, dtype):
    """{tap: (P,) mean distance over the K pairs} for one encoder."""
    P, V = views.shape[:2]
    taps = taps_of(model, views.reshape(P * V, *views.shape[2:]), dtype)
    ctaps = taps_of(model, clean, dtype) if pairing == "clean" else None
    out = {}
    for name, t in taps.items():
        r = _reps(t, (P, V))
        if pairing == "views":
            d = np.linalg.norm(r[:, 0::2] - r[:, 1::2], axis=-1)      # (P, K)
        else:
            c = _reps(ctaps[name], (P,))[:, None, :]
            d = np.linalg.norm(r - c, axis=-1)                       # (P, K)
        out[name] = d.mean(axis=1)
    return out


def layer_mem(f, g, points, views, clean, pairing, dtype=torch.float64):
    sf = ssl_distances(f, views, clean, pairing, dtype)
    sg = ssl_distances(g, views, clean, pairing, dtype)
    names = list(sf)
    assert names == list(sg), "f and g must have the same taps"
    layers, per = [], {}
    prev = None
    for name in names:
        den = sf[name] + sg[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(den > 0, (sg[name] - sf[name]) / den, 0.0)
        per[name] = s
        lm = float(s.mean())
        layers.append({"name": name, "layer_mem": lm,
                       "dlayer_mem": None if prev is None else lm - prev})
        prev = lm
    per_point = [{"point": int(p),
                  "sslmem": [float(per[n][i]) for n in names],
                  "ssl_f": [float(sf[n][i]) for n in names],
                  "ssl_g": [float(sg[n][i]) for n in names]}
                 for i, p in enumerate(points)]
    return {"metric": "layermem", "layers": layers, "per_point": per_point}


def run(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("unit")
    u.add_argument("--model", required=True)
    u.add_argument("--reduce", choices=["mean", "median"], default=None,
                   help="default: meta.json's reduce, else mean")
    l = sub.add_parser("layer")
    l.add_argument("--model", required=True)
    l.add_argument("--reference", required=True)
    for p in (u, l):
        p.add_argument("--arch", choices=["resnet9", "resnet"], default=None,
                       help="default: detected from the tensor names")
        p.add_argument("--views-dir", required=True)
        p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                       help="compute precision (float64 is the reference)")
        p.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    meta, points, views, clean = read_views(a.views_dir)
    K = int(meta["views"])
    if a.cmd == "unit":
        assert views.shape[1] == K, f"unit: expected V = K = {K}, got {views.shape[1]}"
        reduce = a.reduce or meta.get("reduce", "mean")
        return unit_mem(load_encoder(a.model, a.arch, dtype), points, views, reduce, dtype)
    pairing = meta.get("pairing", "views")
    want = 2 * K if pairing == "views" else K
    assert views.shape[1] == want, f"layer/{pairing}: expected V = {want}, got {views.shape[1]}"
    f = load_encoder(a.model, a.arch, dtype)
    g = load_encoder(a.reference, a.arch, dtype)
    return layer_mem(f, g, points, views, clean, pairing, dtype)


if __name__ == "__main__":
    json.dump(run(), sys.stdout, indent=1)
    sys.stdout.write("\n")
