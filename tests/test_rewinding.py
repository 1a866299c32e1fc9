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
    sniptf.magnitude.prune_to(model, 0.6)
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


def _assert_rewound_to(rewound, model, reference):
    """`rewound` has `model`'s masks on the weights of `reference` ({path in model: array})."""
    for e, r in zip(sniptf.transform.masked_entries(model), sniptf.transform.masked_entries(rewound)):
        mask = e.mask.numpy().astype(bool)
        np.testing.assert_array_equal(r.mask.numpy().astype(bool), mask)
        np.testing.assert_array_equal(r.weight.numpy()[mask], reference[e.weight.path][mask])
        assert np.all(r.weight.numpy()[~mask] == 0)
    np.testing.assert_array_equal(rewound.get_layer("bn").moving_mean.numpy(),
                                  reference[model.get_layer("bn").moving_mean.path])


def test_rewind_from_keras_files_a_model_and_weights_named_otherwise(tmp_path):
    """The model at step k as Keras keeps it (ModelCheckpoint's .keras / .weights.h5, the
    dense model before pruning, a reloaded model whose variable paths differ): matched by
    path or, where the paths differ, by position."""
    x, y = _data()
    keras.utils.set_random_seed(0)
    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu", name="h"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(3, name="out")])
    at_init = {w.path: w.numpy().copy() for w in dense.weights}
    model = sniptf.prune(dense, (x[:16], y[:16]), kappa=0.5)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)  # 12 steps
    step12 = {w.path: w.numpy().copy() for w in model.weights}
    model.save(tmp_path / "step12.keras")
    model.save_weights(tmp_path / "step12.weights.h5")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    sniptf.magnitude.prune_to(model, 0.8)
    for point in (str(tmp_path / "step12.keras"), tmp_path / "step12.weights.h5"):
        _assert_rewound_to(sniptf.rewind(model, point), model, step12)
    # the dense model before pruning is the weights at step 0 (its paths: the wrap's, no masks)
    _assert_rewound_to(sniptf.rewind(model, checkpoint=dense), model, at_init)  # the name
    # a reloaded model names its variables without the Sequential's prefix: rewind works both ways
    reloaded = keras.models.load_model(tmp_path / "step12.keras")
    assert [w.path for w in reloaded.weights] != [w.path for w in model.weights]
    _assert_rewound_to(sniptf.rewind(reloaded, {p: a for p, a in step12.items() if "_mask" not in p}),
                       reloaded, {w.path: step12[v.path] for w, v in zip(reloaded.weights, model.weights)})
    with pytest.raises(TypeError, match="Received: checkpoint=3"):
        sniptf.rewind(model, 3)
    dense.save_weights(tmp_path / "dense.weights.h5")  # no masks: not the wrapped model's file
    with pytest.raises(ValueError, match="another model than the wrapped"):
        sniptf.rewind(model, tmp_path / "dense.weights.h5")


@pytest.mark.slow
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


def _imp_config(out, **fields):
    from sniptf import training
    recipe = dict(model="lenet_300_100", dataset="mnist10k", train_steps=12, eval_every=6, batch_size=32,
                  learning_rate=0.05, seed=1, output_dir=str(out))
    recipe.update(fields)
    return training.TrainConfig(**recipe)


