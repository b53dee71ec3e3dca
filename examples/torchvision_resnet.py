"""A torchvision-compatible ResNet with configurable widths, and memprune's taps.

The state-dict names are exactly torchvision's (`conv1.weight`, `bn1.*`,
`layer{s}.{j}.conv1.weight`, `.bn1.*`, `.conv2`, `.bn2`, `.conv3`/`.bn3` for
Bottleneck, `.downsample.0.weight`, `.downsample.1.*`, `fc.*`), so
`TvResNet(Bottleneck, [3, 4, 6, 3])` loads torchvision's resnet50 weights with
`strict=True` and computes the same thing; narrow widths give small test networks.
Blocks follow torchvision: BasicBlock strides in conv1, Bottleneck strides in its 3x3
conv2 (ResNet v1.5); the shortcut is a 1x1 strided conv + BN when the stride or the
width changes.

Two stems: "imagenet" (conv1 7x7/2 pad 3, bn1, relu, maxpool 3x3/2 pad 1) and
"cifar" (conv1 3x3/1 pad 1, bn1, relu, no maxpool); memprune tells them apart by the
kernel size of conv1.weight.

Taps, in order: `conv1` (after bn1+relu, and after the maxpool for the ImageNet stem),
then per block `layer{s}.{j}.conv1` (after bn1+relu), for Bottleneck also
`layer{s}.{j}.conv2` (after bn2+relu), then `layer{s}.{j}` (after the residual add and
the final relu), and last `pool` (global average pool, flattened).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward_taps(self, x, prefix, taps):
        h = F.relu(self.bn1(self.conv1(x)))
        taps[f"{prefix}.conv1"] = h
        h = self.bn2(self.conv2(h))
        idt = self.downsample(x) if self.downsample is not None else x
        out = F.relu(h + idt)
        taps[prefix] = out
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward_taps(self, x, prefix, taps):
        h = F.relu(self.bn1(self.conv1(x)))
        taps[f"{prefix}.conv1"] = h
        h = F.relu(self.bn2(self.conv2(h)))
        taps[f"{prefix}.conv2"] = h
        h = self.bn3(self.conv3(h))
        idt = self.downsample(x) if self.downsample is not None else x
        out = F.relu(h + idt)
        taps[prefix] = out
        return out


class TvResNet(nn.Module):
    def __init__(self, block, layers, widths=(64, 128, 256, 512), stem="imagenet",
                 in_channels=3, num_classes=None):
        super().__init__()
        assert stem in ("imagenet", "cifar")
        self.stem = stem
        c = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        c_in = c
        for s, (n, planes) in enumerate(zip(layers, widths), start=1):
            stride = 1 if s == 1 else 2
            blocks = []
            for j in range(n):
                st = stride if j == 0 else 1
                ds = None
                if st != 1 or c_in != planes * block.expansion:
                    ds = nn.Sequential(conv1x1(c_in, planes * block.expansion, st),
                                       nn.BatchNorm2d(planes * block.expansion))
                blocks.append(block(c_in, planes, st, ds))
                c_in = planes * block.expansion
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, num_classes) if num_classes else None

    def forward_taps(self, x):
        taps = {}
        h = F.relu(self.bn1(self.conv1(x)))
        if self.stem == "imagenet":
            h = F.max_pool2d(h, 3, stride=2, padding=1)
        taps["conv1"] = h
        for s in range(1, 5):
            for j, blk in enumerate(getattr(self, f"layer{s}")):
                h = blk.forward_taps(h, f"layer{s}.{j}", taps)
        taps["pool"] = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return taps

    def forward(self, x):
        h = self.forward_taps(x)["pool"]
        return self.fc(h) if self.fc is not None else h


def from_state_dict_layout(sd):
    """Build an (uninitialised) TvResNet matching a torchvision-layout state dict:
    block type from the presence of conv3, block counts from the names, widths from
    the shapes, stem from conv1's kernel size."""
    bottleneck = any(k.endswith(".conv3.weight") for k in sd)
    block = Bottleneck if bottleneck else BasicBlock
    layers, widths = [], []
    for s in range(1, 5):
        js = {int(k.split(".")[1]) for k in sd if k.startswith(f"layer{s}.")}
        layers.append(max(js) + 1)
        widths.append(sd[f"layer{s}.0.conv1.weight"].shape[0])
    w = sd["conv1.weight"]
    stem = "imagenet" if w.shape[-1] == 7 else "cifar"
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else None
    return TvResNet(block, layers, widths, stem, in_channels=w.shape[1], num_classes=num_classes)
