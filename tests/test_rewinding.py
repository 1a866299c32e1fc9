"""Rewinding restores the step-k weights of the kept connections; IMP prunes the kept by
magnitude to 1 - (1 - p)^r exactly and rewinds each round."""

import keras
import numpy as np
import pytest

import sniptf
from sniptf.studies import imp


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((10,))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(16, activation="relu", name="h")(x))
    model = sniptf.wrap(keras.Model(x, keras.layers.Dense(3, name="out")(h)))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def test_rewind_restores_the_step_k_weights_of_kept_connections(tmp_path):
    model = _model()
    x, y = _data()
    point = sniptf.RewindPoint(3, path=str(tmp_path / "rewind.npz"))
    snapshots = {}

    class Snap(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots[int(self.model.optimizer.iterations.numpy())] = {
                w.path: w.numpy().copy() for w in self.model.weights}

    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[point, Snap()])  # 12 steps
    sniptf.gradual.prune_to(model, 0.6)
    trained = {w.path: w.numpy().copy() for w in model.weights}
    for source in (point, point.weights, str(tmp_path / "rewind.npz")):
        rewound = sniptf.rewind(model, source)
        assert [l.name for l in rewound.layers] == [l.name for l in model.layers]
        for e, r in zip(sniptf.transform.masked_entries(model), sniptf.transform.masked_entries(rewound)):
            mask = e.mask.numpy().astype(bool)
            np.testing.assert_array_equal(r.mask.numpy().astype(bool), mask)
            step3 = snapshots[3][e.weight.path]
            np.testing.assert_array_equal(r.weight.numpy()[mask], step3[mask])
            assert np.all(r.weight.numpy()[~mask] == 0)
        bn = rewound.get_layer("bn")
        np.testing.assert_array_equal(bn.moving_mean.numpy(), snapshots[3]["bn/moving_mean"])
    assert all(np.array_equal(trained[w.path], w.numpy()) for w in model.weights)  # input untouched


def test_imp_prunes_the_kept_by_magnitude_to_the_schedule_and_rewinds():
    x, y = _data()
    model = _model()
    total = 10 * 16 + 16 * 3
    trained_kernels = []

    def train(m, callbacks):
        if not m.compiled:
            m.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        trained_kernels.append({e.key: e.weight.numpy().copy() for e in sniptf.transform.masked_entries(m)})

    trajectory = imp.run(model, train, rounds=3, fraction=0.3, rewind_step=0, log=lambda line: None)
    assert [r for r, _, _ in trajectory] == [1, 2, 3]
    previous = None
    for (r, sparsity, m), trained in zip(trajectory, trained_kernels):
        assert sparsity == pytest.approx(1 - 0.7 ** r)
        entries = sniptf.transform.masked_entries(m)
        masks = {e.key: e.mask.numpy().astype(bool) for e in entries}
        assert sum(int((~v).sum()) for v in masks.values()) == int(round(sparsity * total))
        # the pruned are the smallest |w| of the trained weights among those kept before
        kept_values = np.concatenate([np.abs(trained[k])[masks[k]] for k in masks])
        dropped = np.concatenate([np.abs(trained[k])[~masks[k] & (previous[k] if previous else True)]
                                  for k in masks])
        assert kept_values.min() >= dropped.max()
        if previous:
            assert all(not np.any(masks[k] & ~previous[k]) for k in masks)  # masks only shrink
        previous = masks


def test_bad_rewind_inputs_name_the_value(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="Received: step=-1"):
        sniptf.RewindPoint(-1)
    with pytest.raises(ValueError, match="has kept nothing yet"):
        sniptf.rewind(model, sniptf.RewindPoint(5))
    with pytest.raises(ValueError, match="No rewind file"):
        sniptf.rewind(model, str(tmp_path / "none.npz"))
    with pytest.raises(ValueError, match="do not fit model"):
        sniptf.rewind(model, {"h/kernel": np.zeros((2, 2))})
