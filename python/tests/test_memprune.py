"""The Python package against the CLI, on the embedded default (run from the repository).

The wheel's `memprune` command is the CLI these tests compare with, so a result equal to
the command's JSON is the same number the binary prints for the same settings.
"""

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import memprune

REPO = Path(__file__).resolve().parents[2]
MODEL_F = REPO / "assets" / "models" / "resnet9-simclr-f.safetensors"
DATA = REPO / "assets" / "fashion-mnist-planted"
SMALL = dict(points=12, views=2, seed=3, progress=False)


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    # The embedded default is found from the working directory's repository.
    monkeypatch.chdir(REPO)


def cli(*args, tmp_path):
    """Runs the installed `memprune` command; returns its JSON output."""
    exe = shutil.which("memprune")
    assert exe, "the wheel installs the memprune command"
    out = tmp_path / "cli.json"
    subprocess.run([exe, *args, "-q", "--json", str(out)], check=True, cwd=REPO)
    return json.loads(out.read_text())


def flags(options):
    argv = []
    for k, v in options.items():
        if k != "progress":
            argv += ["--" + k.replace("_", "-"), str(v)]
    return argv


def test_measure_unit_is_the_cli_json(tmp_path):
    r = memprune.measure_unit(**SMALL)
    assert r.to_dict() == cli("measure", "unit", *flags(SMALL), tmp_path=tmp_path)
    first = r.to_dict()["layers"][0]
    scores = r.layers[0].units.score
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float64
    assert scores.tolist() == [u["score"] for u in first["units"]]
    assert r.layers[0].name == first["name"]
    assert isinstance(r.points, np.ndarray) and r.points.dtype == np.int64


def test_measure_class_is_the_cli_json(tmp_path):
    r = memprune.measure_class(**SMALL)
    assert r.to_dict() == cli("measure", "class", *flags(SMALL), tmp_path=tmp_path)


def test_measure_layer_is_the_cli_json(tmp_path):
    opts = dict(points=8, views=2, seed=1, progress=False)
    r = memprune.measure_layer(**opts)
    assert r.to_dict() == cli("measure", "layer", *flags(opts), tmp_path=tmp_path)


def test_probe_is_the_cli_json(tmp_path):
    opts = dict(steps=20, progress=False)
    r = memprune.probe(**opts)
    assert r.to_dict() == cli("probe", *flags(opts), tmp_path=tmp_path)


def test_embed_returns_the_cli_arrays(tmp_path):
    r = memprune.embed(split="test", progress=False)
    out = tmp_path / "e.npy"
    subprocess.run(
        [shutil.which("memprune"), "embed", "--split", "test", "-q", "--out", str(out)],
        check=True,
        cwd=REPO,
    )
    assert np.array_equal(r.features, np.load(out))
    assert np.array_equal(r.indices, np.load(tmp_path / "e.indices.npy"))
    assert np.array_equal(r.labels, np.load(tmp_path / "e.labels.npy"))
    assert r.features.shape[0] == len(r.indices)


