"""What a mask update costs during training, side by side with the training it interrupts.

    python benchmarks/mask_updates.py [--repeats=5] [--nets=lenet_300_100,mlp4096]

For GradualPruning (layerwise, from 50% on a dense-wrapped net towards 90%), SET and RigL (from a 90%-sparse ERK-random
mask) on LeNet-300-100 (batch 100) and a 784-4096-4096-10 MLP (batch 256), each
updating every 100 steps, prints:
1. one mask update's wall time (the callback's `update`, timed inside `fit`) ÷ one
   training step of the same model without updates;
2. a window of 100 training steps that holds one update ÷ 100 steps without (one
   `fit` with the method, one without, on the same model and data; the first window
   of each, which traces the step, is left out): the per-epoch overhead at ΔT = 100.
Medians over `--repeats` windows (and the updates made in them). Random data of the
nets' input shape (timing only), SGD with momentum 0.9, Keras's default compilation.
Goal (issue 38): an update <= 2 training steps, <= 5% per epoch at ΔT = 100.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import sniptf  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Windows of 100 steps timed per variant (and updates in them).", lower_bound=1)
flags.DEFINE_list("nets", ["lenet_300_100", "mlp4096"], "Nets: lenet_300_100, mlp4096.")
flags.DEFINE_list("methods", ["gmp", "set", "rigl"], "Methods: gmp, set, rigl.")

EVERY = 100
BATCH = {"lenet_300_100": 100, "mlp4096": 256}


def _net(name):
    keras.utils.set_random_seed(0)
    if name == "lenet_300_100":
        return sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    x = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(x)
    for i in range(2):
        h = keras.layers.Dense(4096, activation="relu", name=f"fc{i + 1}")(h)
    return keras.Model(x, keras.layers.Dense(10, name="out")(h), name="mlp4096")


def _data(batch):
    rng = np.random.default_rng(0)
    x = rng.random((batch * 8, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch * 8)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()


class _Clock(keras.callbacks.Callback):
    """The wall time after each step (after every callback before it in the list)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_begin(self, logs=None):
        self.times = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def _windows(clock, windows):
    """Wall time of each 100-step window but the first (which traces the step)."""
    t = clock.times
    return [t[(k + 1) * EVERY] - t[k * EVERY] for k in range(1, windows + 1)]


def _model(net, method, batch):
    dense = _net(net)
    if method == "gmp":
        model = sniptf.wrap(dense)
        # from 50% (reached when the timed fit begins: that first update is not counted)
        callback = sniptf.GradualPruning(0.9, 0, 10 ** 6, initial_sparsity=0.5, frequency=EVERY)
    else:
        x = np.random.default_rng(1).random((batch, 28, 28, 1), dtype=np.float32)
        model = sniptf.prune(dense, (x, np.zeros(batch, "int64")), kappa=0.1, criterion="random", scope="erk")
        callback = (sniptf.SET(EVERY, 10 ** 6, seed=0) if method == "set" else sniptf.RigL(EVERY, 10 ** 6))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, callback


def measure(net, method, repeats):
    """(update / step, window with an update / window without, their parts)."""
    batch = BATCH[net]
    data = _data(batch)
    steps = EVERY * (repeats + 1)
    model, callback = _model(net, method, batch)
    durations = []
    update = callback.update

    def timed(step, logs=None):
        start = time.perf_counter()
        update(step, logs)
        durations.append(time.perf_counter() - start)

    callback.update = timed
    plain, with_updates = _Clock(), _Clock()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[plain])
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[callback, with_updates])
    step = float(np.median(_windows(plain, repeats))) / EVERY
    window_plain = float(np.median(_windows(plain, repeats)))
    window_updates = float(np.median(_windows(with_updates, repeats)))
    one_update = float(np.median(durations[1:] or durations))
    return {"step_s": step, "update_s": one_update, "updates": len(durations),
            "window_plain_s": window_plain, "window_updates_s": window_updates,
            "update_over_step": one_update / step, "epoch_overhead": window_updates / window_plain - 1.0}


def main(argv):
    del argv
    print(f"mask updates every {EVERY} steps; medians of {FLAGS.repeats} windows; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    print(f"{'net':14s} {'method':6s} {'step ms':>8s} {'update ms':>10s} {'update/step':>12s} "
          f"{'100 steps s':>12s} {'+update s':>10s} {'overhead':>9s}")
    for net in FLAGS.nets:
        for method in FLAGS.methods:
            r = measure(net, method, FLAGS.repeats)
            print(f"{net:14s} {method:6s} {1e3 * r['step_s']:8.2f} {1e3 * r['update_s']:10.1f} "
                  f"{r['update_over_step']:12.2f} {r['window_plain_s']:12.3f} {r['window_updates_s']:10.3f} "
                  f"{100 * r['epoch_overhead']:8.1f}%", flush=True)


if __name__ == "__main__":
    app.run(main)
