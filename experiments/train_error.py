"""Training-split error of finished runs' best-validation checkpoints (Fashion-MNIST's
54,000 training images, [0, 1] inputs as in the budget study).

    python experiments/train_error.py <run_dir> [<run_dir> ...]

Each <run_dir> is a finished `training.run` directory (it holds checkpoints/best.keras).
"""

import os
import sys

import keras

from sniptf import data as data_lib


def main(run_dirs):
    if not run_dirs:
        sys.exit("Expected one or more run directories (each with checkpoints/best.keras).")
    train = data_lib.load("fashion_mnist", "train", batch_size=1000, standardize=False)
    for run in run_dirs:
        path = os.path.join(run, "checkpoints", "best.keras")
        if not os.path.exists(path):
            sys.exit(f"Expected a finished run directory with {path}. Received: {run!r}")
        model = keras.models.load_model(path)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        _, accuracy = model.evaluate(train, verbose=0)
        print(f"{run} train_error {100 * (1 - accuracy):.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
