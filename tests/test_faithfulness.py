"""The during-training methods point by point against their references (issue 38):
google-research/rigl's mask update (only connections whose mask bit changed are
touched), the invariant that a pruned raw weight and its optimizer slots are exactly 0
(GradualPruning, SET, RigL, IMP), RigL's growth gradient taken with respect to W ⊙ C,
and TF-MOT / Zhu & Gupta's per-layer GMP as the default."""

import keras
import numpy as np
import pytest

import sniptf
from sniptf import _keras_compat
from sniptf import transform


def _mlp(seed=0, width=24):
    keras.utils.set_random_seed(seed)
    x = keras.Input((10,))
    h = keras.layers.Dense(width, activation="relu", name="h")(x)
    return keras.Model(x, keras.layers.Dense(3, name="out")(h))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def _compiled(model, optimizer=None):
    model.compile(optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _pruned_are_zero(model):
    """Every raw weight and every optimizer slot where the mask is 0 is exactly 0."""
    for e in transform.masked_entries(model):
        off = ~e.mask.numpy().astype(bool)
        assert np.all(e.weight.numpy()[off] == 0), e.key
        for slot in _keras_compat.optimizer_slots(model.optimizer, e.weight):
            assert np.all(slot.numpy()[off] == 0), (e.key, slot.path)


@pytest.mark.parametrize("make", [lambda: sniptf.SET(1, 100, drop_fraction=0.5, seed=0),
                                  lambda: sniptf.RigL(1, 100, drop_fraction=0.5)], ids=["set", "rigl"])
def test_a_dense_layer_keeps_every_weight_and_slot_through_an_update(make):
    # a mask at density 1 can only regrow what it dropped: nothing changes (the reference's
    # new_connections = mask2 & (mask == 0)); zeroing the dropped-and-regrown loses them
    x, y = _data()
    model = _compiled(transform.wrap(_mlp()))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)  # momentum built up
    entries = transform.masked_entries(model)
    before = [(e.weight.numpy().copy(), [s.numpy().copy() for s in
               _keras_compat.optimizer_slots(model.optimizer, e.weight)]) for e in entries]
    callback = make()
    callback.set_model(model)
    callback.on_train_begin()
    callback.update(1)  # one update at step 1 from the current weights (RigL: gradient not needed)
    for e, (w, slots) in zip(entries, before):
        assert e.mask.numpy().all()
        np.testing.assert_array_equal(e.weight.numpy(), w)
        for s, s0 in zip(_keras_compat.optimizer_slots(model.optimizer, e.weight), slots):
            np.testing.assert_array_equal(s.numpy(), s0)
    assert callback.updates[-1]["changed"] == 0


def test_only_changed_mask_bits_are_reset_by_an_update():
    # a sparse mask: the connections dropped and regrown in the same update keep value and slots
    x, y = _data()
    model = _compiled(sniptf.prune(_mlp(), (x, y), kappa=0.5, criterion="random"))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    entries = transform.masked_entries(model)
    old = [e.mask.numpy().astype(bool) for e in entries]
    weights = [e.weight.numpy().copy() for e in entries]
    slots = [[s.numpy().copy() for s in _keras_compat.optimizer_slots(model.optimizer, e.weight)]
             for e in entries]
    callback = sniptf.SET(1, 100, drop_fraction=0.9, seed=3)  # most kept dropped: some regrown
    callback.set_model(model)
    callback.on_train_begin()
    callback.update(1)
    fraction = sniptf.during_training.dynamic.drop_fraction_at(1, drop_fraction=0.9, end_step=100)
    regrown = 0
    for e, m0, w0, s0 in zip(entries, old, weights, slots):
        m1 = e.mask.numpy().astype(bool)
        stay, changed = m0 & m1, m0 != m1
        np.testing.assert_array_equal(e.weight.numpy()[stay], w0[stay])
        assert np.all(e.weight.numpy()[changed] == 0)
        for s, before in zip(_keras_compat.optimizer_slots(model.optimizer, e.weight), s0):
            np.testing.assert_array_equal(s.numpy()[stay], before[stay])
            assert np.all(s.numpy()[changed] == 0)
        kept = np.flatnonzero(m0)  # the update's drop, by hand: the k smallest |w| kept
        k = int(np.floor(fraction * kept.size))
        dropped = kept[np.argsort(np.abs(w0.reshape(-1)[kept]), kind="stable")[:k]]
        regrown += int(m1.reshape(-1)[dropped].sum())
    record = callback.updates[-1]
    assert record["changed"] == sum(int((m0 != e.mask.numpy().astype(bool)).sum())
                                    for e, m0 in zip(entries, old))
    assert record["regrown"] == regrown and regrown > 0


