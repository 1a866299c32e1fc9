"""The main job: SNIP vs random pruning vs dense LeNet-300-100 on mnist10k.

    sniptf-demo --output_dir=out/demo        (or: python scripts/demo.py ...)

Prunes LeNet-300-100 at initialization with SNIP and with random pruning at
--kappa, trains each and the dense net for --epochs, prints a table (test
error of the best-validation epoch, sparsity, kept weights per layer), and
exports the SNIP model as a SavedModel under --output_dir.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf import models
from sniptf import run_dir
from sniptf import selection
from sniptf.commands import flag_errors
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.exporters import export
from sniptf.studies import demo

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "lenet_300_100", sorted(models.MODELS), "Zoo model.")
flags.DEFINE_enum("dataset", "mnist10k", sorted(data.DATASETS), "Dataset.")
flags.DEFINE_float("kappa", 0.02, "Fraction of prunable weights kept, in (0, 1].")
flags.DEFINE_integer("epochs", 30, "Training epochs per run.", lower_bound=1)
flags.DEFINE_integer("batch_size", 100, "Batch size (and the SNIP scoring batch).", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.05, "SGD learning rate (momentum 0.9).", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seed of the init, data order and masks.")
flags.DEFINE_string("output_dir", "out/demo", "Where results.json, flags.txt and saved_model/ go.")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with flag_errors():  # the owners' checks, before any work
        selection.check_kappa(FLAGS.kappa)
        selection.check_seed(FLAGS.seed)
        if not FLAGS.learning_rate > 0:  # NaN fails too
            raise ValueError(f"Expected learning_rate > 0. Received: learning_rate={FLAGS.learning_rate}")
    prepare_output("output_dir")
    logging.info("training dense, SNIP and random %s on %s", FLAGS.model, FLAGS.dataset)
    rows, pruned = demo.compare_pruning(
        model_name=FLAGS.model, dataset=FLAGS.dataset, kappa=FLAGS.kappa, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, seed=FLAGS.seed)
    table = demo.format_table(rows)
    print(f"\n{FLAGS.model} on {FLAGS.dataset}, kappa={FLAGS.kappa}, {FLAGS.epochs} epochs, "
          f"seed {FLAGS.seed}\n{table}")
    run_dir.write_text(os.path.join(FLAGS.output_dir, "results.json"), json.dumps(rows, indent=2))
    path = os.path.join(FLAGS.output_dir, "saved_model")
    export(pruned["snip"], path, overwrite=True)
    print(f"\nSNIP model exported to {path}")


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
