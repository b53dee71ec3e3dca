#!/usr/bin/env python3
"""Write the PyTorch parity fixtures in tests/fixtures/parity/ (see tests/fixtures/README.md).

    python examples/make_parity_fixtures.py [--out tests/fixtures/parity]

Needs torch, torchvision (only for the *_keys.json layouts), safetensors, numpy.
Deterministic: fixed seeds, single thread, taps computed in float64 on the CPU.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file, load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from resnet9 import ResNet9  # noqa: E402
from torchvision_resnet import TvResNet, BasicBlock, Bottleneck  # noqa: E402
import reference_metrics as ref  # noqa: E402

MAX_FILE = 1_000_000
MAX_TOTAL = 3_000_000


def randomise(model, seed):
    """Seeded random weights; BatchNorm affine and running stats randomised too, so
    BN folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)       # U(0.5, 1.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)        # N(0, 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)  # U(0.5, 1.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)
    return model.eval()


def state_dict_as(model, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
            for k, v in model.state_dict().items()}


# name -> (builder, input shape, seed, weight dtype, write io). Sizes are chosen to keep
# every file < 1 MB and the whole set < 3 MB.
def fixtures():
    r9n = [8, 16, 16, 16, 32, 64, 64, 64]
    r9c1 = [8, 16, 12, 16, 24, 32, 24, 32]   # irregular on purpose: w3 != w2, w7 != w6
    return {
        "resnet18_imagenet": (lambda: TvResNet(BasicBlock, [2, 2, 2, 2], (4, 8, 16, 32),
                                               "imagenet", num_classes=10),
                              (2, 3, 32, 32), 1, torch.float32, True),
        "resnet18_cifar": (lambda: TvResNet(BasicBlock, [2, 2, 2, 2], (4, 8, 16, 32),
                                            "cifar", num_classes=10),
                           (2, 3, 16, 16), 2, torch.float32, True),
        "resnet50_bottleneck": (lambda: TvResNet(Bottleneck, [2, 1, 1, 1], (4, 8, 16, 32),
                                                 "imagenet", num_classes=10),
                                (2, 3, 32, 32), 3, torch.float32, True),
        "resnet9_c1": (lambda: ResNet9(r9c1, in_channels=1, projector=(16, 8)),
                       (2, 1, 28, 28), 4, torch.float32, True),
        "resnet9_narrow": (lambda: ResNet9(r9n, in_channels=3, num_classes=10),
                           (2, 3, 32, 32), 5, torch.float32, True),
        # float16 weights; also the reference encoder g of the LayerMem fixtures
        "resnet9_narrow_f16": (lambda: ResNet9(r9n, in_channels=3),
                               (1, 3, 16, 16), 6, torch.float16, True),
        "resnet9_c1_bf16": (lambda: ResNet9(r9c1, in_channels=1),
                            (1, 1, 28, 28), 8, torch.bfloat16, True),
    }


def write_model_fixture(out, name, build, shape, seed, wdtype, io):
    model = randomise(build(), seed)
    sd = state_dict_as(model, wdtype)
    save_file(sd, os.path.join(out, f"{name}.safetensors"))
    entry = {"weights": f"{name}.safetensors", "weights_dtype": str(wdtype).replace("torch.", ""),
             "seed": seed, "arch": "resnet9" if isinstance(model, ResNet9) else "resnet"}
    if not io:
        return entry
    # Taps from exactly the stored (possibly fp16/bf16-rounded) weights, in float64.
    m64 = build().double().eval()
    m64.load_state_dict({k: (v.double() if v.is_floating_point() else v) for k, v in sd.items()})
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    with torch.no_grad():
        taps = m64.forward_taps(x.double())
    tensors = {"input": x.contiguous()}
    for k, v in taps.items():
        tensors[f"tap.{k}"] = v.float().contiguous()
    save_file(tensors, os.path.join(out, f"{name}_io.safetensors"),
              metadata={"tap_order": ",".join(taps)})  # one key: byte-reproducible header
    entry.update({"io": f"{name}_io.safetensors", "input_shape": list(shape),
                  "taps": [{"name": k, "shape": list(v.shape)} for k, v in taps.items()]})
    return entry


def write_keys(out):
    import torchvision
    for name, ctor in (("resnet18", torchvision.models.resnet18),
                       ("resnet50", torchvision.models.resnet50)):
        sd = ctor(weights=None).state_dict()
        write_keys_json(os.path.join(out, f"{name}_keys.json"),
                        f"torchvision {torchvision.__version__} models.{name}()", sd)
        # Self-check: our torchvision-layout module has exactly these names and shapes,
        # and computes the same thing.
        blk, layers = (BasicBlock, [2, 2, 2, 2]) if name == "resnet18" else (Bottleneck, [3, 4, 6, 3])
        ours = TvResNet(blk, layers, num_classes=1000)
        ours_sd = ours.state_dict()
        assert [(k, tuple(v.shape)) for k, v in ours_sd.items()] == \
               [(k, tuple(v.shape)) for k, v in sd.items()], name
        tv = randomise(ctor(weights=None), 99)
        ours.load_state_dict(tv.state_dict(), strict=True)
        ours.eval()
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            assert torch.allclose(tv(x), ours(x), atol=1e-5, rtol=1e-5), name
    # Default-width memprune ResNet9 (Fashion-MNIST setting) layout: too big to commit
    # as weights, so names and shapes only.
    sd = ResNet9(in_channels=1, num_classes=10).state_dict()
    write_keys_json(os.path.join(out, "resnet9_keys.json"),
                    "examples/resnet9.py ResNet9(in_channels=1, num_classes=10)", sd)


