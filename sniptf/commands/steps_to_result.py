"""Steps-to-result vs batch size for several sparsity levels (Lee et al., ICLR 2021).

    sniptf-steps-to-result prepare --study_dir=out/dps --workload=mnist10k_simple_cnn \
        --sparsities=0 --sparsities=0.9 --batch_sizes=16 --batch_sizes=64 --trials=8
    sniptf-steps-to-result work --study_dir=out/dps      # any number of these, anywhere
    sniptf-steps-to-result resume --study_dir=out/dps    # after a worker was killed
    sniptf-steps-to-result report --study_dir=out/dps --probe_batch_size=64

`prepare` stores the spec and enqueues every Sobol point once (a second prepare with
the same spec does nothing; another spec is refused). `work` claims trials from the
shared storage (a journal file in --study_dir by default, or --storage=postgresql://...)
until none is left. `report` writes results.json, summary.md and the plots into
--study_dir; its probes train at one --probe_learning_rate for every sparsity (default
0.1), --probe_seeds init seeds each, on the whole training split. Workloads:
sniptf.studies.data_parallelism.WORKLOADS, and any that --workload_module registers
(pass it to every action).
"""

import importlib
import os

from absl import app
from absl import flags
from absl import logging

from sniptf.commands import flag_errors
from sniptf.commands import prepare_output
from sniptf.commands import run_command
from sniptf.studies import data_parallelism as dps

ACTIONS = ("prepare", "work", "resume", "report")
FLAGS = flags.FLAGS
flags.DEFINE_string("study_dir", "out/steps_to_result", "Where the journal, results.json and plots go.")
flags.DEFINE_string("storage", "", "Optuna storage: a journal file path or an RDB URL "
                    "(postgresql://user@host/db); default <study_dir>/journal.log. SQLite is refused.")
flags.DEFINE_string("workload", "mnist10k_simple_cnn", f"prepare: the workload, one of "
                    f"{sorted(dps.WORKLOADS)} or one --workload_module registers.")
flags.DEFINE_string("workload_module", "", "A module to import first (pkg.module): it may register "
                    "models (sniptf.models.register_model) and workloads "
                    "(sniptf.studies.data_parallelism.register_workload).")
flags.DEFINE_multi_float("sparsities", [0.0, 0.5, 0.7, 0.9], "prepare: sparsity levels (repeat the flag).",
                         lower_bound=0.0, upper_bound=0.9999)
flags.DEFINE_multi_integer("batch_sizes", [2 ** i for i in range(1, 10)],
                           "prepare: batch sizes (repeat the flag).", lower_bound=1)
flags.DEFINE_integer("trials", 8, "prepare: Sobol points per (sparsity, batch size).", lower_bound=1)
flags.DEFINE_float("goal_error", None, "prepare: goal validation error (default: the workload's).")
flags.DEFINE_multi_float("goal_errors", None, "prepare: several goals from one run (repeat the flag); "
                         "replaces --goal_error, trials stop at the strictest, every point and fit "
                         "is reported per goal.")
flags.DEFINE_integer("max_steps", None, "prepare: step budget per trial (default: the workload's).",
                     lower_bound=1)
flags.DEFINE_integer("max_examples", None, "prepare: budget in examples, min(max_steps, this / B); "
                     "0 for none (default: the workload's).", lower_bound=0)
flags.DEFINE_integer("eval_every", None, "prepare: steps between evaluations, or the smallest gap "
                     "with --eval_growth (default: the workload's).", lower_bound=1)
flags.DEFINE_float("eval_growth", None, "prepare: >1 evaluates at geometric steps (default: the "
                   "workload's).", lower_bound=1.0)
flags.DEFINE_bool("incumbent_cutoff", False, "prepare: stop a trial once it passes its study's best K "
                  "(cannot change K*; off for paper parity).")
flags.DEFINE_integer("max_trials", None, "work: stop after this many trials.", lower_bound=1)
flags.DEFINE_integer("tf_threads", 0, "work/report: TensorFlow intra- and inter-op threads (0: TF's "
                     "default); 1 per worker when several share a machine.", lower_bound=0)
