"""Run by test_dst.py in a fresh process: RigL and SET under MirroredStrategy on 2 logical CPUs.

    python tests/dst_worker.py OUT.json

Trains a small wrapped MLP with each callback under the strategy and writes, per
callback, whether every replica's copy of every mask and kernel is the same, the
kept counts before and after, and the updates made.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import sniptf  # noqa: E402


def main():
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 12)).astype("float32")
    y = rng.integers(0, 3, 256)
    out = {}
    for name, make in (("rigl", lambda: sniptf.RigL(4, 40, drop_fraction=0.5)),
                       ("set", lambda: sniptf.SET(4, 40, drop_fraction=0.5, seed=1))):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((12,))
            h = keras.layers.Dense(16, activation="relu")(inputs)
            model = sniptf.prune(keras.Model(inputs, keras.layers.Dense(3)(h)), (x[:64], y[:64]), kappa=0.3)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        entries = sniptf.transform.masked_entries(model)
        before = [int(e.mask.numpy().sum()) for e in entries]
        callback = make()
        model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=[callback])  # 24 steps
        same = True
        for e in entries:
            for variable in (e.mask, e.weight):
                copies = [v.numpy() for v in getattr(variable.value, "values", (variable.value,))]
                same &= len(copies) == 2 and all(np.array_equal(copies[0], c) for c in copies[1:])
        out[name] = {"identical_across_replicas": bool(same), "kept_before": before,
                     "kept_after": [int(e.mask.numpy().sum()) for e in entries],
                     "updates": [[u["step"], u["changed"]] for u in callback.updates],
                     "pruned_zero": all(bool(np.all(e.weight.numpy()[~e.mask.numpy().astype(bool)] == 0))
                                        for e in entries)}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
