"""RigL against SET with per-update survival of grown connections (issue 38):
LeNet-300-100 on full Fashion-MNIST at 90/95%, 5 seeds, the where-PaI recipe.

    sniptf-rigl-vs-set --output_dir=docs/results/rigl_vs_set

Resumable: each run writes <output_dir>/runs/<method>_<sparsity>/seed<k>/ and finished
runs are skipped. Writes results.json and table.md into --output_dir.
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf.commands import check_sparsities
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.commands import scaled_budgets
from sniptf.studies import rigl_vs_set as study
from sniptf.studies.criteria_comparison import BUDGETS

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.DATASETS), "Dataset (standardized).")
flags.DEFINE_multi_float("sparsities", list(study.SPARSITIES), "Sparsities in (0, 1).")
flags.DEFINE_multi_integer("seeds", list(study.SEEDS), "Seeds.")
flags.DEFINE_integer("budget_percent", 100, "Percent of LeNet-300-100's step budget (3,500).", lower_bound=1)
flags.DEFINE_integer("processes", 1, "Runs at once (worker processes).", lower_bound=1)
flags.DEFINE_string("output_dir", "out/rigl_vs_set", "results.json, table.md and runs/ go here.")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_sparsities(FLAGS.sparsities)
    prepare_output("output_dir")
    budget = scaled_budgets(BUDGETS, FLAGS.budget_percent)[study.MODEL]
    print(study.run(output_dir=FLAGS.output_dir, sparsities=tuple(FLAGS.sparsities), seeds=FLAGS.seeds,
                    budget=budget, dataset=FLAGS.dataset, processes=FLAGS.processes, log=logging.info))


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
