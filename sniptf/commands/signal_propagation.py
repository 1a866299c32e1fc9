"""Signal propagation at initialization (Lee et al., ICLR 2020): JSV, trainability,
pruning without supervision, transfer of sparsity.

    sniptf-signal-propagation --output_dir=out/signal --figures_dir=docs/figures

Writes results.json and tables.md into --output_dir and PNG figures into --figures_dir.
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.studies import signal

FLAGS = flags.FLAGS
flags.DEFINE_multi_enum("experiments", list(signal.EXPERIMENTS), signal.EXPERIMENTS, "Which experiments to run.")
flags.DEFINE_enum("dataset", "mnist10k", sorted(data.DATASETS), "Training data (trainability, supervision).")
flags.DEFINE_enum("transfer_source", "fashion_mnist", sorted(data.DATASETS), "Transfer: masks found on this.")
flags.DEFINE_enum("transfer_target", "mnist10k", sorted(data.DATASETS), "Transfer: trained on this.")
flags.DEFINE_integer("width", 100, "Hidden width of the MLPs.", lower_bound=1)
flags.DEFINE_integer("depth", 7, "Dense layers in the MLPs.", lower_bound=2)
flags.DEFINE_integer("isometry_steps", 2000, "Approximate-isometry SGD steps (lr 0.1).", lower_bound=0)
flags.DEFINE_integer("epochs", 20, "Training epochs.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.01, "SGD (momentum 0.9) learning rate.", lower_bound=0.0)
flags.DEFINE_multi_float("sparsities", [0, 0.5, 0.7, 0.9, 0.95, 0.98, 0.99],
                         "JSV sparsity levels (repeat the flag for several).", lower_bound=0.0, upper_bound=0.9999)
flags.DEFINE_multi_float("train_sparsities", [0.9, 0.95, 0.98],
                         "Sparsity levels of the training runs.", lower_bound=0.0, upper_bound=0.9999)
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("output_dir", "out/signal", "results.json, tables.md and flags.txt go here.")
flags.DEFINE_string("figures_dir", "out/signal/figures", "PNG figures go here.")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.learning_rate > 0:  # NaN fails too
        raise app.UsageError(f"Expected --learning_rate > 0. Received: --learning_rate={FLAGS.learning_rate}")
    for name in ("sparsities", "train_sparsities"):
        if not all(0.0 <= s < 1.0 for s in FLAGS[name].value):  # NaN fails too
            raise app.UsageError(f"Expected --{name} in [0, 1). Received: --{name}={FLAGS[name].value}")
    prepare_output("output_dir", "figures_dir")
    tables = signal.run_experiments(
        FLAGS.experiments, output_dir=FLAGS.output_dir, figures_dir=FLAGS.figures_dir,
        dataset=FLAGS.dataset, transfer_source=FLAGS.transfer_source,
        transfer_target=FLAGS.transfer_target, sparsities=tuple(FLAGS.sparsities),
        train_sparsities=tuple(FLAGS.train_sparsities), width=FLAGS.width, depth=FLAGS.depth,
        isometry_steps=FLAGS.isometry_steps, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
        seed=FLAGS.seed, log=logging.info)
    print(tables)


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
