"""How much of SNIP's kept set changes when the inputs are standardized (issue 13).

    python experiments/standardize_overlap.py [--dataset=mnist10k] [--seeds=0,1,2]

The SNIP authors standardize MNIST, (x/255 − mean)/std with the training split's
statistics, before scoring. For LeNet-300-100 (κ = 2%) and LeNet-5-Caffe (κ = 1%),
the sparsities of the SNIP paper's MNIST table, each seed scores the same initial
weights on the same shuffled training batch of 100 twice, once on [0, 1] inputs and
once standardized, and prints the share of the kept connections the two sets have
in common (|A ∩ B| / |A|; both keep exactly κ·N).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from absl import app
from absl import flags

import sniptf
from sniptf import data
from sniptf import models
from sniptf import transform

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist10k", sorted(data.DATASETS), "Dataset.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (initial weights and scoring batch).")
RUNS = (("lenet_300_100", 0.02), ("lenet5_caffe", 0.01))


def kept_masks(model, batch, kappa, seed):
    pruned = sniptf.prune(model, batch, kappa=kappa, seed=seed)
    return np.concatenate([e.mask.numpy().ravel() for e in transform.masked_entries(pruned)])


def main(argv):
    del argv
    info = data.info(FLAGS.dataset)
    print("| model | κ | seed | kept | in common | share |\n| --- | --- | --- | --- | --- | --- |")
    for name, kappa in RUNS:
        for seed in (int(s) for s in FLAGS.seeds):
            batches = {}
            for standardize in (False, True):
                stream = data.load(FLAGS.dataset, "train", batch_size=100, shuffle=True, seed=seed + 1,
                                   standardize=standardize)
                batches[standardize] = tuple(t.numpy() for t in next(iter(stream)))
            assert np.array_equal(batches[False][1], batches[True][1])  # the same examples
            masks = []
            for standardize in (False, True):
                keras.utils.set_random_seed(seed)  # the same initial weights both times
                model = models.get(name, info.input_shape, info.num_classes)
                masks.append(kept_masks(model, batches[standardize], kappa, seed))
            kept = int(masks[0].sum())
            common = int((masks[0] & masks[1]).sum())
            print(f"| {name} | {kappa:g} | {seed} | {kept} | {common} | {common / kept:.1%} |", flush=True)


if __name__ == "__main__":
    app.run(main)