def _npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_imp_one_round_per_training_run_prunes_the_final_weights_and_rewinds(tmp_path):
    """criterion="imp" + rewind_from: the round's mask is the top-|w| of the previous run's final
    weights among its kept (exact count), its kept weights are the first run's rewind weights,
    and it keeps that rewind point and its own final state for the next round."""
    from sniptf import models
    from sniptf.during_training import rewinding
    from sniptf import training
    from sniptf import transform
    r0, r1, r2 = (tmp_path / f"round{i}" for i in range(3))
    training.run(_imp_config(r0, criterion=training.NO_PRUNING, rewind_step=2))
    m1 = training.run(_imp_config(r1, criterion=training.IMP, rewind_from=str(r0), kappa=0.5))
    m2 = training.run(_imp_config(r2, criterion=training.IMP, rewind_from=str(r1), kappa=0.2))
    assert m1["sparsity"] == pytest.approx(0.5, abs=1e-6) and m2["sparsity"] == pytest.approx(0.8, abs=1e-6)
    assert m2["rewind_from"] == str(r1) and m2["criterion"] == "imp"
    rewind0, final1 = _npz(r0 / "rewind.npz"), _npz(r1 / "final.npz")
    assert _npz(r2 / "rewind.npz").keys() == rewind0.keys()  # the chain keeps round 0's point
    assert all(np.array_equal(_npz(r2 / "rewind.npz")[k], v) for k, v in rewind0.items())
    # round 2's start, rebuilt: the 20% largest final |w| of round 1 among its kept, on round 0's weights
    model = rewinding.next_round(sniptf.wrap(models.get("lenet_300_100", (28, 28, 1), 10)), r1, 0.8)
    entries = transform.masked_entries(model)
    kept1 = [final1[e.mask.path].astype(bool) for e in entries]
    scores = np.concatenate([np.where(k, np.abs(final1[e.weight.path]), -1).ravel() for e, k in zip(entries, kept1)])
    n_keep = int(round(0.2 * scores.size))
    threshold = np.sort(scores)[::-1][n_keep - 1]
    for e, k in zip(entries, kept1):
        mask = e.mask.numpy().astype(bool)
        assert not (mask & ~k).any()  # masks only shrink
        assert (np.abs(final1[e.weight.path])[mask] >= threshold).all()
        np.testing.assert_array_equal(e.weight.numpy()[mask], rewind0[e.weight.path][mask])
        assert (e.weight.numpy()[~mask] == 0).all()
    assert sum(int(e.mask.numpy().sum()) for e in entries) == n_keep
    assert _npz(r2 / "final.npz").keys() == final1.keys()  # for a round 3
    # what cannot be a round is refused, naming the value
    bad = [
        (dict(criterion="imp"), "criterion='imp' prunes the masks of a previous run"),
        (dict(criterion="imp", rewind_from=str(tmp_path / "nowhere")), "No final.npz in"),
        (dict(criterion="snip", rewind_from=str(r0)), "set criterion='imp'"),
        (dict(criterion="imp", rewind_from=str(r0), rewind_step=3), "rewind_step=3"),
        (dict(criterion="imp", rewind_from=str(r0), scope="erk"), "scope='erk'"),
        (dict(criterion="imp", rewind_from=str(r0), sanity="invert"), "sanity='invert'"),
        (dict(criterion="imp", rewind_from=str(tmp_path / "x")), "another directory than output_dir"),
        (dict(criterion="imp", rewind_from=str(r0), kappa=5000), r"fraction of weights.*Received: kappa=5000"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            training.prepare(_imp_config(tmp_path / "x", **fields))
    # the function itself refuses before it changes the model it is given
    fresh = sniptf.wrap(models.get("lenet_300_100", (28, 28, 1), 10))
    before = [w.numpy().copy() for w in fresh.weights]
    for kwargs, message in [(dict(sparsity=0.5), r"source run's \(0\.8\): masks only shrink"),
                            (dict(sparsity=0.9, scope="erk"), "Received: scope='erk'")]:
        with pytest.raises(ValueError, match=message):
            rewinding.next_round(fresh, r2, **kwargs)
        assert all(np.array_equal(w.numpy(), b) for w, b in zip(fresh.weights, before))
    # 50% from the 80%-sparse round 2: refused before any work, its directory never made
    with pytest.raises(ValueError, match=r"masks only shrink.*kept \(0\.2\)\. Received: kappa=0\.5"):
        training.run(_imp_config(tmp_path / "r3", criterion="imp", rewind_from=str(r2), kappa=0.5))
    assert not (tmp_path / "r3").exists()
