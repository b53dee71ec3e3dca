"""The functions of `memprune`: each runs the command of the same name (the binary's own
command line, compiled into the extension) and returns what it wrote as a `Result`.

Keyword options are the command's flags: ``points=200`` is ``--points 200``,
``no_control=True`` or ``control=False`` is ``--no-control``, a list is joined with commas,
``progress=False`` is ``--quiet``. An unknown option raises `memprune.Error` naming it, as
the CLI does. The defaults are the CLI's (``memprune measure unit --help`` lists them).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from . import _memprune
from ._results import Result

PathLike = Union[str, "os.PathLike[str]"]

# Flags whose default is on: False gives their `--no-` form.
_NEGATABLE = {"control"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(options: Mapping[str, Any]) -> list:
    argv = []
    for name, value in options.items():
        if value is None:
            continue
        if name == "progress":
            if not value:
                argv.append("--quiet")
            continue
        if value is True:
            argv.append(_flag(name))
        elif value is False:
            if name in _NEGATABLE:
                argv.append(_flag("no_" + name))
        elif isinstance(value, (list, tuple)):
            argv += [_flag(name), ",".join(str(v) for v in value)]
        elif isinstance(value, os.PathLike):
            argv += [_flag(name), os.fspath(value)]
        else:
            argv += [_flag(name), str(value)]
    return argv


def _as_array(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.ascontiguousarray(np.asarray(value))
    except Exception as e:  # noqa: BLE001 - any conversion failure is the user's input
        raise _memprune.Error(f"{what}: not an array ({e})") from None


def _write_checkpoint(tensors: Mapping[str, Any], folder: Path, metadata) -> str:
    path = folder / "checkpoint.safetensors"
    raw = []
    for name, value in tensors.items():
        a = _as_array(value, f"checkpoint tensor {name}")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        raw.append((str(name), str(a.dtype), list(a.shape), a.tobytes()))
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    _memprune.write_checkpoint(str(path), raw, meta)
    return str(path)


def _write_split(folder: Path, split: str, value: Any) -> None:
    images, labels = value if isinstance(value, tuple) else (value, None)
    images = _as_array(images, f"{split} images")
    if images.dtype != np.uint8:
        raise _memprune.Error(
            f"{split} images: dtype {images.dtype}; memprune reads uint8 pixels "
            "(N x H x W or N x H x W x C), as the image files it reads hold"
        )
    np.save(folder / f"{split}_images.npy", images)
    if labels is not None:
        labels = _as_array(labels, f"{split} labels").astype(np.int64, copy=False)
        np.save(folder / f"{split}_labels.npy", labels)


def _write_data(data: Any, folder: Path) -> str:
    path = folder / "data"
    path.mkdir()
    if isinstance(data, Mapping):
        unknown = set(data) - {"train", "test"}
        if unknown:
            raise _memprune.Error(f"data: unknown split(s) {sorted(unknown)} (train, test)")
        for split, value in data.items():
            _write_split(path, split, value)
    else:
        _write_split(path, "train", data)
    return str(path)


class _Call:
    """One command run: inputs given in memory go to a private temporary folder, removed
    when the call returns; their paths read `<memory>/...` in the result."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="memprune-")
        self.folder = Path(self._dir.name)

    def checkpoint(self, value: Any, metadata=None) -> Optional[str]:
        if value is None or isinstance(value, (str, os.PathLike)):
            return None if value is None else os.fspath(value)
        if isinstance(value, Mapping):
            return _write_checkpoint(value, self.folder, metadata)
        raise _memprune.Error(
            "checkpoint: a path or a dict of name -> array "
            "(e.g. {k: v.numpy() for k, v in model.state_dict().items()})"
        )

    def data(self, value: Any) -> Optional[str]:
        if value is None or isinstance(value, (str, os.PathLike)):
            return None if value is None else os.fspath(value)
        return _write_data(value, self.folder)

    def run(self, argv: Sequence[str]) -> None:
        _memprune.run_cli(["memprune", *argv])

    def json(self, name: str) -> Result:
        text = (self.folder / name).read_text()
        text = text.replace(json.dumps(str(self.folder))[1:-1], "<memory>")
        return Result(json.loads(text))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._dir.cleanup()


def _json_command(
    command: Sequence[str],
    options: Mapping[str, Any],
    checkpoint=None,
    data=None,
    metadata=None,
    reference=None,
) -> Result:
    """Runs ``memprune COMMAND [CHECKPOINT] [--reference R] [--data D] FLAGS --json F`` and
    returns what it wrote to F."""
    with _Call() as call:
        argv = list(command)
        ckpt = call.checkpoint(checkpoint, metadata)
        if ckpt is not None:
            argv.append(ckpt)
        if reference is not None:
            argv += ["--reference", call.checkpoint(reference, metadata)]
        d = call.data(data)
        if d is not None:
            argv += ["--data", d]
        call.run(argv + _options(options) + ["--json", str(call.folder / "result.json")])
        return call.json("result.json")


def measure_unit(checkpoint=None, data=None, *, metadata=None, **options) -> Result:
    """UnitMem of every unit of every layer (``memprune measure unit``)."""
    return _json_command(["measure", "unit"], options, checkpoint, data, metadata)


def measure_class(checkpoint=None, data=None, *, metadata=None, **options) -> Result:
    """ClassMem of every unit of every layer (``memprune measure class``)."""
    return _json_command(["measure", "class"], options, checkpoint, data, metadata)


def measure_layer(f=None, reference=None, data=None, *, metadata=None, **options) -> Result:
    """LayerMem and dLayerMem of every layer of ``f`` against ``reference`` (``memprune
    measure layer``)."""
    return _json_command(["measure", "layer"], options, f, data, metadata, reference)


def probe(checkpoint=None, data=None, *, metadata=None, **options) -> Result:
    """Linear-probe (and with ``knn=True`` kNN) accuracy of a frozen encoder (``memprune
    probe``)."""
    return _json_command(["probe"], options, checkpoint, data, metadata)


def inspect(checkpoint=None, *, metadata=None, **options) -> Result:
    """The detected architecture, its layers and units, parameters and MACs (``memprune
    inspect --json``)."""
    return _json_command(["inspect"], options, checkpoint, None, metadata)


def plan(policy: PathLike, **options) -> Result:
    """What a policy would do, writing nothing (``memprune plan --policy FILE --json``)."""
    return _json_command(["plan", "--policy", os.fspath(policy)], options)


def run_policy(policy: PathLike, **options) -> Result:
    """Runs a policy: measure, plan, rewrite the checkpoint, evaluate before and after
    (``memprune --policy FILE``); the policy's own outputs are written as it says."""
    return _json_command(["--policy", os.fspath(policy)], options)


def embed(checkpoint=None, data=None, *, metadata=None, **options) -> Result:
    """The encoder's features of every point of a split (``memprune embed``): a Result with
    ``features`` (points x values, float32), ``indices``, ``labels`` (or None) and ``names``."""
    with _Call() as call:
        out = call.folder / "features.npy"
        argv = ["embed"]
        ckpt = call.checkpoint(checkpoint, metadata)
        if ckpt is not None:
            argv.append(ckpt)
        d = call.data(data)
        if d is not None:
            argv += ["--data", d]
        call.run(argv + _options(options) + ["--out", str(out)])
        labels = call.folder / "features.labels.npy"
        names = call.folder / "features.names.txt"
        return Result(
            {
                "features": np.load(out),
                "indices": np.load(call.folder / "features.indices.npy"),
                "labels": np.load(labels) if labels.exists() else None,
                "names": names.read_text().splitlines() if names.exists() else None,
            }
        )
