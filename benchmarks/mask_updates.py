"""What a mask update costs during training, side by side with the training it interrupts.

    python benchmarks/mask_updates.py [--repeats=5] [--nets=lenet_300_100,mlp4096]

For GradualPruning (layerwise, from 50% on a dense-wrapped net towards 90%), SET and RigL (from a 90%-sparse ERK-random
mask) on LeNet-300-100 (batch 100) and a 784-4096-4096-10 MLP (batch 256), each
updating every 100 steps, prints:
1. one mask update's wall time (the callback's `update`, timed inside `fit`) ÷ one
   training step of the same model without updates;
2. a window of 100 training steps that holds one update ÷ the window before it, which
   does not (one `fit`: the method's update is skipped at the end of every other
   window; the first window, which traces the step, is left out): the per-epoch
   overhead at ΔT = 100. Both windows run the callback's per-step check (and, for
   RigL, the dense-gradient hook's write at every 100th step), so that per-step cost
   is in both and not in the ratio.
Medians over `--repeats` pairs (and the updates made in them); "step" is the median
window without an update ÷ 100. Random data of the
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
flags.DEFINE_integer("repeats", 5, "Pairs of 100-step windows (one with an update) per variant.", lower_bound=1)
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
    """(update / step, window with an update / window without, their parts), in one `fit`:
    the method's update is made at the end of every other 100-step window (the others skip
    it), so each window with an update is paired with the one before it, side by side."""
    batch = BATCH[net]
    data = _data(batch)
    windows = 2 * repeats + 1  # the first traces the step and is left out
    model, callback = _model(net, method, batch)
    durations = []
    update = callback.update

    def every_other(step, logs=None):
        if (step // EVERY) % 2 == 0:
            return  # a window without its update: the pair's baseline
        start = time.perf_counter()
        update(step, logs)
        durations.append(time.perf_counter() - start)

    callback.update = every_other
    clock = _Clock()
    model.fit(data, steps_per_epoch=EVERY * windows, epochs=1, verbose=0, callbacks=[callback, clock])
    t = clock.times
    window = [t[(k + 1) * EVERY] - t[k * EVERY] for k in range(windows)]  # window k ends at step 100(k+1)
    # window k (0-based) holds an update when (k + 1) is odd: pairs (without, with) = (k, k + 1), k odd
    pairs = [(window[k], window[k + 1]) for k in range(1, windows - 1, 2)]
    plain = [a for a, _ in pairs]
    step = float(np.median(plain)) / EVERY
    one_update = float(np.median(durations[1:] or durations))
    return {"step_s": step, "update_s": one_update, "updates": len(durations),
            "window_plain_s": float(np.median(plain)), "window_updates_s": float(np.median([b for _, b in pairs])),
            "update_over_step": one_update / step,
            "epoch_overhead": float(np.median([b / a for a, b in pairs])) - 1.0}


def main(argv):
    del argv
    print(f"mask updates every {EVERY} steps; medians of {FLAGS.repeats} window pairs in one fit; "
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
