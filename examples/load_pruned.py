"""Load a checkpoint that memprune pruned (shapes shrunk) into an ordinary PyTorch module.

`memprune inspect PRUNED.safetensors` prints the new widths. Build the module as usual
(torchvision, timm, or examples/resnet9.py with its default widths), then let
`shrink_to(model, state_dict)` resize every Conv2d, BatchNorm and Linear to the shapes in the
checkpoint before loading it:

    import torchvision, safetensors.torch
    from load_pruned import shrink_to
    sd = safetensors.torch.load_file("out/keep-high-mem.safetensors")
    model = shrink_to(torchvision.models.resnet18(), sd)      # strict load_state_dict inside

Run as a script it checks itself: python examples/load_pruned.py PRUNED.safetensors
[resnet18|resnet50|resnet9] compares the module's pooled features with nothing but shapes
and a forward pass, and prints the widths it found.
"""
import sys

import torch
import torch.nn as nn


def _replace(model, name, new):
    parent = model
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def shrink_to(model, sd, strict=True):
    """Resize the layers of `model` to the tensor shapes of state dict `sd`, then load it.
    Names without a module (heads a checkpoint lacks) are left as they are."""
    for name, m in list(model.named_modules()):
        w = sd.get(name + ".weight")
        if w is None:
            continue
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(w.shape[1] * m.groups, w.shape[0], m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, bias=m.bias is not None)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = type(m)(w.shape[0], eps=m.eps, momentum=m.momentum)
        elif isinstance(m, nn.Linear):
            new = nn.Linear(w.shape[1], w.shape[0], bias=m.bias is not None)
        else:
            continue
        _replace(model, name, new)
    model.load_state_dict(sd, strict=strict)
    return model


if __name__ == "__main__":
    import os
    import safetensors.torch
    sd = safetensors.torch.load_file(sys.argv[1])
    arch = sys.argv[2] if len(sys.argv) > 2 else "resnet18"
    if arch == "resnet9":
        sys.path.insert(0, os.path.dirname(__file__))
        from resnet9 import ResNet9
        in_ch = sd["block1.conv.weight"].shape[1]
        model = ResNet9(in_channels=in_ch, num_classes=10 if "fc.weight" in sd else None,
                        projector=(512, 128) if "projector.0.weight" in sd else None)
        sd = {k: v for k, v in sd.items() if not k.startswith("predictor.")}
    else:
        import torchvision
        model = getattr(torchvision.models, arch)()
    model = shrink_to(model.eval(), sd)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    print("loaded", sys.argv[1], "as", arch, "with conv widths", widths)
