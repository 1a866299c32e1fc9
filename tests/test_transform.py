import warnings

import keras
import numpy as np
import pytest

import sniptf
from sniptf import MaskedLayer

L = keras.layers


def _functional():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Flatten()(x)
    shared = L.Dense(6, activation="tanh", name="shared")
    a = shared(x)
    b = shared(L.Dropout(0.1)(x))
    x = L.Concatenate()([a, b])
    return keras.Model(inputs, L.Dense(3, name="head")(x), name="func")


def _nested():
    inner = keras.Sequential([keras.Input((5,)), L.Dense(7, activation="relu", name="d1"),
                              L.Dense(4, name="d2")], name="inner")
    inputs = keras.Input((5,))
    return keras.Model(inputs, L.Dense(2, name="top")(inner(inputs)), name="outer")


def _sequential_rnn():
    return keras.Sequential([keras.Input((6, 3)), L.Bidirectional(L.GRU(4, return_sequences=True)),
                             L.LSTM(5), L.Dense(2)], name="seq")


MODELS = {"functional": (_functional, (8, 8, 1)), "nested": (_nested, (5,)),
          "sequential_rnn": (_sequential_rnn, (6, 3))}


def _snapshot(model):
    return [type(l).__name__ for l in model.layers], [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wrap_strip_round_trip(name):
    build, shape = MODELS[name]
    model = build()
    x = np.random.default_rng(0).random((4,) + shape, dtype=np.float32)
    before = _snapshot(model)
    wrapped = sniptf.wrap(model)
    assert any(isinstance(l, MaskedLayer) for _, l in sniptf.transform.walk_layers(wrapped))
    np.testing.assert_allclose(wrapped(x), model(x), rtol=1e-5, atol=1e-6)
    plain = sniptf.strip(wrapped)
    assert not any(isinstance(l, MaskedLayer) for _, l in sniptf.transform.walk_layers(plain))
    assert [l.name for l in plain.layers] == [l.name for l in model.layers]
    np.testing.assert_allclose(plain(x), model(x), rtol=1e-5, atol=1e-6)
    for a, b in zip(plain.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    after = _snapshot(model)
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)


def test_shared_layer_stays_shared():
    wrapped = sniptf.wrap(_functional())
    entries = sniptf.transform.masked_entries(wrapped)
    assert [e.key for e in entries] == ["conv/kernel", "shared/kernel", "head/kernel"]


def test_nested_models_are_transformed_with_prefixed_keys():
    pruned = sniptf.prune(_nested(), (np.ones((4, 5), "float32"), np.array([0, 1, 0, 1])), kappa=20)
    assert [c.name for c in sniptf.sparsity(pruned).weights] == ["inner/d1/kernel", "inner/d2/kernel", "top/kernel"]
    assert sniptf.sparsity(pruned).kept == 20


def test_prune_returns_exact_kappa_and_leaves_model_untouched():
    model = _functional()
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    before = _snapshot(model)
    pruned = sniptf.prune(model, (x, y), kappa=0.1)
    total = 3 * 3 * 4 + 144 * 6 + 12 * 3
    report = sniptf.sparsity(pruned)
    assert report.total.total == total
    assert report.kept == sniptf.selection.kept_count(0.1, total)
    assert sniptf.sparsity(sniptf.strip(pruned)).kept == report.kept  # kept weights are non-zero
    after = _snapshot(model)
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)
    # pruned weights are exactly zero in the stored kernels too
    for e in sniptf.transform.masked_entries(pruned):
        assert np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0)


def test_same_seed_same_mask_and_model_is_reprunable():
    model = _nested()
    x = np.random.default_rng(1).random((8, 5), dtype=np.float32)
    y = np.array([0, 1] * 4)
    a = sniptf.prune(model, (x, y), kappa=0.3, criterion="random", seed=4)
    b = sniptf.prune(model, (x, y), kappa=0.3, criterion="random", seed=4)
    for ea, eb in zip(sniptf.transform.masked_entries(a), sniptf.transform.masked_entries(b)):
        np.testing.assert_array_equal(ea.mask.numpy(), eb.mask.numpy())
    # pruning an already pruned model rescans from c = 1
    again = sniptf.prune(a, (x, y), kappa=0.1, criterion="magnitude")
    assert sniptf.sparsity(again).kept == sniptf.selection.kept_count(0.1, 5 * 7 + 7 * 4 + 4 * 2)


def test_parity_switches():
    model = _nested()
    x = np.random.default_rng(2).random((8, 5), dtype=np.float32)
    y = np.array([0, 1] * 4)
    with_biases = sniptf.prune(model, (x, y), kappa=0.5, include_biases=True)
    keys = [c.name for c in sniptf.sparsity(with_biases).weights]
    assert "inner/d1/bias" in keys
    # zero-initialized biases score zero and are pruned before any kernel entry
    bias_kept = sum(c.kept for c in sniptf.sparsity(with_biases).weights if c.name.endswith("bias"))
    assert bias_kept == 0
    redrawn = sniptf.prune(model, (x, y), kappa=0.5, reinitialize=True, seed=3)
    same_seed = sniptf.prune(model, (x, y), kappa=0.5, reinitialize=True, seed=3)
    kept = redrawn.get_layer("inner").get_layer("d1")
    original = model.get_layer("inner").get_layer("d1").kernel.numpy()
    mask = kept.masks["kernel"].numpy() == 1
    assert not np.allclose(kept.layer.kernel.numpy()[mask], original[mask])
    np.testing.assert_array_equal(
        kept.layer.kernel.numpy(), same_seed.get_layer("inner").get_layer("d1").layer.kernel.numpy())


