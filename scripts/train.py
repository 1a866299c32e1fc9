"""Prune at initialization, train, evaluate and export, under any tf.distribute strategy.

    python scripts/train.py --model=lenet5_caffe --dataset=fashion_mnist --kappa=0.02 \
        --train_steps=20000 --output_dir=out/lenet5_snip

A run killed at any point resumes from its last epoch when started again with
the same command. Writes flags.txt, metrics.json, logs/ (TensorBoard),
checkpoints/best.keras and saved_model/ into --output_dir.
"""

import dataclasses
import os

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf import distribute
from sniptf import models
from sniptf import scoring
from sniptf import training

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "lenet_300_100", sorted(models.MODELS), "Zoo model.")
flags.DEFINE_enum("dataset", "mnist10k", sorted(data.DATASETS), "Dataset.")
flags.DEFINE_float("kappa", 0.05, "Fraction of prunable weights kept, in (0, 1].")
flags.DEFINE_enum("criterion", "snip", sorted(scoring.CRITERIA) + [training.NO_PRUNING],
                  "Pruning criterion; 'none' trains the dense model.")
flags.DEFINE_integer("batch_size", 100, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("train_steps", 1000, "Training steps.", lower_bound=1)
flags.DEFINE_integer("eval_every", 100, "Steps between validations, checkpoints and backups.", lower_bound=1)
flags.DEFINE_enum("optimizer", "momentum", training.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.1, "Initial learning rate.", lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "Momentum (momentum / nesterov).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_enum("lr_schedule", "piecewise", training.LR_SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_integer("lr_decay_every", 25000, "piecewise: steps between decays.", lower_bound=1)
flags.DEFINE_float("lr_decay_factor", 0.1, "piecewise: factor per decay.", lower_bound=0.0)
flags.DEFINE_float("lr_end_factor", 0.0, "linear: final learning rate / initial.", lower_bound=0.0)
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (e.g. 5e-4).", lower_bound=0.0)
flags.DEFINE_string("kernel_initializer", "", "Override the zoo model's kernel initializer (a Keras name).")
flags.DEFINE_integer("seed", 0, "Seed of the init, data order and mask.")
flags.DEFINE_enum("strategy", "default", distribute.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "With --strategy=tpu: TPU name, 'local' or grpc://host:port.")
flags.DEFINE_integer("num_cpu_devices", 0, "With --strategy=mirrored: split the CPU into N logical devices.",
                     lower_bound=0)
flags.DEFINE_string("output_dir", "out/train", "Output directory.")


def config_from_flags():
    fields = {f.name for f in dataclasses.fields(training.TrainConfig)}
    return training.TrainConfig(**{name: FLAGS[name].value for name in fields})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.num_cpu_devices and FLAGS.strategy == "mirrored":
        distribute.split_cpu(FLAGS.num_cpu_devices)  # before TensorFlow initializes
    config = config_from_flags()
    try:
        config.validate()
    except (ValueError, TypeError) as e:
        raise app.UsageError(str(e)) from e
    try:  # before any data is loaded: an unreachable TPU fails here, naming --tpu
        strategy = distribute.make_strategy(config.strategy, tpu=config.tpu,
                                            num_cpu_devices=config.num_cpu_devices or None)
    except (ValueError, TimeoutError, RuntimeError) as e:
        raise app.UsageError(str(e)) from e
    FLAGS.append_flags_into_file(os.path.join(FLAGS.output_dir, "flags.txt"))
    training.run(config, strategy)
    logging.info("metrics written to %s", os.path.join(FLAGS.output_dir, "metrics.json"))


if __name__ == "__main__":
    app.run(main)