def read_safetensors(path):
    """A safetensors file as (name -> numpy array, metadata), with numpy alone."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "U8": "u1"}
    body = raw[8 + n :]
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        tensors[name] = np.frombuffer(body[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return tensors, meta


def scores(result):
    return {l["name"]: [u["score"] for u in l["units"]] for l in result.to_dict()["layers"]}


def test_a_checkpoint_in_memory_gives_the_file_numbers():
    tensors, meta = read_safetensors(MODEL_F)
    from_file = memprune.measure_unit(str(MODEL_F), **SMALL)
    in_memory = memprune.measure_unit(tensors, metadata=meta, **SMALL)
    assert scores(in_memory) == scores(from_file)
    assert in_memory.model.startswith("<memory>")


def read_idx(path):
    raw = gzip.decompress(Path(path).read_bytes())
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def test_images_in_memory_give_the_file_numbers():
    norm = dict(mean=[0.5], std=[0.25])
    split = {
        "train": (read_idx(DATA / "train-images-idx3-ubyte.gz"), read_idx(DATA / "train-labels-idx1-ubyte.gz")),
        "test": (read_idx(DATA / "t10k-images-idx3-ubyte.gz"), read_idx(DATA / "t10k-labels-idx1-ubyte.gz")),
    }
    from_files = memprune.measure_unit(data=str(DATA), **norm, **SMALL)
    in_memory = memprune.measure_unit(data=split, **norm, **SMALL)
    assert scores(in_memory) == scores(from_files)
    assert in_memory.point_names[0] == f"train_images.npy#{in_memory.points[0]}"


def test_color_images_in_memory_are_read():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(40) % 4
    with pytest.raises(memprune.Error, match="channel"):
        # The embedded encoder reads one channel: the message says so.
        memprune.measure_unit(data={"train": (images, labels), "test": (images, labels)}, **SMALL)


def test_bad_input_raises_memprune_error(tmp_path):
    with pytest.raises(memprune.Error) as e:
        memprune.measure_unit(str(tmp_path / "missing.safetensors"), **SMALL)
    assert "missing.safetensors" in str(e.value)
    assert isinstance(e.value, ValueError)
    with pytest.raises(memprune.Error, match="--bogus"):
        memprune.measure_unit(bogus=1, **SMALL)
    with pytest.raises(memprune.Error, match="uint8"):
        memprune.measure_unit(data=np.zeros((4, 8, 8), dtype=np.float32), **SMALL)
    with pytest.raises(memprune.Error, match="checkpoint tensor w"):
        memprune.measure_unit({"w": np.zeros(3, dtype=np.complex64)}, **SMALL)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(memprune.Error, match="bad.safetensors"):
        memprune.measure_unit(str(bad), **SMALL)


def test_the_wheel_installs_the_command():
    exe = shutil.which("memprune")
    out = subprocess.run([exe, "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == f"memprune {memprune.__version__}"
    bad = subprocess.run([exe, "measure", "unit", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_ctrl_c_stops_a_running_measurement():
    # A fresh interpreter, as a user's session: Ctrl-C (SIGINT) 3 s into a measurement of
    # minutes raises KeyboardInterrupt within seconds, and the next call runs normally.
    import signal
    import time

    # The child takes Ctrl-C as an interactive session does, even where this test runs in a
    # background job (whose children inherit SIGINT ignored, so Python installs no handler).
    script = """
import signal, memprune
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    memprune.measure_unit(views=300, progress=False)  # 450 points x 300 views: minutes
    print("finished")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    r = memprune.measure_unit(points=8, views=2, progress=False)
    print("next call", r.layers[0].name)
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    time.sleep(3)
    start = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=120)
    assert "interrupted" in out and "finished" not in out, out[-500:]
    assert "next call block1" in out, out[-500:]
    assert time.monotonic() - start < 60


def test_inspect_plan_and_policy_are_the_cli_json(tmp_path):
    r = memprune.inspect()
    assert r.to_dict() == cli("inspect", tmp_path=tmp_path)
    assert r.layers.units.dtype == np.int64 and r.parameters > 0
    policy_text = (REPO / "policies" / "keep-high-mem.yaml").read_text()
    # The same policy with its outputs in tmp_path and fewer points, so that it runs fast.
    out = tmp_path / "out.safetensors"
    text = policy_text.replace("out/keep-high-mem.safetensors", str(out))
    for key in ("json", "chart", "report"):
        text = "\n".join(l for l in text.splitlines() if not l.strip().startswith(f"{key}:"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    p = memprune.plan(policy, progress=False)
    assert p.to_dict() == cli("plan", "--policy", str(policy), tmp_path=tmp_path)
    assert p.units_pruned == sum(len(g["pruned"]) for g in p.to_dict()["plan"]["groups"])
    run = memprune.run_policy(policy, progress=False)
    assert Path(run.after.checkpoint).exists()
    assert set(run.to_dict()) >= {"before", "after"}