def test_layer_pruned_to_zero_warns_with_its_name():
    model = _nested()
    model.get_layer("top").kernel.assign(np.full((4, 2), 1e-6, "float32"))
    x = np.ones((4, 5), "float32")
    with pytest.warns(UserWarning, match="layer 'top' keeps none of its weights"):
        sniptf.prune(model, (x, np.array([0, 1, 0, 1])), kappa=10, criterion="magnitude")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sniptf.prune(model, (x, np.array([0, 1, 0, 1])), kappa=10, criterion="magnitude", scope="layerwise")


def test_prune_errors_leave_model_untouched():
    model = _nested()
    before = _snapshot(model)
    x = np.ones((4, 5), "float32")
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"\[1, 71\].*Received: kappa=72"):
        sniptf.prune(model, (x, y), kappa=72)
    with pytest.raises(TypeError, match="Received: kappa=True"):
        sniptf.prune(model, (x, y), kappa=True)
    with pytest.raises(ValueError, match="Received: scope='local'"):
        sniptf.prune(model, (x, y), scope="local")
    with pytest.raises(ValueError, match="Received: criterion='snap'"):
        sniptf.prune(model, (x, y), criterion="snap")
    with pytest.raises(ValueError, match="does not fit the model"):
        sniptf.prune(model, (np.ones((4, 3), "float32"), y))
    nan = x.copy()
    nan[0, 0] = np.inf
    with pytest.raises(ValueError, match="not finite on batch 0"):
        sniptf.prune(model, (nan, y))
    after = _snapshot(model)
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)
    no_prunable = keras.Sequential([keras.Input((3,)), L.Activation("relu")])
    with pytest.raises(ValueError, match="has no prunable layer. Supported layer types:.*Dense"):
        sniptf.prune(no_prunable, (np.ones((2, 3)), np.array([0, 1])))


class _Net(keras.Model):  # Keras names it "__net": not a valid TensorFlow root scope
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_a_failed_wrap_leaves_no_keras_name_scope_behind():
    """Keras's name_scope pushes itself before tf.name_scope refuses "__net"; the
    stack kept it, and every variable made afterwards in the process had
    "__net/__net/" in its path (it broke a later test's layer names)."""
    net = _Net()
    net(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="Give it another name.*Received: name='__net'"):
        sniptf.wrap(net)
    probe = L.Dense(2, name="probe")
    probe.build((None, 3))
    assert probe.kernel.path == "probe/kernel"


def test_unbuilt_sequential_is_built_from_data():
    model = keras.Sequential([L.Dense(4), L.Dense(2)])
    pruned = sniptf.prune(model, (np.ones((4, 3), "float32"), np.array([0, 1, 0, 1])), kappa=0.5)
    assert sniptf.sparsity(pruned).total.total == 3 * 4 + 4 * 2
    assert not model.built


def test_subclassed_model_without_kwargs_wraps_and_one_keras_cannot_record_is_refused():
    class Net(keras.Model):  # no **kwargs: Keras's own from_config cannot rebuild it
        def __init__(self):
            super().__init__()
            self.fc = L.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.ones((1, 3)))
    wrapped = sniptf.wrap(net)  # rebuilt from the constructor's recorded arguments
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(wrapped(x).numpy(), net(x).numpy(), rtol=1e-6)
    assert sniptf.sparsity(wrapped).total.total == 6

    class Holder(keras.Model):  # takes an object: Keras records no config at all
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, x):
            return self.inner(x)

    held = Holder(L.Dense(2))
    held(np.ones((1, 3)))
    before = [w.copy() for w in held.get_weights()]
    with pytest.raises(ValueError, match=r"(?s)\(Holder\) cannot be copied.*sniptf.MaskedLayer"):
        sniptf.wrap(held)
    with pytest.raises(ValueError, match=r"(?s)\(Holder\) cannot be copied.*sniptf.MaskedLayer"):
        sniptf.prune(held, (np.ones((2, 3)), np.array([0, 1])))
    for a, b in zip(before, held.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="Expected a keras.Model"):
        sniptf.wrap(L.Dense(2))


def test_sparsity_report_of_plain_and_wrapped_models():
    model = keras.Sequential([keras.Input((2,)), L.Dense(2, use_bias=False, name="d")])
    model.get_layer("d").kernel.assign([[1.0, 0.0], [0.0, 0.0]])
    report = sniptf.sparsity(model)
    assert (report.kept, report.total.total, report.sparsity) == (1, 4, 0.75)
    assert report.to_dict()["layers"][0] == {"name": "d", "kept": 1, "total": 4,
                                             "kept_fraction": 0.25, "sparsity": 0.75}
    assert "d " in str(report) and "75.00%" in str(report)
    wrapped = sniptf.wrap(model)
    assert sniptf.sparsity(wrapped).kept == 4  # masks are all ones
    with pytest.raises(ValueError, match="no prunable layer"):
        sniptf.sparsity(keras.Sequential([keras.Input((2,)), L.ReLU()]))
