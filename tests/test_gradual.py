"""GradualPruning: Zhu & Gupta's schedule with exact counts at the update steps, masks that only
shrink, pruned weights exactly 0, across fit calls and a .keras round trip."""

import keras
import numpy as np
import pytest

import sniptf
from sniptf import magnitude


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((20,))
    h = keras.layers.Dense(32, activation="relu", name="h")(x)
    model = sniptf.wrap(keras.Model(x, keras.layers.Dense(4, name="out")(h)))
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)).astype("float32"), rng.integers(0, 4, n)


def _pruned_count(model):
    return sum(int((~e.mask.numpy().astype(bool)).sum()) for e in sniptf.transform.masked_entries(model))


def _formula(t, s_i, s_f, t0, t1, power=3):
    t = min(max(t, t0), t1)
    return s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.pruned = {}

    def on_train_batch_end(self, batch, logs=None):
        self.pruned[int(self.model.optimizer.iterations.numpy())] = _pruned_count(self.model)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_schedule_counts_equal_the_formula_at_every_step_and_hold_after_end(scope):
    model = _model()
    sizes = (20 * 32, 32 * 4)
    gmp = sniptf.GradualPruning(0.9, begin_step=2, end_step=12, initial_sparsity=0.1, frequency=3, scope=scope)
    record = _Record()  # after GradualPruning: sees each step's state once it has been updated
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[gmp, record])  # 16 steps
    expected, current = {}, 0
    for t in range(1, 17):
        if t in (2, 5, 8, 11, 12):  # begin + k*frequency, and end_step
            target = _formula(t, 0.1, 0.9, 2, 12)  # each tensor to it, or all of them at once
            current = (sum(int(round(target * n)) for n in sizes) if scope == "layerwise"
                       else int(round(target * sum(sizes))))
        expected[t] = current
    assert record.pruned == expected
    assert _pruned_count(model) == expected[16]
    for e in sniptf.transform.masked_entries(model):
        assert np.all(e.weight.numpy()[~e.mask.numpy().astype(bool)] == 0)


def test_pruned_are_the_smallest_kept_and_masks_only_shrink():
    model = _model()
    entries = sniptf.transform.masked_entries(model)
    weights = np.concatenate([np.abs(e.weight.numpy()).ravel() for e in entries])
    assert magnitude.prune_to(model, 0.5) == int(round(0.5 * weights.size))
    kept = np.concatenate([e.mask.numpy().astype(bool).ravel() for e in entries])
    assert weights[kept].min() >= weights[~kept].max()
    before = [e.mask.numpy().copy() for e in entries]
    assert magnitude.prune_to(model, 0.3) == 0  # sparser already: nothing changes
    assert all(np.array_equal(b, e.mask.numpy()) for b, e in zip(before, entries))
    magnitude.prune_to(model, 0.8, scope="layerwise")
    for e in entries:
        m = e.mask.numpy().astype(bool)
        assert (~m).sum() == int(round(0.8 * m.size))
        assert not np.any(m & ~before[entries.index(e)].astype(bool))  # never regrown


def test_on_top_of_a_pai_mask_and_across_fits_and_a_keras_round_trip(tmp_path):
    x, y = _data(40)
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)])
    pruned = sniptf.prune(plain, (x, y), kappa=0.5)
    pruned.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    total = 20 * 32 + 32 * 4
    schedule = dict(begin_step=0, end_step=20, initial_sparsity=0.5, frequency=5, scope="global")
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0,
               callbacks=[sniptf.GradualPruning(0.95, **schedule)])  # steps 1..10: updates at 5, 10
    assert _pruned_count(pruned) == int(round(_formula(10, 0.5, 0.95, 0, 20) * total))
    path = str(tmp_path / "mid.keras")
    pruned.save(path)
    resumed = keras.models.load_model(path)
    assert int(resumed.optimizer.iterations.numpy()) == 10
    resumed.fit(x, y, batch_size=4, epochs=1, verbose=0,
                callbacks=[sniptf.GradualPruning(0.95, **schedule)])  # steps 11..20: 15, 20
    assert _pruned_count(resumed) == int(round(0.95 * total))


@pytest.mark.parametrize("kwargs,match", [
    ({"final_sparsity": 1.0, "begin_step": 0, "end_step": 5}, "Received: final_sparsity=1.0"),
    ({"final_sparsity": 0.5, "begin_step": 5, "end_step": 5}, "Expected `end_step` to be an int > begin_step"),
    ({"final_sparsity": 0.5, "begin_step": -1, "end_step": 5}, "Received: begin_step=-1"),
    ({"final_sparsity": 0.5, "begin_step": 0, "end_step": 5, "frequency": 0}, "Received: frequency=0"),
    ({"final_sparsity": 0.5, "begin_step": 0, "end_step": 5, "scope": "local"}, "Received: scope='local'"),
    ({"final_sparsity": 0.5, "begin_step": 0, "end_step": 5, "scope": "erk"}, "Received: scope='erk'"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sniptf.GradualPruning(**kwargs)


def test_needs_a_wrapped_model():
    x, y = _data(8)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(4)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="needs a wrapped model"):
        model.fit(x, y, verbose=0, callbacks=[sniptf.GradualPruning(0.5, 0, 5)])


def test_a_fit_that_starts_past_update_steps_applies_the_latest_first():
    x, y = _data(16)
    total = 20 * 32 + 32 * 4
    model = _model()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # 8 steps without the callback
    record = _Record()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,  # steps 9..12: past end_step=6
              callbacks=[sniptf.GradualPruning(0.8, begin_step=2, end_step=6, frequency=2), record])
    assert set(record.pruned.values()) == {int(round(0.8 * total))}
    # begin_step=0: the update at step 0 (the initial sparsity) before the first step
    model = _model()
    record = _Record()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,
              callbacks=[sniptf.GradualPruning(0.8, begin_step=0, end_step=40, initial_sparsity=0.3,
                                               frequency=10), record])
    assert record.pruned == {t: int(round(0.3 * total)) for t in range(1, 5)}
