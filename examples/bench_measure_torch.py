"""PyTorch side of examples/bench_measure.rs: the same networks, batch sizes and thread
count, forward passes returning every tap (as memprune's measure does).

    TORCH_THREADS=2 python examples/bench_measure_torch.py
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
