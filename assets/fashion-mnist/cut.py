#!/usr/bin/env python3
"""Cut the embedded Fashion-MNIST subset from the full IDX files.

Usage: python3 cut.py [SOURCE_DIR]   (default /usr/share/datasets/fashion-mnist,
Debian package dataset-fashion-mnist). Writes the four .gz files next to this script.
Keeps the first 10,000 training and the first 2,000 test images/labels, in file order.
"""
import gzip, os, struct, sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
DST = os.path.dirname(os.path.abspath(__file__))
KEEP = {"train": 10000, "t10k": 2000}

for split, n in KEEP.items():
    for kind, magic in (("images-idx3-ubyte", 0x803), ("labels-idx1-ubyte", 0x801)):
        name = f"{split}-{kind}.gz"
        with gzip.open(os.path.join(SRC, name), "rb") as f:
            data = f.read()
        m, count = struct.unpack(">II", data[:8])
        assert m == magic, (name, hex(m))
        if magic == 0x803:
            rows, cols = struct.unpack(">II", data[8:16])
            header = struct.pack(">IIII", magic, n, rows, cols)
            body = data[16:16 + n * rows * cols]
        else:
            header = struct.pack(">II", magic, n)
            body = data[8:8 + n]
        assert count >= n
        # mtime=0 so the output is byte-for-byte reproducible.
        with open(os.path.join(DST, name), "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as g:
                g.write(header + body)
        print(name, n)
