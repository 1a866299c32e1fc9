"""Pruning criteria compared on one recipe (issue 13): dense, random, magnitude, SNIP,
FORCE, GraSP and SynFlow on LeNet-300-100 and LeNet-5-Caffe.

    sniptf-compare-criteria --output_dir=out/criteria --figures_dir=docs/figures

Resumable: each run writes <output_dir>/runs/<dataset>/<model>/<run>/seed<k>/ and
finished runs are skipped. Writes results.json and table.md into --output_dir and
criteria_error_vs_sparsity.png into --figures_dir.
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf.commands import check_sparsities
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.commands import scaled_budgets
from sniptf.studies import criteria_comparison as study

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.DATASETS), "Dataset (standardized).")
flags.DEFINE_multi_enum("models", list(study.MODELS), list(study.MODELS), "Models.")
flags.DEFINE_multi_enum("criteria", list(study.CRITERIA), list(study.CRITERIA), "Criteria (dense always runs).")
flags.DEFINE_multi_float("sparsities", list(study.SPARSITIES), "Sparsities in (0, 1).")
flags.DEFINE_multi_integer("seeds", [0, 1, 2], "Seeds.")
flags.DEFINE_integer("budget_percent", 100, "Percent of the step budgets in study.BUDGETS.",
                     lower_bound=1)
flags.DEFINE_string("output_dir", "out/criteria", "results.json, table.md and runs/ go here.")
flags.DEFINE_string("figures_dir", "out/criteria/figures", "The figure goes here.")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_sparsities(FLAGS.sparsities)
    prepare_output("output_dir", "figures_dir")
    budgets = scaled_budgets(study.BUDGETS, FLAGS.budget_percent)
    print(study.run(output_dir=FLAGS.output_dir, figures_dir=FLAGS.figures_dir, dataset=FLAGS.dataset,
                    models=FLAGS.models, sparsities=FLAGS.sparsities, seeds=FLAGS.seeds,
                    budgets=budgets, criteria=FLAGS.criteria, log=logging.info))


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