def write_keys_json(path, source, sd):
    """{"source": .., "tensors": [{"name", "shape", "dtype"}, ..]} in state-dict order,
    one tensor per line."""
    rows = [json.dumps({"name": k, "shape": list(v.shape),
                        "dtype": str(v.dtype).replace("torch.", "")}) for k, v in sd.items()]
    with open(path, "w") as fh:
        fh.write('{"source": %s,\n "tensors": [\n  %s\n ]\n}\n'
                 % (json.dumps(source), ",\n  ".join(rows)))


def smooth_images(g, n, c, s):
    """Random images with some spatial structure (upsampled low-res noise)."""
    low = torch.randn(n, c, s // 4, s // 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)


def make_views(g, base, v):
    """v perturbed views of each base image (P, C, S, S) -> (P, v, C, S, S): random
    shift, flip, brightness/contrast and pixel noise. Stands in for memprune's
    augmentations; the metrics only need fixed view tensors."""
    P, C, S, _ = base.shape
    out = torch.empty(P, v, C, S, S)
    for p in range(P):
        for j in range(v):
            x = base[p]
            dy, dx = (int(t) for t in torch.randint(-4, 5, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
            if torch.rand(1, generator=g) < 0.5:
                x = x.flip(2)
            a = 0.6 + 0.8 * torch.rand(1, generator=g)
            b = 0.4 * torch.randn(1, generator=g)
            out[p, j] = a * x + b + 0.3 * torch.randn(x.shape, generator=g)
    return out


def save_views_dir(d, points, views, meta, clean=None):
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "points.npy"), np.asarray(points, dtype=np.int64))
    np.save(os.path.join(d, "views.npy"), views.numpy().astype(np.float32))
    if clean is not None:
        np.save(os.path.join(d, "clean.npy"), clean.numpy().astype(np.float32))
    with open(os.path.join(d, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")


def dump_json(obj, path):
    """One line per list element of the top two levels, numbers in full (repr) precision."""
    with open(path, "w") as fh:
        fh.write(_compact(obj, 0))
        fh.write("\n")


def _compact(obj, depth):
    if depth >= 3 or not isinstance(obj, (dict, list)):
        return json.dumps(obj, separators=(",", ":"))
    pad = " " * (depth + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {_compact(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    items = [f"{pad}{_compact(v, depth + 1)}" for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"


def max_diff(a, b, path="$"):
    """Largest absolute difference between two JSON-like results (same structure)."""
    if isinstance(a, dict):
        return max((max_diff(a[k], b[k], f"{path}.{k}") for k in a), default=(0.0, path),
                   key=lambda t: t[0])
    if isinstance(a, list):
        return max((max_diff(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))),
                   default=(0.0, path), key=lambda t: t[0])
    if isinstance(a, bool) or isinstance(a, str) or a is None:
        return (0.0 if a == b else float("inf"), path)
    if isinstance(a, int):
        return (0.0 if a == b else float("inf"), path)
    return (abs(a - b), path)


def write_e2e(out, view_seed):
    P, K, S, C = 6, 3, 32, 3
    points = [3, 7, 8, 20, 21, 40]
    g = torch.Generator().manual_seed(view_seed)
    base = smooth_images(g, P, C, S)
    f_path = os.path.join(out, "resnet9_narrow.safetensors")
    g_path = os.path.join(out, "resnet9_narrow_f16.safetensors")
    f64 = ref.load_encoder(f_path)
    f32 = ref.load_encoder(f_path, dtype=torch.float32)
    g64 = ref.load_encoder(g_path)
    g32 = ref.load_encoder(g_path, dtype=torch.float32)
    report = {}

    # UnitMem: V = K views per point.
    views = make_views(g, base, K)
    d = os.path.join(out, "views_unit")
    save_views_dir(d, points, views, {"metric": "unit", "views": K, "pairing": "views",
                                      "reduce": "mean", "image_size": S, "channels": C,
                                      "note": "synthetic views for the parity test"})
    vnp = views.numpy().astype(np.float32)
    pts = np.asarray(points, dtype=np.int64)
    for reduce in ("mean", "median"):
        r64 = ref.unit_mem(f64, pts, vnp, reduce, torch.float64)
        r32 = ref.unit_mem(f32, pts, vnp, reduce, torch.float32)
        dump_json(r64, os.path.join(d, f"expected_unit_{reduce}.json"))
        report[f"unit_{reduce}"] = max_diff(r64, r32)
        report[f"unit_{reduce}_dead"] = sum(L["dead"] for L in r64["layers"])

    # LayerMem, pairing "views": V = 2K, pair j = (2j, 2j+1).
    views = make_views(g, base, 2 * K)
    d = os.path.join(out, "views_layer")
    save_views_dir(d, points, views, {"metric": "layer", "views": K, "pairing": "views",
                                      "reduce": "mean", "image_size": S, "channels": C,
                                      "note": "synthetic views for the parity test"})
    vnp = views.numpy().astype(np.float32)
    r64 = ref.layer_mem(f64, g64, pts, vnp, None, "views", torch.float64)
    r32 = ref.layer_mem(f32, g32, pts, vnp, None, "views", torch.float32)
    dump_json(r64, os.path.join(d, "expected_layer.json"))
    report["layer_views"] = max_diff(r64, r32)

    # LayerMem, pairing "clean": V = K, pairs (clean, view j); 16x16 images to save space.
    s2 = 16
    cbase = smooth_images(g, P, C, s2)
    views = make_views(g, cbase, K)
    d = os.path.join(out, "views_layer_clean")
    save_views_dir(d, points, views, {"metric": "layer", "views": K, "pairing": "clean",
                                      "reduce": "mean", "image_size": s2, "channels": C,
                                      "note": "synthetic views for the parity test"},
                   clean=cbase)
    vu = views.numpy().astype(np.float32)
    cl = np.load(os.path.join(d, "clean.npy"))
    r64 = ref.layer_mem(f64, g64, pts, vu, cl, "clean", torch.float64)
    r32 = ref.layer_mem(f32, g32, pts, vu, cl, "clean", torch.float32)
    dump_json(r64, os.path.join(d, "expected_layer.json"))
    report["layer_clean"] = max_diff(r64, r32)
    return report


def check_margins(out):
    """UnitMem fixture robustness: (smallest relative gap between the best and the
    second-best point of a live unit, largest pre-ReLU value of a dead unit). A near-tie
    or a barely dead unit would make the expected values fragile under float32."""
    d = os.path.join(out, "views_unit")
    v = np.load(os.path.join(d, "views.npy"))
    m = ref.load_encoder(os.path.join(out, "resnet9_narrow.safetensors"))
    P, V = v.shape[:2]
    pre = {}
    hooks = [getattr(m, f"block{i}").bn.register_forward_hook(
        lambda mod, inp, o, i=i: pre.setdefault(f"block{i}", []).append(o.detach()))
        for i in range(1, 9)]
    taps = ref.taps_of(m, v.reshape(P * V, *v.shape[2:]), torch.float64)
    for h in hooks:
        h.remove()
    dead_margin = -np.inf
    for name, outs in pre.items():
        t = torch.cat(outs).numpy()
        mu = taps[name].reshape(P, V, t.shape[1], -1).mean(axis=3).mean(axis=1)
        dead = mu.max(axis=0) <= 0
        if dead.any():
            dead_margin = max(dead_margin, float(t[:, dead].max()))
    worst = (np.inf, None)
    for name, t in taps.items():
        mu = t.reshape(P, V, t.shape[1], -1).mean(axis=3).mean(axis=1)
        s = np.sort(mu, axis=0)
        top, second = s[-1], s[-2]
        alive = top > 0
        if alive.any():
            gap = ((top - second)[alive] / top[alive]).min()
            if gap < worst[0]:
                worst = (float(gap), name)
        if ((top > 0) & (top < 1e-3)).any():  # barely alive: UnitMem flips between 0 and ~1
            worst = (0.0, name + " (barely alive unit)")
    return worst, dead_margin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "parity"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    manifest = {}
    for name, spec in fixtures().items():
        manifest[name] = write_model_fixture(out, name, *spec)
    write_keys(out)
    # Views seed: the first from 2083 on (2024..2082 fail the check) whose UnitMem argmaxes are not near-ties and
    # whose dead units are clearly dead.
    for view_seed in range(2083, 2200):
        report = write_e2e(out, view_seed)
        (gap, where), dead_margin = check_margins(out)
        print(f"view seed {view_seed}: argmax min rel gap {gap:.2e} ({where}), "
              f"dead units' max pre-ReLU {dead_margin:.2e}")
        if gap > 1e-3 and dead_margin < -1e-3:
            break
    else:
        raise SystemExit("no robust views seed found")
    report["view_seed"] = view_seed
    report["unit_argmax_min_rel_gap"] = (gap, where)
    report["dead_unit_max_pre_relu"] = dead_margin
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump({"generator": "examples/make_parity_fixtures.py", "torch": torch.__version__,
                   "view_seed": view_seed, "fixtures": manifest}, fh, indent=1)
        fh.write("\n")

    print("float64 reference vs float32 recomputation (max abs diff, where):")
    for k, v in report.items():
        print(f"  {k}: {v}")
    total = 0
    for root, _, files in os.walk(out):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            sz = os.path.getsize(p)
            total += sz
            print(f"  {sz:9d}  {os.path.relpath(p, out)}")
            assert sz < MAX_FILE, f"{p} is {sz} bytes"
    print(f"  {total:9d}  total")
    assert total < MAX_TOTAL, f"fixtures total {total} bytes"


if __name__ == "__main__":
    main()
