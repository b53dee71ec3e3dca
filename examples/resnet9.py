"""memprune's ResNet9 (the encoder of Wang et al., "Localizing Memorization in SSL
Vision Encoders", NeurIPS 2024) as a plain PyTorch module.

Train it anywhere (SimCLR, supervised, ...), then hand it to memprune:

    from safetensors.torch import save_file
    model = ResNet9()                     # or ResNet9(in_channels=1) for Fashion-MNIST
    ...                                   # train
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, "ckpt.safetensors")
    # memprune measure unit ckpt.safetensors

The tensor names (`block{i}.conv.weight`, `block{i}.bn.{weight,bias,running_mean,
running_var,num_batches_tracked}`, i = 1..8) are the layout memprune reads. The widths
and the input channel count are read back from the tensor shapes. The optional heads
`fc.*` (supervised classifier on the pooled vector) and `projector.*` (SimCLR MLP) are
saved with the state dict and ignored by memprune's encoder.

Architecture: 8 blocks Conv3x3(no bias) -> BatchNorm(eps 1e-5) -> ReLU, with
MaxPool2d(2) (floor mode) after the ReLU of blocks 2, 5 and 6, residual sums
res2 = block2 + block4 and res6 = block6 + block8, then global average pooling.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_WIDTHS = (32, 64, 64, 64, 128, 256, 256, 256)
POOLED_BLOCKS = (2, 5, 6)
TAP_NAMES = ("block1", "block2", "block3", "block4", "res2",
             "block5", "block6", "block7", "block8", "res6", "pool")


class ConvBlock(nn.Module):
    def __init__(self, c_in, c_out, pool=False):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5)
        self.pool = nn.MaxPool2d(2) if pool else None  # no parameters: not in the state dict

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.pool(x) if self.pool is not None else x


class ResNet9(nn.Module):
    """`widths`: the 8 block widths; widths[1] == widths[3] and widths[5] == widths[7]
    (the residual sums need it). `num_classes`: adds `fc` when set. `projector`:
    (hidden, out) adds a SimCLR head `projector` = Linear-BN1d-ReLU-Linear when set."""

    def __init__(self, widths=DEFAULT_WIDTHS, in_channels=3, num_classes=None, projector=None):
        super().__init__()
        widths = list(widths)
        assert len(widths) == 8, "ResNet9 has 8 blocks"
        assert widths[1] == widths[3] and widths[5] == widths[7], "residual widths must match"
        c_in = in_channels
        for i, w in enumerate(widths, start=1):
            self.add_module(f"block{i}", ConvBlock(c_in, w, pool=i in POOLED_BLOCKS))
            c_in = w
        self.fc = nn.Linear(widths[-1], num_classes) if num_classes else None
        if projector:
            hidden, out = projector
            self.projector = nn.Sequential(
                nn.Linear(widths[-1], hidden), nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True), nn.Linear(hidden, out))
        else:
            self.projector = None

    def forward_taps(self, x):
        """All memprune taps, in memprune's order, as {name: tensor}."""
        t = {}
        t["block1"] = o1 = self.block1(x)
        t["block2"] = o2 = self.block2(o1)
        t["block3"] = o3 = self.block3(o2)
        t["block4"] = o4 = self.block4(o3)
        t["res2"] = res2 = o2 + o4
        t["block5"] = o5 = self.block5(res2)
        t["block6"] = o6 = self.block6(o5)
        t["block7"] = o7 = self.block7(o6)
        t["block8"] = o8 = self.block8(o7)
        t["res6"] = res6 = o6 + o8
        t["pool"] = F.adaptive_avg_pool2d(res6, 1).flatten(1)
        return t

    def forward(self, x):
        """The encoder's representation (the `pool` tap), or the logits when `fc` is set."""
        h = self.forward_taps(x)["pool"]
        return self.fc(h) if self.fc is not None else h


def widths_from_state_dict(sd):
    """(widths, in_channels) of a ResNet9 state dict, read from the conv shapes."""
    ws = [tuple(sd[f"block{i}.conv.weight"].shape) for i in range(1, 9)]
    return [w[0] for w in ws], ws[0][1]
