"""Effective sparsity: only the kept weights on some input-to-output path count, and the
dead units (constant, or feeding nothing) are reported."""

import keras
import numpy as np
import pytest

import sniptf

L = keras.layers


def _set_masks(model, masks):
    for entry in sniptf.transform.masked_entries(model):
        entry.mask.assign(masks[entry.key])


def test_known_dead_units_in_a_small_mlp():
    inputs = keras.Input((4,))
    out = L.Dense(2, name="out")(L.ReLU()(L.Dense(3, name="h")(inputs)))
    wrapped = sniptf.wrap(keras.Model(inputs, out))
    # input 3 has no kept weight; unit 1 of h has no kept input (its bias makes it a
    # constant); unit 2 of h has no kept output
    _set_masks(wrapped, {"h/kernel": np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]], bool),
                         "out/kernel": np.array([[1, 1], [1, 0], [0, 0]], bool)})
    report = sniptf.effective_sparsity(wrapped)
    assert report.nominal.kept == 7
    assert {c.name: c.kept for c in report.weights} == {"h/kernel": 2, "out/kernel": 2}
    assert report.kept == 4 and report.total.total == 18
    h, o = report.dead_units
    assert (h.name, h.constant, h.unused, h.dead, h.total) == ("h", 1, 1, 2, 3)
    assert (o.constant, o.unused, o.dead) == (0, 0, 0)
    assert not report.whole


def _paths_oracle(kernels):
    """Effective weights of a Dense chain by boolean matrix products."""
    alive = [np.ones(kernels[0].shape[0], bool)]
    for k in kernels:
        alive.append((alive[-1][:, None] & k).any(axis=0))
    used = [np.ones(kernels[-1].shape[1], bool)]
    for k in reversed(kernels):
        used.insert(0, (k & used[0][None, :]).any(axis=1))
    return [int((k & alive[i][:, None] & used[i + 1][None, :]).sum()) for i, k in enumerate(kernels)]


@pytest.mark.parametrize("criterion", ["random", "snip"])
def test_lenet_300_100_at_99_percent_matches_path_counting(criterion):
    x, y = sniptf.data.load_numpy("mnist10k", "train")
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    pruned = sniptf.prune(model, (x[:100], y[:100]), kappa=0.01, criterion=criterion)
    report = sniptf.effective_sparsity(pruned)
    kernels = [e.mask.numpy().astype(bool) for e in sniptf.transform.masked_entries(pruned)]
    assert [c.kept for c in report.weights] == _paths_oracle(kernels)
    assert report.kept <= report.nominal.kept == 2662
    if criterion == "random":  # random pruning disconnects far more (measured: 202 of 2,662)
        assert report.kept < 0.2 * report.nominal.kept
        assert report.dead_units[-1].dead > 0  # some outputs depend on no input


def test_conv_residual_and_pooling_paths():
    inputs = keras.Input((6, 6, 1))
    h = L.Conv2D(2, 3, padding="same", name="c1")(inputs)
    a = L.Conv2D(2, 3, padding="same", name="c2")(L.ReLU()(h))
    s = L.Add()([h, a])
    out = L.Dense(2, name="head")(L.Flatten()(L.MaxPooling2D()(s)))
    wrapped = sniptf.wrap(keras.Model(inputs, out))
    c1 = np.zeros((3, 3, 1, 2), bool)
    c1[1, 1, 0, 0] = True           # channel 1 of c1 has no input: constant
    c2 = np.zeros((3, 3, 2, 2), bool)
    c2[1, 1, 1, 1] = True           # reads only the constant channel: its output 1 is constant
    c2[0, 0, 0, 0] = True           # channel 0 of c2 reads the live channel 0
    head = np.zeros((18, 2), bool)
    head[0::2, 0] = True            # the head reads channel 0 of the pooled sum only
    _set_masks(wrapped, {"c1/kernel": c1, "c2/kernel": c2, "head/kernel": head})
    report = sniptf.effective_sparsity(wrapped)
    counts = {c.name: c.kept for c in report.weights}
    assert counts["c1/kernel"] == 1 and counts["c2/kernel"] == 1  # the constant path does not count
    assert counts["head/kernel"] == 9
    dead = {d.name: d for d in report.dead_units}
    assert dead["c1"].constant == 1 and dead["c2"].constant == 1
    assert dead["head"].dead == 1  # output 1 reads nothing


def test_layers_without_a_map_are_taken_whole_and_named():
    inputs = keras.Input((5, 3))
    h = L.LSTM(4, name="rnn")(inputs)
    wrapped = sniptf.wrap(keras.Model(inputs, L.Dense(2, name="head")(h)))
    report = sniptf.effective_sparsity(wrapped)
    assert [name for name, _ in report.whole] == ["rnn"]
    assert report.kept == report.nominal.kept  # taken whole: nothing removed
    with pytest.raises(ValueError, match="subclassed"):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.d = L.Dense(2)

            def call(self, x):
                return self.d(x)
        net = Net()
        net(np.ones((1, 3)))
        sniptf.effective_sparsity(net)


def test_a_shared_layer_is_taken_whole_and_what_feeds_it_counts():
    x = keras.Input((4,))
    h = L.Dense(4, name="h")(x)
    shared = L.Dense(4, name="shared")
    wrapped = sniptf.wrap(keras.Model(x, L.Dense(2, name="out")(shared(shared(h)))))
    report = sniptf.effective_sparsity(wrapped)
    assert ("shared", "called more than once (shared)") in report.whole
    # nothing is pruned: every weight is effective, h's too (it feeds the shared layer)
    assert report.kept == report.nominal.kept
    assert {d.name: d.dead for d in report.dead_units} == {"h": 0, "out": 0}


def test_a_causal_conv_is_taken_whole_and_compaction_stays_exact():
    x = keras.Input((10, 3))
    h = L.Conv1D(4, 3, padding="causal", name="causal")(x)
    wrapped = sniptf.wrap(keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h))))
    report = sniptf.effective_sparsity(wrapped)
    assert ("causal", "no connectivity map for Conv1D") in report.whole
    small = sniptf.compact(wrapped)
    data = np.random.default_rng(0).normal(size=(3, 10, 3)).astype("float32")
    np.testing.assert_allclose(small(data).numpy(), sniptf.strip(wrapped)(data).numpy(), atol=1e-6)
