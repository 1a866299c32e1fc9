"""How a study's runs share this machine's cores: one run alone against two at once.

    python benchmarks/paired_runs.py [--models=lenet5_caffe,lenet_300_100] [--steps=300]

A study with `--processes=2` trains two runs at once. Each worker is a fresh
TensorFlow process, which sizes its thread pools to every core it sees, so two
of them oversubscribe the cores. For each model this times training steps
(Keras `fit` on a wrapped, 99%-random-pruned model, batch 100, SGD with
momentum, synthetic data of the model's input shape; the first 50 steps are
not timed) three ways, side by side in this one run:

1. one run alone, TensorFlow's default threads;
2. two runs at once, default threads (what `--processes=2` did);
3. two runs at once, each with one intra-op and one inter-op thread
   (`TF_NUM_INTRAOP_THREADS=1`, `TF_NUM_INTEROP_THREADS=1`), left to the OS;
4. as (3), each pinned to its own core (`taskset`).

and prints each way's ms per step and its throughput (steps per second over
all runs) as a ratio to (1). Pause other work on the machine first.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

flags.DEFINE_list("models", ["lenet5_caffe", "lenet_300_100"], "zoo models to time")
flags.DEFINE_integer("steps", 300, "timed training steps per run")
flags.DEFINE_string("worker", "", "internal: time one model in this process")
FLAGS = flags.FLAGS

WARMUP = 50


def _time_steps(model_name, steps):
    """ms per training step of `model_name`, after `WARMUP` untimed steps."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import sniptf
    from sniptf import models

    shape = (28, 28) if model_name.startswith(("lstm", "gru")) else (28, 28, 1)
    model = models.get(model_name, shape, 10)
    rng = np.random.default_rng(0)
    x = rng.random((100 * 8,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, 100 * 8)
    model = sniptf.prune(model, (x[:100], y[:100]), kappa=0.01, criterion="random")
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    epochs = -(-(steps + WARMUP) // 8)
    model.fit(x, y, batch_size=100, epochs=epochs, verbose=0, shuffle=False, callbacks=[Stamp()])
    timed = stamps[WARMUP:]
    return 1000.0 * (timed[-1] - timed[0]) / (len(timed) - 1)


def _start(model_name, steps, *, cpu=None, one_thread=False):
    env = dict(os.environ)
    command = [sys.executable, __file__, f"--worker={model_name}", f"--steps={steps}"]
    if one_thread:
        env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1")
    if cpu is not None:
        command = ["taskset", "-c", str(cpu)] + command
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def _collect(processes):
    out = []
    for p in processes:
        stdout, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"A timing worker failed (exit {p.returncode}).")
        out.append(json.loads(stdout.strip().splitlines()[-1])["ms_per_step"])
    return out


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps({"ms_per_step": _time_steps(FLAGS.worker, FLAGS.steps)}))
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit(f"This compares two runs on two cores; this process sees cores {cores}.")
    for name in FLAGS.models:
        alone = _collect([_start(name, FLAGS.steps)])
        paired = _collect([_start(name, FLAGS.steps) for _ in range(2)])
        one_thread = _collect([_start(name, FLAGS.steps, one_thread=True) for _ in range(2)])
        pinned = _collect([_start(name, FLAGS.steps, cpu=c, one_thread=True) for c in cores[:2]])
        base = 1000.0 / alone[0]
        print(f"{name}:")
        for label, ms in (("one alone, default threads", alone),
                          ("two at once, default threads", paired),
                          ("two at once, one thread each", one_thread),
                          ("two at once, one core and one thread each", pinned)):
            rate = sum(1000.0 / m for m in ms)
            print(f"  {label:44s} ms/step {', '.join(f'{m:.1f}' for m in ms):14s} "
                  f"throughput {rate:6.1f} steps/s = {rate / base:.2f}x alone")


if __name__ == "__main__":
    app.run(main)
