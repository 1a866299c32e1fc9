"""Prune at initialization, train, evaluate and export, under any tf.distribute strategy.

    sniptf-train --model=lenet5_caffe --dataset=fashion_mnist --kappa=0.02 \
        --train_steps=20000 --output_dir=out/lenet5_snip

A run killed at any point resumes from its last good backup when started again
with the same command. Writes flags.txt, metrics.json, logs/ (TensorBoard),
checkpoints/best.keras and saved_model/ into --output_dir, holding its .lock:
a second run on the same directory stops with an error, and a finished run is
not trained over unless --overwrite is given.
"""

import dataclasses
import os

from absl import app
from absl import flags
from absl import logging

from sniptf import criteria
from sniptf import data
from sniptf import distribute
from sniptf import models
from sniptf import run_dir
from sniptf import selection
from sniptf import training
from sniptf.commands import flag_errors
from sniptf.commands import run_command

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "lenet_300_100", sorted(models.MODELS), "Zoo model.")
flags.DEFINE_enum("dataset", "mnist10k", sorted(data.DATASETS), "Dataset.")
flags.DEFINE_bool("standardize", False, "Standardize inputs with the training split's per-channel "
                  "mean and std, as the SNIP authors do (default: pixels in [0, 1]).")
flags.DEFINE_float("kappa", 0.05, "Fraction of prunable weights kept, in (0, 1].")
flags.DEFINE_enum("criterion", "snip", sorted(criteria.CRITERIA) + [training.NO_PRUNING, training.IMP],
                  "Pruning criterion; 'none' trains the dense model; 'imp' prunes the final weights of "
                  "--rewind_from by magnitude and rewinds (iterative magnitude pruning, one round).")
flags.DEFINE_enum("scope", "global", list(selection.SCOPES),
                  "Selection: global ranking, the same fraction per layer, or ERK budgets.")
flags.DEFINE_integer("min_kept_per_layer", 0, "Collapse guard: weights every layer keeps at least.",
                     lower_bound=0)
flags.DEFINE_integer("score_batches", 1, "Batches the criterion scores on (gradients summed).", lower_bound=1)
flags.DEFINE_integer("isometry_steps", 0, "Approximate isometry on the pruned kernels for this many steps "
                     "(Lee et al., ICLR 2020; 0: off).", lower_bound=0)
flags.DEFINE_bool("include_biases", False, "As the SNIP authors' code: biases are scored and masked too "
                  "(zero at init, they are pruned first).")
flags.DEFINE_bool("reinitialize", False, "As the SNIP authors' code: the weights are re-drawn (same "
                  "initializers) after scoring, then masked.")
flags.DEFINE_integer("batch_size", 100, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("train_steps", 1000, "Training steps.", lower_bound=1)
flags.DEFINE_integer("eval_every", 100, "Steps between validations, checkpoints and backups "
                     "(the last epoch is shorter if it does not divide --train_steps).", lower_bound=1)
flags.DEFINE_enum("optimizer", "momentum", training.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.1, "Initial learning rate.")
flags.DEFINE_float("momentum", 0.9, "Momentum (momentum / nesterov), in [0, 1).")
flags.DEFINE_enum("lr_schedule", "piecewise", training.LR_SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_integer("lr_decay_every", 25000, "piecewise: steps between decays.")
flags.DEFINE_float("lr_decay_factor", 0.1, "piecewise: factor per decay.")
flags.DEFINE_float("lr_end_factor", 0.0, "linear: final learning rate / initial.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (e.g. 5e-4), >= 0.")
flags.DEFINE_string("kernel_initializer", "", "Override the zoo model's kernel initializer (a Keras name).")
flags.DEFINE_integer("seed", 0, "Seed of the init, data order and mask.")
flags.DEFINE_enum("strategy", "default", distribute.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "With --strategy=tpu: TPU name, 'local' or grpc://host:port.")
flags.DEFINE_integer("num_cpu_devices", 0, "With --strategy=mirrored: split the CPU into N logical devices.",
                     lower_bound=0)
flags.DEFINE_float("gradual_pruning_final_sparsity", 0.0, "Gradual magnitude pruning during training "
                   "(sniptf.GradualPruning) to this sparsity; 0: off. With --criterion=none it starts dense.")
flags.DEFINE_float("gradual_pruning_initial_sparsity", 0.0, "The schedule's sparsity at its begin step.")
flags.DEFINE_integer("gradual_pruning_begin_step", 0, "The schedule's first update step.")
flags.DEFINE_integer("gradual_pruning_end_step", 0, "The schedule's last update step (0: --train_steps).")
flags.DEFINE_integer("gradual_pruning_frequency", 100, "Steps between the schedule's updates.")
flags.DEFINE_enum("dst", "", ["", "set", "rigl"], "Dynamic sparse training: SET or RigL mask updates "
                  "on the pruned (or, with --criterion=none, dense-wrapped) model.")
flags.DEFINE_integer("update_every", 100, "--dst: steps between mask updates.")
flags.DEFINE_integer("dst_end_step", 0, "--dst: no update from this step on (0: 3/4 of --train_steps).")
flags.DEFINE_float("drop_fraction", 0.3, "--dst: fraction of each mask's kept weights changed at first.")
flags.DEFINE_integer("rewind_step", -1, "Keep the weights after this step in <output_dir>/rewind.npz "
                     "(for sniptf.rewind; -1: off) and the final ones in final.npz (for --rewind_from).")
flags.DEFINE_string("rewind_from", "", "--criterion=imp: a finished run's directory (final.npz, rewind.npz): "
                    "start from its final mask pruned by magnitude to 1 - --kappa, kept weights rewound.")
flags.DEFINE_enum("sanity", "", ["", "shuffle", "reinit", "invert"], "A sanity check of the mask "
                  "(Frankle et al. 2021): shuffle within layers, reinitialize, or keep the lowest scores.")
flags.DEFINE_string("output_dir", "out/train", "Output directory.")
flags.DEFINE_bool("overwrite", False, "Train again from scratch over a finished run in --output_dir "
                  "(without it, such a directory is refused).")


def config_from_flags():
    """The `TrainConfig` the flags describe (one flag per field)."""
    fields = {f.name for f in dataclasses.fields(training.TrainConfig)}
    return training.TrainConfig(**{name: FLAGS[name].value for name in fields})


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
