#!/usr/bin/env python3
"""Write tests/fixtures/parity/resnet9_authors{,_io}.safetensors (see tests/fixtures/README.md).

    python examples/make_authors_resnet9_fixture.py [--out tests/fixtures/parity]

The authors' ResNet9 (Wang et al. 2024, `resnet9model.py`) as they wrote it: modules
`prep`, `layer1_head`, `layer1_residual1/2`, `layer2`, `layer3_head`, `layer3_residual1/2`,
each Sequential(conv (3x3, padding 1, with bias), batch (BatchNorm2d), relu[, pool
(MaxPool2d(2))]) with a pool in prep, layer1_head, layer2 and layer3_head; residual adds
after layer1_residual2 and layer3_residual2; classifier Sequential(MaxPool2d(2), Flatten,
Linear). Only the widths are narrower than theirs (8, 16, 16, 16, 32, 64, 64, 64 for 32,
64, 64, 64, 128, 256, 256, 256) to keep the file small; the names are theirs.

Seeded random weights, BatchNorm affine and running statistics included (eval mode); the
taps (every module output, the two sums, the flattened final pool) are computed in float64
from the stored float32 weights. Needs torch and safetensors; deterministic (one thread).
"""

import argparse
import os
from collections import OrderedDict

import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.set_num_threads(1)
WIDTHS = (8, 16, 16, 16, 32, 64, 64, 64)


def conv_bn_relu_pool(cin, cout, pool=False):
    layers = [("conv", nn.Conv2d(cin, cout, kernel_size=3, padding=1)),
              ("batch", nn.BatchNorm2d(cout)), ("relu", nn.ReLU(inplace=True))]
    if pool:
        layers.append(("pool", nn.MaxPool2d(2)))
    return nn.Sequential(OrderedDict(layers))


class AuthorsResNet9(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, w=WIDTHS):
        super().__init__()
        self.prep = conv_bn_relu_pool(in_channels, w[0], pool=True)
        self.layer1_head = conv_bn_relu_pool(w[0], w[1], pool=True)
        self.layer1_residual1 = conv_bn_relu_pool(w[1], w[2])
        self.layer1_residual2 = conv_bn_relu_pool(w[2], w[3])
        self.layer2 = conv_bn_relu_pool(w[3], w[4], pool=True)
        self.layer3_head = conv_bn_relu_pool(w[4], w[5], pool=True)
        self.layer3_residual1 = conv_bn_relu_pool(w[5], w[6])
        self.layer3_residual2 = conv_bn_relu_pool(w[6], w[7])
        self.classifier = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(w[7], num_classes))

    def forward_taps(self, x):
        t = OrderedDict()
        t["prep"] = x = self.prep(x)
        t["layer1_head"] = x = self.layer1_head(x)
        a = x
        t["layer1_residual1"] = x = self.layer1_residual1(x)
        t["layer1_residual2"] = x = self.layer1_residual2(x)
        t["layer1_sum"] = x = x + a
        t["layer2"] = x = self.layer2(x)
        t["layer3_head"] = x = self.layer3_head(x)
        b = x
        t["layer3_residual1"] = x = self.layer3_residual1(x)
        t["layer3_residual2"] = x = self.layer3_residual2(x)
        t["layer3_sum"] = x = x + b
        t["pool"] = self.classifier[1](self.classifier[0](x))
        return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/parity")
    out = ap.parse_args().out
    model = AuthorsResNet9()
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "resnet9_authors.safetensors"))
    m64 = AuthorsResNet9().double().eval()
    m64.load_state_dict({k: (v.double() if v.is_floating_point() else v) for k, v in sd.items()})
    x = torch.randn((2, 3, 32, 32), generator=g)
    with torch.no_grad():
        taps = m64.forward_taps(x.double())
    io = {"input": x.contiguous()}
    io.update({f"tap.{k}": v.float().contiguous() for k, v in taps.items()})
    save_file(io, os.path.join(out, "resnet9_authors_io.safetensors"),
              metadata={"tap_order": ",".join(taps)})


if __name__ == "__main__":
    main()
