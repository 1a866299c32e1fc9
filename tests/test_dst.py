"""SET and RigL: the drop-and-grow update equals a hand computation, counts never change,
grown weights start at 0, optimizer slots of changed connections are reset, SET is seeded,
and under MirroredStrategy every replica makes the same update."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf
from sniptf.during_training import dynamic as dst

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(optimizer, seed=0, kept=0.4):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6,))
    model = sniptf.wrap(keras.Model(x, keras.layers.Dense(5, name="d")(x)))
    entry = sniptf.transform.masked_entries(model)[0]
    mask = np.random.default_rng(seed).random(entry.mask.shape) < kept
    sniptf.transform.apply_masks([entry], [mask])
    model.compile(optimizer, "mse")
    return model, entry


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.normal(size=(n, 5)).astype("float32")


def test_rigl_update_equals_a_hand_computation():
    model, entry = _model(keras.optimizers.SGD(0.1))
    x, y = _data()
    w0, b0 = entry.weight.numpy().copy(), model.get_layer("d").layer.bias.numpy().copy()
    mask0 = entry.mask.numpy().astype(bool)
    # the dense gradient at the step's starting weights: of mse wrt the full kernel (pruned = 0)
    kernel = tf.Variable(w0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((tf.matmul(x, kernel) + b0 - y) ** 2)
    g = tape.gradient(loss, kernel).numpy()
    w1 = w0 - 0.1 * g * mask0  # the step's own SGD update, masked
    rigl = sniptf.RigL(update_every=1, end_step=10, drop_fraction=0.5)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[rigl])  # one step
    k = math.floor(0.5 / 2 * (1 + math.cos(math.pi * 1 / 10)) * mask0.sum())
    kept = np.flatnonzero(mask0)
    dropped = kept[np.argsort(np.abs(w1.reshape(-1)[kept]), kind="stable")[:k]]
    after_drop = mask0.reshape(-1).copy()
    after_drop[dropped] = False
    candidates = np.flatnonzero(~after_drop)
    grown = candidates[np.argsort(-np.abs(g.reshape(-1)[candidates]), kind="stable")[:k]]
    expected = after_drop.copy()
    expected[grown] = True
    mask1 = entry.mask.numpy().astype(bool)
    np.testing.assert_array_equal(mask1.reshape(-1), expected)
    assert mask1.sum() == mask0.sum() and k > 0
    w = entry.weight.numpy().reshape(-1)
    new = grown[~mask0.reshape(-1)[grown]]  # grown and not kept before: start at 0
    assert np.all(w[new] == 0) and np.all(w[~expected] == 0)
    stay = np.flatnonzero(expected & mask0.reshape(-1))  # kept, or dropped and regrown: unchanged
    np.testing.assert_allclose(w[stay], w1.reshape(-1)[stay], rtol=1e-6, atol=1e-7)
    assert rigl.updates[0]["step"] == 1 and rigl.updates[0]["added"] == new.size == k - rigl.updates[0]["regrown"]


def test_rigl_after_a_fit_that_raised_leaves_training_as_it_was():
    # Keras calls on_train_end only when fit returns; RigL never replaces the train step:
    # its hook is the MaskedLayer's gradient, which hands each weight exactly its own
    model, entry = _model(keras.optimizers.SGD(0.1))
    x, y = _data()

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[sniptf.RigL(1, 10), Interrupt()])
    assert "train_step" not in model.__dict__
    w0, mask = entry.weight.numpy(), entry.mask.numpy().astype("float32")
    b0 = model.get_layer("d").layer.bias.numpy()
    theta = tf.Variable(w0 * mask)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((tf.matmul(x, theta) + b0 - y) ** 2)
    g = tape.gradient(loss, theta).numpy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)  # one plain step
    np.testing.assert_allclose(entry.weight.numpy(), w0 - 0.1 * g * mask, rtol=1e-5, atol=1e-7)
    assert np.all(entry.weight.numpy()[mask == 0] == 0)
    rigl = sniptf.RigL(update_every=3, end_step=10)  # steps 2..9 of this fit: updates at 3, 6, 9
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[rigl])
    assert "train_step" not in model.__dict__ and [u["step"] for u in rigl.updates] == [3, 6, 9]


def test_set_keeps_counts_is_seeded_and_resets_the_optimizer_slots():
    x, y = _data(32)
    runs = []
    for seed in (3, 3, 4):
        model, entry = _model(keras.optimizers.SGD(0.05, momentum=0.9), seed=0)
        before = int(entry.mask.numpy().sum())
        callback = sniptf.SET(update_every=2, end_step=8, drop_fraction=0.3, seed=seed)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[callback])  # 8 steps
        assert [u["step"] for u in callback.updates] == [2, 4, 6]  # below end_step only
        assert int(entry.mask.numpy().sum()) == before
        runs.append(entry.mask.numpy().copy())
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    # slots: one update by hand, then the momentum of every changed connection is 0
    model, entry = _model(keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)  # momentum built up
    callback = sniptf.SET(update_every=1, end_step=100, drop_fraction=0.5, seed=0)
    callback.set_model(model)
    callback.on_train_begin()
    before = entry.mask.numpy().astype(bool)
    callback.update(1)
    after = entry.mask.numpy().astype(bool)
    (slot,) = sniptf._keras_compat.optimizer_slots(model.optimizer, entry.weight)
    changed = before != after
    assert changed.any() and np.all(slot.numpy()[changed] == 0)
    assert np.any(slot.numpy()[before & after] != 0)  # the others keep their momentum


def test_drop_fraction_decays_by_the_cosine():
    assert dst.drop_fraction_at(0, drop_fraction=0.3, end_step=100) == pytest.approx(0.3)
    assert dst.drop_fraction_at(50, drop_fraction=0.3, end_step=100) == pytest.approx(0.15)
    assert dst.drop_fraction_at(100, drop_fraction=0.3, end_step=100) == pytest.approx(0.0)


@pytest.mark.parametrize("make,match", [
    (lambda: sniptf.RigL(0, 10), "Received: update_every=0"),
    (lambda: sniptf.SET(1, 10, drop_fraction=0.0), "Received: drop_fraction=0.0"),
    (lambda: sniptf.RigL(1, 0), "Received: end_step=0"),
])
def test_bad_arguments_name_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.slow
def test_mirrored_replicas_make_the_same_update(tmp_path):
    out = tmp_path / "dst.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "dst_worker.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("rigl", "set"):
        r = result[name]
        assert r["identical_across_replicas"], name
        assert r["kept_after"] == r["kept_before"], name
        assert [u[0] for u in r["updates"]] == [4, 8, 12, 16, 20, 24], name
        assert all(changed > 0 for _, changed in r["updates"]), name
        assert r["pruned_zero"], name
