"""SNIP against training budget: dense, SNIP and random at the SNIP paper's sparsities,
each trained at budgets x4 apart (sniptf.studies.snip_budgets.PLANS).

    sniptf-snip-budgets --output_dir=out/snip_budgets --figures_dir=docs/figures

Resumable: each run writes <output_dir>/runs/<dataset>/<model>/<run>/steps<N>/seed<k>/,
finished runs are skipped and an interrupted one resumes from its backup. Writes
results.json (partial until every run finished) and table.md into --output_dir and
snip_budgets.png into --figures_dir.
"""

from absl import app
from absl import flags
from absl import logging

from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.studies import snip_budgets as study

FLAGS = flags.FLAGS
flags.DEFINE_multi_enum("models", [p.model for p in study.PLANS], [p.model for p in study.PLANS],
                        "Models (each with its plan's dataset, sparsities and budgets).")
flags.DEFINE_integer("processes", 1, "Runs at once (worker processes).", lower_bound=1)
flags.DEFINE_string("output_dir", "out/snip_budgets", "results.json, table.md and runs/ go here.")
flags.DEFINE_bool("report_only", False, "Run nothing: write results.json, table.md and the figure from "
                  "the runs finished so far (e.g. while the study runs in another process).")
flags.DEFINE_string("figures_dir", "out/snip_budgets/figures", "The figure goes here.")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    prepare_output("output_dir", "figures_dir")
    print(study.run(output_dir=FLAGS.output_dir, figures_dir=FLAGS.figures_dir, models=FLAGS.models,
                    processes=FLAGS.processes, report_only=FLAGS.report_only, log=logging.info))


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
