"""Where pruning at initialization stands (issue 25): SNIP, GraSP, SynFlow and ERK-random
masks at init, their sanity checks (shuffled, reinitialized, inverted), gradual magnitude
pruning, SET, RigL and iterative magnitude pruning with rewinding, on one recipe (full
Fashion-MNIST, standardized).

    sniptf-where-pai-stands --output_dir=out/where_pai_stands

Resumable: each run writes <output_dir>/runs/<dataset>/<model>/<method>_<sparsity>/seed<k>/
and finished runs are skipped (IMP's rounds: .../imp_rounds/seed<k>/round<r>/, run first, round
by round). Writes results.json and table.md into --output_dir.
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf.commands import check_sparsities
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.commands import scaled_budgets
from sniptf.studies import where_pai_stands as study

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data.DATASETS), "Dataset (standardized).")
flags.DEFINE_multi_enum("models", list(study.SPARSITIES), list(study.SPARSITIES), "Models.")
flags.DEFINE_multi_enum("methods", list(study.METHODS), list(study.METHODS), "Methods (dense always runs).")
flags.DEFINE_multi_float("sparsities", [], "Sparsities in (0, 1) for every model "
                         "(default: the study's, 90/95/98/99% and 95/99%).")
flags.DEFINE_multi_integer("seeds", [0, 1], "Seeds.")
flags.DEFINE_integer("budget_percent", 100, "Percent of the criteria comparison's step budgets.",
                     lower_bound=1)
flags.DEFINE_integer("processes", 1, "Runs at once (worker processes; IMP's rounds of a stage "
                     "run side by side, the stages in turn).", lower_bound=1)
flags.DEFINE_string("output_dir", "out/where_pai_stands", "results.json, table.md and runs/ go here.")
flags.DEFINE_bool("report_only", False, "Run nothing: write results.json, table.md and the figure from "
                  "the runs finished so far (e.g. while the study runs in another process).")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_sparsities(FLAGS.sparsities)
    prepare_output("output_dir")
    budgets = scaled_budgets(study.BUDGETS, FLAGS.budget_percent)
    sparsities = {m: tuple(FLAGS.sparsities) for m in FLAGS.models} if FLAGS.sparsities else None
    print(study.run(output_dir=FLAGS.output_dir, models=FLAGS.models, sparsities=sparsities,
                    seeds=FLAGS.seeds, methods=FLAGS.methods, budgets=budgets, dataset=FLAGS.dataset,
                    report_only=FLAGS.report_only, processes=FLAGS.processes, log=logging.info))


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
