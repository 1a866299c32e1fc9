"""The scale of a pruned network's output at initialization, per criterion (issue 13).

    python experiments/pruned_output_scale.py [--models=lenet5_caffe,lenet_300_100] [--kappa=0.05]

Explains a run of the criteria comparison (GraSP on LeNet-5-Caffe at 95% diverged in
2 of 3 seeds under the learning rate every other criterion trained with): for each
model, seed and criterion, the network is pruned as the comparison prunes it
(training.run's order of seeding, data and model, so the masks are the recorded runs'
`mask_digest_at_prune`) and the standard deviation of its logits on the
first 256 training images is printed, next to the dense network's.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from absl import app
from absl import flags

from sniptf import criteria
from sniptf import data
from sniptf import models
import sniptf

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet5_caffe", "lenet_300_100"], "Zoo models.")
flags.DEFINE_list("criteria", ["random", "magnitude", "snip", "force", "grasp", "synflow"], "Criteria.")
flags.DEFINE_float("kappa", 0.05, "Fraction of the weights kept.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.DATASETS), "Dataset (standardized).")


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.criteria) - set(criteria.CRITERIA))
    if unknown:
        raise app.UsageError(f"Unknown criteria. Received: --criteria={unknown}")
    info = data.info(FLAGS.dataset)
    x, _ = data.load_numpy(FLAGS.dataset, "train", standardize=True)
    probe = x[:256]
    print("| model | seed | dense | " + " | ".join(FLAGS.criteria) + " |")
    print("|" + " --- |" * (len(FLAGS.criteria) + 3))
    for name in FLAGS.models:
        for seed in (int(s) for s in FLAGS.seeds):
            cells = []
            for criterion in ["none"] + FLAGS.criteria:
                # in training.run's order, so the masks are the comparison's (mask_digest_at_prune)
                keras.utils.set_random_seed(seed)
                splits = data.load_splits(FLAGS.dataset, 100, seed=seed, repeat_train=True,
                                          standardize=True)
                model = models.get(name, info.input_shape, info.num_classes)
                if criterion != "none":
                    needs_data = criteria.get_criterion(criterion).needs_data
                    model = sniptf.prune(model, splits.score_batch if needs_data else None,
                                         kappa=FLAGS.kappa, criterion=criterion, seed=seed)
                cells.append(f"{np.std(model(probe, training=False).numpy()):.3g}")
            print(f"| {name} | {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    app.run(main)
