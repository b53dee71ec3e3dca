"""PyTorch counterpart of examples/bench_train.rs: SimCLR training step of memprune's
ResNet9 (examples/resnet9.py) on 1x28x28 inputs, batch 256 images (512 views), projector
Linear(d, 512)-BN1d-ReLU-Linear(512, 128), NT-Xent with temperature 0.5, SGD momentum
step, 2 threads. Prints the median images/s over a few steps after one warm-up step.

The views are a fixed random batch (augmentation is not timed here; in the Rust bench the
view generation is part of each step and costs a few ms).

usage: /tmp/torch-venv/bin/python examples/bench_train_torch.py [steps] [widths]
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet9 import DEFAULT_WIDTHS, ResNet9  # noqa: E402


def nt_xent(z1, z2, t=0.5):
    n = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = u @ u.t() / t
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    widths = [int(w) for w in sys.argv[2].split(",")] if len(sys.argv) > 2 else list(DEFAULT_WIDTHS)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    batch = 256
    model = ResNet9(widths, in_channels=1, projector=(512, 128))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
    x = torch.randn(2 * batch, 1, 28, 28)
    rates = []
    for k in range(steps + 1):
        t0 = time.perf_counter()
        h = model.forward_taps(x)["pool"]
        z = model.projector(h)
        loss = nt_xent(z[:batch], z[batch:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if k > 0:
            rates.append(batch / dt)
        print(f"step {k}: loss {loss.item():.4f}, {dt:.2f} s, {batch / dt:.1f} img/s", file=sys.stderr)
    med = statistics.median(rates)
    print(f"pytorch {torch.__version__} SimCLR ResNet9 {widths} 1x28x28 batch {batch} "
          f"({torch.get_num_threads()} threads): median {med:.1f} images/s "
          f"({batch / med:.3f} s/step, {steps} steps)")


if __name__ == "__main__":
    main()
