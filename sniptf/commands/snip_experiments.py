"""SNIP paper experiments (Lee et al., ICLR 2019) on the data this machine has.

    sniptf-snip-experiments --output_dir=out/snip --figures_dir=docs/figures

Experiments (--experiments, any subset):
  table        LeNet-300-100 / LeNet-5-Caffe: dense, SNIP, random, magnitude at the paper's
               sparsities, mean ± std over --seeds, on --datasets (budgets in
               sniptf.studies.snip.BUDGETS);
  sequential   LSTM-s and GRU-s at 95% vs dense on sequential mnist10k;
  patterns     first-layer masks summed per pixel for one-class batches (b = 1, 10, 100);
  memorization dense vs SNIP-pruned LeNet-300-100 trained on shuffled labels.
Table runs are resumable: each writes <output_dir>/runs/<dataset>/<model>/<run>/seed<k>/ and
finished runs are skipped.
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import selection
from sniptf.commands import flag_errors
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.studies import snip

FLAGS = flags.FLAGS
flags.DEFINE_multi_enum("experiments", list(snip.EXPERIMENTS), snip.EXPERIMENTS, "Which experiments to run.")
flags.DEFINE_multi_enum("datasets", ["mnist10k", "fashion_mnist"], sorted({d for d, _ in snip.BUDGETS}),
                        "Table datasets (repeat the flag for several).")
flags.DEFINE_multi_integer("seeds", [0, 1, 2], "Table seeds (repeat the flag for several).")
flags.DEFINE_multi_enum("models", list(snip.TABLE_KAPPAS), list(snip.TABLE_KAPPAS),
                        "Table models (repeat the flag for several).")
flags.DEFINE_multi_enum("table_criteria", list(snip.CRITERIA), list(snip.CRITERIA),
                        "Criteria of the table's pruned runs (dense always runs).")
flags.DEFINE_integer("epochs_scale", 100, "Percent of the default training budgets.", lower_bound=1)
flags.DEFINE_integer("sequential_epochs", 20, "Epochs of the LSTM/GRU runs.", lower_bound=1)
flags.DEFINE_integer("memorization_epochs", 100, "Epochs on shuffled labels.", lower_bound=1)
flags.DEFINE_multi_enum("memorization_datasets", ["mnist10k"], sorted({d for d, _ in snip.BUDGETS}),
                        "Datasets of the memorization experiment (repeat the flag for several).")
flags.DEFINE_string("output_dir", "out/snip", "results.json, tables.md, flags.txt and runs/ go here.")
flags.DEFINE_string("figures_dir", "out/snip/figures", "PNG figures go here.")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with flag_errors((), {"Received: seed=": "Received: --seeds="}):  # before any work
        for seed in FLAGS.seeds:
            selection.check_seed(seed)
    prepare_output("output_dir", "figures_dir")
    tables = snip.run_experiments(
        FLAGS.experiments, output_dir=FLAGS.output_dir, figures_dir=FLAGS.figures_dir,
        datasets=FLAGS.datasets, seeds=FLAGS.seeds, epochs_scale=FLAGS.epochs_scale,
        sequential_epochs=FLAGS.sequential_epochs, memorization_epochs=FLAGS.memorization_epochs,
        memorization_datasets=tuple(FLAGS.memorization_datasets),
        models=tuple(FLAGS.models), table_criteria=tuple(FLAGS.table_criteria),
        log=logging.info)
    print(tables)


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
