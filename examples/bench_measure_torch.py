"""PyTorch side of examples/bench_measure.rs: the same networks, batch sizes and thread
count, forward passes returning every tap (as memprune's measure does).

    TORCH_THREADS=2 python examples/bench_measure_torch.py
    TORCH_THREADS=2 python examples/bench_measure_torch.py imagenet   # the ImageNet-size cases

imagenet: what `bench_measure` (BENCH_ONLY=imagenet) times, done with forward hooks:
torchvision resnet50 and timm vit_small_patch16_224 (random weights) at 224x224, each case
in a child process (its peak RSS), RUNS rounds (default 3), medians:
- *-unit: 6 points x 10 views through f, every tap reduced to act_u by hooks as it is
  computed (channel means; for the ViT token means, the heads the token mean of each head's
  L2 norm), then the mean over each point's views (UnitMem's mu);
- *-layer: 3 points x 10 view pairs through f and g (two random encoders), every tap
  reduced by hooks to the distance of each pair's L2-normalised outputs (LayerMem's SSLMem').
The views are random tensors (DEVICE=cuda: on the GPU) (memprune makes its views, random resized crops and flips,
inside the timed run). Batch BATCH (default 64) views per forward.
"""
import os, statistics, time, sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from resnet9 import ResNet9  # noqa: E402

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
torch.manual_seed(0)


def bench(name, model, batch, size, in_ch, runs=5, taps=True, channels_last=False):
    model.eval()
    x = torch.randn(batch, in_ch, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fwd = (lambda: model.forward_taps(x)) if taps else (lambda: model(x))
    with torch.inference_mode():
        fwd()
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            fwd()
            ts.append(time.perf_counter() - t)
    med = statistics.median(ts)
    print(f"{name:<44} batch {batch:>3}  {size:>3}x{size:<3}  {batch / med:>8.1f} img/s  (median of {runs})", flush=True)




def taps_by_hooks(model, arch, reduce, reduce_heads=None):
    """Registers hooks that hand each of memprune's taps of `model` to `reduce` (the ViT's
    heads, proj's input, to `reduce_heads` when given) as soon as it is computed; returns
    the list the reductions go to."""
    out = []

    def hook(mod, a, o):
        out.append(reduce(o))

    def pre(mod, a):
        out.append(reduce(a[0]))

    def pre_heads(mod, a):
        out.append((reduce_heads or reduce)(a[0]))

    if arch == "r50":
        model.maxpool.register_forward_hook(hook)  # the stem, after its max pool
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for blk in layer:
                blk.relu.register_forward_hook(hook)  # conv1, conv2 (ReLU'd), the block output
    else:
        for blk in model.blocks:
            blk.norm2.register_forward_pre_hook(pre)
            blk.attn.proj.register_forward_pre_hook(pre_heads)
            blk.mlp.act.register_forward_hook(hook)
            blk.register_forward_hook(hook)
    return out


def imagenet_case(case):
    import resource
    arch, metric = case.split("-")
    batch = int(os.environ.get("BATCH", "64"))
    dev = torch.device(os.environ.get("DEVICE", "cpu"))  # DEVICE=cuda: examples/gpu_check.sh
    k = 10

    def make():
        if arch == "r50":
            m = torchvision.models.resnet50()
            m.fc = torch.nn.Identity()
        else:
            import timm
            m = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
        return m.eval().to(dev)

    def unit_reduce(t):
        return t.mean((2, 3)) if t.dim() == 4 else t.mean(1)

    def head_norms(t):
        n, tok, d = t.shape
        return t.reshape(n, tok, 6, d // 6).norm(dim=-1).mean(1)

    def pair_distances(t):
        f = t.flatten(1)
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return (f[0::2] - f[1::2]).norm(dim=1)

    t0 = time.perf_counter()
    with torch.inference_mode():
        if metric == "unit":
            points = 6
            f = make()
            acts = taps_by_hooks(f, arch, unit_reduce, head_norms)
            views = torch.randn(points * k, 3, 224, 224, device=dev)
            step = max(k, batch - batch % k)  # whole points per batch
            mus = []
            for i in range(0, points * k, step):
                acts.clear()
                rep = f(views[i:i + step])
                mus.append([a.reshape(-1, k, a.shape[-1]).double().mean(1) for a in acts + [rep]])
            n = points * k
        else:
            points = 3
            f, g = make(), make()
            views = torch.randn(points * 2 * k, 3, 224, 224, device=dev)
            step = max(2, batch - batch % 2)  # whole pairs per batch
            for m in (f, g):
                d = taps_by_hooks(m, arch, pair_distances)
                sums = []
                for i in range(0, points * 2 * k, step):
                    d.clear()
                    rep = m(views[i:i + step])
                    sums.append([x.double().sum() for x in d + [pair_distances(rep)]])
            n = points * 2 * k * 2
        if dev.type == "cuda":
            torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if len(sys.argv) == 3 and sys.argv[1] == "--case":
    imagenet_case(sys.argv[2])
    sys.exit(0)

if len(sys.argv) > 1 and sys.argv[1] == "imagenet":
    import subprocess
    rounds = int(os.environ.get("RUNS", "3"))
    cases = ["r50-unit", "r50-layer", "vits-unit", "vits-layer"]
    res = {c: [] for c in cases}
    for _ in range(rounds):
        for c in cases:
            out = subprocess.run([sys.executable, __file__, "--case", c], capture_output=True,
                                 text=True, check=True).stdout.split()
            n, dt, kib = int(out[0]), float(out[1]), float(out[2])
            res[c].append((n / dt, kib / 1024))
    names = {"r50-unit": "resnet50 UnitMem, 6 points x K = 10, 224x224",
             "r50-layer": "resnet50 LayerMem (f, g), 3 points x 10 pairs",
             "vits-unit": "ViT-S/16 UnitMem, 6 points x K = 10, 224x224",
             "vits-layer": "ViT-S/16 LayerMem (f, g), 3 points x 10 pairs"}
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {os.environ.get('BATCH', '64')}")
    for c in cases:
        rate = statistics.median(r for r, _ in res[c])
        rss = statistics.median(m for _, m in res[c])
        print(f"{names[c]:<48} {rate:>7.2f} views/s  peak RSS {rss:>7.1f} MiB  (median of {rounds}; forward hooks)")
    sys.exit(0)

print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
r9 = ResNet9(in_channels=3)
bench("paper ResNet9 forward (all taps)", r9, 256, 32, 3)
bench("paper ResNet9 forward (all taps, channels-last)", r9, 256, 32, 3, channels_last=True)
r18 = torchvision.models.resnet18()
r18.fc = torch.nn.Identity()
bench("resnet18 forward", r18, 256, 32, 3, taps=False)
bench("resnet18 forward (channels-last)", r18, 256, 32, 3, taps=False, channels_last=True)
bench("resnet18 forward", r18, 32, 224, 3, taps=False)
bench("resnet18 forward (channels-last)", r18, 32, 224, 3, taps=False, channels_last=True)
