"""Prune at initialization, train, evaluate and export, under any tf.distribute strategy.

    sniptf-train --model=lenet5_caffe --dataset=fashion_mnist --kappa=0.02 \
        --train_steps=20000 --output_dir=out/lenet5_snip

A run killed at any point resumes from its last good backup when started again
with the same command. Writes flags.txt, metrics.json, logs/ (TensorBoard),
checkpoints/best.keras and saved_model/ into --output_dir, holding its .lock:
a second run on the same directory stops with an error, and a finished run is
not trained over unless --overwrite is given.
"""

import os

from absl import app
from absl import flags
from absl import logging

from sniptf import distribute
from sniptf import run_dir
from sniptf import training
from sniptf.commands import config_flags
from sniptf.commands import flag_errors
from sniptf.commands import run_command

FLAGS = flags.FLAGS
config_flags.define_flags(training.TrainConfig)  # one flag per field, help from its declaration


def config_from_flags():
    """The `TrainConfig` the flags describe (one flag per field)."""
    return config_flags.config_from_flags(training.TrainConfig)


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.num_cpu_devices and FLAGS.strategy == "mirrored":
        distribute.split_cpu(FLAGS.num_cpu_devices)  # before TensorFlow initializes
    with flag_errors(errors=(ValueError, TypeError, TimeoutError, RuntimeError)):
        plan = training.prepare(config_from_flags())
        # before any data is loaded: an unreachable TPU fails here
        strategy = distribute.make_strategy(FLAGS.strategy, tpu=FLAGS.tpu,
                                            num_cpu_devices=FLAGS.num_cpu_devices or None)
    out = training.worker_dir(FLAGS.output_dir, strategy)
    with flag_errors(errors=(run_dir.OutputDirInUse,)):
        with run_dir.locked(out):  # before anything is written: a second run stops here
            if out == FLAGS.output_dir:
                run_dir.write_text(os.path.join(out, "flags.txt"), FLAGS.flags_into_string())
            training.run(plan, strategy)
    logging.info("metrics written to %s", os.path.join(out, "metrics.json"))  # a non-chief: its own


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