flags.DEFINE_integer("probe_batch_size", 0, "report: measure the Lipschitz constant and B_simple per "
                     "sparsity and seed at this batch size (0: skip).", lower_bound=0)
flags.DEFINE_string("probe_learning_rate", str(dps.PROBE_LEARNING_RATE),
                    "report: the probes' learning rate, one for every sparsity (a controlled "
                    "comparison), or 'best' for each point's best metaparameters.")
flags.DEFINE_multi_integer("probe_seeds", [0, 1, 2], "report: the probes' init seeds (repeat the flag).",
                           lower_bound=0)
flags.DEFINE_integer("probe_noise_every", None, "report: B_simple every this many steps (default "
                     "--probe_every; 0: at initialization only, the cheap choice).", lower_bound=0)
flags.DEFINE_integer("probe_examples", 0, "report: the probes' full batch: 0 = the whole training "
                     "split (the authors'), else the first N of a fixed permutation.", lower_bound=0)
flags.DEFINE_integer("probe_steps", 1000, "report: training steps of each probe run.", lower_bound=1)
flags.DEFINE_integer("probe_every", 100, "report: probe period in steps.", lower_bound=1)


def _storage():
    return FLAGS.storage or os.path.join(FLAGS.study_dir, "journal.log")


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) != 2 or argv[1] not in ACTIONS:
        raise app.UsageError(f"Expected one action of {ACTIONS}. Received: {argv[1:]}")
    action = argv[1]
    if FLAGS.tf_threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tf_threads)
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # each trial's new model retraces the scoring pass once
    from sniptf.studies import trial_engine
    if FLAGS.workload_module:
        try:
            importlib.import_module(FLAGS.workload_module)
        except ImportError as e:
            raise app.UsageError(f"Cannot import --workload_module: {e}. "
                                 f"Received: --workload_module={FLAGS.workload_module}") from e
    with flag_errors(("storage", "workload", "trials", "sparsities", "batch_sizes", "eval_every",
                      "eval_growth", "goal_error", "goal_errors", "probe_learning_rate")):
        probe_lr = dps.check_probe_learning_rate(FLAGS.probe_learning_rate)
        if action == "prepare":  # the spec is checked before the storage is created
            overrides = {k: FLAGS[k].value for k in ("goal_error", "max_steps", "max_examples", "eval_every",
                                                      "eval_growth") if FLAGS[k].value is not None}
            if FLAGS.goal_errors:
                overrides.pop("goal_error", None)
            spec = dps.make_spec(FLAGS.workload, sparsities=FLAGS.sparsities, batch_sizes=FLAGS.batch_sizes,
                                 trials=FLAGS.trials, incumbent_cutoff=FLAGS.incumbent_cutoff,
                                 goal_errors=FLAGS.goal_errors or None, **overrides)
        engine = trial_engine.TrialEngine(_storage())
        if action == "prepare":
            prepare_output("study_dir")
            added = dps.prepare(engine, spec)
            logging.info("prepared %d studies, %d trials enqueued%s", len(spec["studies"]), added,
                         "" if added else " (already prepared with this spec)")
        elif action == "work":
            ran = dps.work(engine, max_trials=FLAGS.max_trials, log=logging.info)
            logging.info("this worker ran %d trials; storage: %s", ran, engine.counts())
        elif action == "resume":
            logging.info("re-queued %d trials", engine.resume())
        else:
            results = dps.report(engine, FLAGS.study_dir, probe_batch_size=FLAGS.probe_batch_size,
                                 probe_steps=FLAGS.probe_steps, probe_every=FLAGS.probe_every,
                                 probe_learning_rate=probe_lr, probe_seeds=FLAGS.probe_seeds,
                                 probe_examples=FLAGS.probe_examples,
                                 probe_noise_every=FLAGS.probe_noise_every, log=logging.info)
            print(dps.summary_markdown(results))


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