@pytest.mark.parametrize("method", ["gmp", "set", "rigl"])
def test_pruned_raw_weights_and_slots_stay_exactly_zero_under_momentum(method):
    # TF-MOT zeroes what it prunes; without resetting the momentum of a removed weight,
    # SGD moves it off 0 at the next steps (measured: every one of them, |w| up to 0.32)
    x, y = _data(128)
    dense = transform.wrap(_mlp()) if method == "gmp" else sniptf.prune(
        _mlp(), (x, y), kappa=0.3, criterion="random")
    model = _compiled(dense)
    callback = {"gmp": lambda: sniptf.GradualPruning(0.8, 0, 12, frequency=2),
                "set": lambda: sniptf.SET(2, 14, seed=0),
                "rigl": lambda: sniptf.RigL(2, 14)}[method]()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[callback])  # 16 steps
    assert len(callback.updates) >= 5
    _pruned_are_zero(model)


def test_imp_rounds_leave_pruned_raw_weights_and_slots_at_zero(tmp_path):
    x, y = _data(128)
    model = _compiled(transform.wrap(_mlp()))
    point = sniptf.RewindPoint(0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[point])
    sniptf.magnitude.prune_to(model, 0.6, scope="global")
    _pruned_are_zero(model)  # the trained model's own slots too
    ticket = sniptf.rewind(model, point)
    ticket.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    _pruned_are_zero(ticket)


def test_rigl_growth_does_not_depend_on_the_raw_values_of_pruned_weights():
    # the growth gradient is ∂L/∂θ at θ = W ⊙ C: the same whatever a pruned raw weight holds
    x, y = _data(32)
    masks = []
    for garbage in (0.0, 5.0):
        model = _compiled(sniptf.prune(_mlp(), (x, y), kappa=0.3, criterion="random"),
                          keras.optimizers.SGD(0.1))
        for e in transform.masked_entries(model):
            off = ~e.mask.numpy().astype(bool)
            e.weight.assign(np.where(off, garbage, e.weight.numpy()).astype("float32"))
        callback = sniptf.RigL(1, 10, drop_fraction=0.5)
        callback.zero_pruned_at_start = False  # keep the garbage in: the gradient must not see it
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
        masks.append([e.mask.numpy().copy() for e in transform.masked_entries(model)])
    for a, b in zip(*masks):
        np.testing.assert_array_equal(a, b)


def test_gradual_pruning_is_layerwise_by_default_as_tf_mot_and_global_when_named():
    x, y = _data(128)
    for scope in ("layerwise", "global"):
        model = _compiled(transform.wrap(_mlp()))
        kwargs = {} if scope == "layerwise" else {"scope": "global"}
        callback = sniptf.GradualPruning(0.75, 0, 8, frequency=2, **kwargs)
        assert callback.scope == scope
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
        per_layer = [1 - e.mask.numpy().mean() for e in transform.masked_entries(model)]
        if scope == "layerwise":
            assert per_layer == [pytest.approx(0.75, abs=1e-9)] * 2
        else:
            assert per_layer[0] != pytest.approx(per_layer[1])
            total = sum(e.mask.numpy().size for e in transform.masked_entries(model))
            kept = sum(int(e.mask.numpy().sum()) for e in transform.masked_entries(model))
            assert total - kept == round(0.75 * total)


def test_each_fit_starts_from_pruned_raw_weights_and_slots_at_zero():
    # a model whose pruned raw weights were set by hand: the method's fit first restores the invariant
    x, y = _data(32)
    model = _compiled(sniptf.prune(_mlp(), (x, y), kappa=0.3, criterion="random"))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # slots built
    for e in transform.masked_entries(model):
        off = ~e.mask.numpy().astype(bool)
        e.weight.assign(np.where(off, 5.0, e.weight.numpy()).astype("float32"))
        for slot in _keras_compat.optimizer_slots(model.optimizer, e.weight):
            slot.assign(np.where(off, 1.0, slot.numpy()).astype("float32"))
    callback = sniptf.SET(100, 1000)  # no update in this fit: only the start's invariant
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert callback.updates == []
    _pruned_are_zero(model)


def test_mask_writes_follow_a_recompiled_optimizer():
    # the traced writer of a mask change holds the optimizer's slots: a new optimizer gets its own
    x, y = _data(64)
    model = _compiled(transform.wrap(_mlp()))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[sniptf.GradualPruning(0.5, 0, 4, frequency=2)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[sniptf.GradualPruning(0.8, 0, 6, initial_sparsity=0.5, frequency=2)])
    _pruned_are_zero(model)  # the new optimizer's momentum of every weight pruned after the recompile is 0
    assert sniptf.sparsity(model).sparsity > 0.79
