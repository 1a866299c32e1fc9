"""Training-split error of finished runs' best-validation checkpoints (Fashion-MNIST's
54,000 training images, [0, 1] inputs as in the budget study).

    python experiments/train_error.py <run_dir> [<run_dir> ...]

Each <run_dir> is a finished `training.run` directory (it holds checkpoints/best.keras).
"""

import os
import sys

from sniptf import data as data_lib
from sniptf.studies.common import checkpoint_error


def main(run_dirs):
    if not run_dirs:
        sys.exit("Expected one or more run directories (each with checkpoints/best.keras).")
    missing = [r for r in run_dirs if not os.path.exists(os.path.join(r, "checkpoints", "best.keras"))]
    if missing:  # checked before any is evaluated
        sys.exit(f"Expected finished run directories with checkpoints/best.keras. Received: {missing!r}")
    train = data_lib.load("fashion_mnist", "train", batch_size=1000, standardize=False)
    for run in run_dirs:
        print(f"{run} train_error {100 * checkpoint_error(run, train):.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
