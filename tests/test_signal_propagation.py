"""Jacobian singular values, orthogonal inits and approximate isometry."""

import keras
import numpy as np
import pytest

import sniptf
from sniptf import initializers
from sniptf import isometry

L = keras.layers


def _linear_net(kernels, activation=None):
    model = keras.Sequential([keras.Input((kernels[0].shape[0],))] + [
        L.Dense(k.shape[1], use_bias=False, activation=activation, name=f"d{i}")
        for i, k in enumerate(kernels)])
    for layer, k in zip(model.layers, kernels):
        layer.kernel.assign(k)
    return model


def test_hand_checked_2x2_objective():
    model = sniptf.wrap(_linear_net([np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)]))
    entries = sniptf.transform.masked_entries(model)
    # WᵀW − I = diag(3, 0)
    assert float(isometry.objective_terms(entries)[0]) == pytest.approx(3.0)
    entries[0].mask.assign([[1.0, 0.0], [0.0, 0.0]])
    # (C⊙W)ᵀ(C⊙W) − I = diag(3, −1)
    assert float(isometry.objective_terms(entries)[0]) == pytest.approx(np.sqrt(10.0))


def test_hand_checked_2x2_singular_values():
    w = np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)
    model = _linear_net([w], activation="tanh")
    report = sniptf.jacobian_singular_values(model, np.zeros((1, 2), np.float32))
    # tanh'(0) = 1, so J = Wᵀ: singular values 2 and 0.5
    np.testing.assert_allclose(sorted(report.layers[0].values.ravel()), [0.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(sorted(report.end_to_end.values.ravel()), [0.5, 2.0], rtol=1e-6)
    assert report.layers[0].method == "jacobian"
    assert report.end_to_end.max == pytest.approx(2.0) and report.end_to_end.min == pytest.approx(0.5)


def test_orthogonal_linear_net_has_unit_singular_values():
    init = keras.initializers.Orthogonal(seed=1)
    kernels = [np.asarray(init((16, 16))) for _ in range(4)]
    model = sniptf.wrap(_linear_net(kernels))
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    report = sniptf.jacobian_singular_values(model, x)
    assert len(report.layers) == 4
    for s in report.layers + (report.end_to_end,):
        np.testing.assert_allclose(s.values, 1.0, atol=1e-5)
    # and the isometry objective is zero there, with full masks
    result = sniptf.approximate_isometry(model, steps=0)
    assert result.history[-1] == pytest.approx(0.0, abs=1e-4)


def test_isometry_decreases_and_keeps_pruned_entries_zero():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), L.Dense(30, activation="tanh", name="a"),
                              L.Dense(30, activation="tanh", name="b"), L.Dense(5, name="c")])
    x = np.random.default_rng(1).normal(size=(32, 20)).astype(np.float32)
    y = np.arange(32) % 5
    pruned = sniptf.prune(model, (x, y), kappa=0.3)
    before = sniptf.jacobian_singular_values(pruned, x[:4])
    result = sniptf.approximate_isometry(pruned, steps=300, learning_rate=0.1)
    assert len(result.history) == 301
    assert result.history[-1] < 0.5 * result.history[0]
    for e in sniptf.transform.masked_entries(pruned):
        assert np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0.0)
    assert sniptf.sparsity(pruned).kept == sniptf.selection.kept_count(0.3, 20 * 30 + 30 * 30 + 30 * 5)
    after = sniptf.jacobian_singular_values(pruned, x[:4])
    # AI moves the layerwise singular values towards 1
    gap = lambda r: np.mean([abs(s.mean - 1.0) for s in r.layers])
    assert gap(after) < gap(before)
    # rectangular kernels use the smaller Gram matrix and say so
    assert result.gram == {"a/kernel": "WWᵀ (20×20)", "b/kernel": "WᵀW (30×30)", "c/kernel": "WᵀW (5×5)"}


def test_prune_with_isometry_and_conv_kernels():
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    x, y = sniptf.data.load_numpy("mnist10k", "validation")
    plain = sniptf.prune(model, (x[:50], y[:50]), kappa=0.05)
    with_ai = sniptf.prune(model, (x[:50], y[:50]), kappa=0.05, isometry={"steps": 50})
    entries = sniptf.transform.masked_entries(with_ai)
    for a, b in zip(sniptf.transform.masked_entries(plain), entries):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    terms = lambda m: sum(float(t) for t in isometry.objective_terms(sniptf.transform.masked_entries(m)))
    assert terms(with_ai) < terms(plain)
    with pytest.raises(TypeError, match="Received: isometry='yes'"):
        sniptf.prune(model, (x[:50], y[:50]), isometry="yes")


def test_conv_layers_too_large_report_kernel_singular_values():
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    x, _ = sniptf.data.load_numpy("mnist10k", "validation")
    # conv1: 784 x 11,520 and conv2: 2,880 x 3,200 Jacobian entries; fc1: 800 x 500
    report = sniptf.jacobian_singular_values(model, x[:2], max_entries=5_000_000)
    assert [(s.name, s.method) for s in report.layers] == [
        ("conv1", "kernel"), ("conv2", "kernel"), ("fc1", "jacobian"), ("fc2", "jacobian")]
    assert report.layers[1].values.shape == (1, 50)  # the [5*5*20, 50] kernel's
    assert report.layers[2].values.shape == (2, 500)  # min(in, out) per example
    assert report.end_to_end.values.shape == (2, 10)
    assert not sniptf.jacobian_singular_values(model, x[:2], layerwise=False).layers


class _Subclassed(keras.Model):  # no layer graph: its layers report their kernels
    def __init__(self):
        super().__init__()
        self.hidden, self.out = L.Dense(6, activation="tanh"), L.Dense(3)

    def call(self, x):
        return self.out(self.hidden(x))


class _FunctionalWithConfig(keras.Model):  # a KerasHub task's kind: Functional, own get_config
    def __init__(self, units=6, **kwargs):
        inputs = {"ids": keras.Input((5,), dtype="int32", name="ids")}
        h = L.GlobalAveragePooling1D()(L.Embedding(20, 4, name="embed")(inputs["ids"]))
        super().__init__(inputs, L.Dense(3, name="head")(L.Dense(units, activation="relu", name="hid")(h)),
                         **kwargs)
        self.units = units

    def get_config(self):
        return {"units": self.units, "name": self.name}


def test_models_without_a_graph_of_their_own_and_token_inputs():
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    sub = _Subclassed()
    report = sniptf.jacobian_singular_values(sub, x)
    assert [s.method for s in report.layers] == ["kernel", "kernel"] and report.end_to_end.values.shape == (3, 3)
    np.testing.assert_allclose(report.layers[0].values[0], np.linalg.svd(sub.hidden.kernel.numpy(),
                                                                         compute_uv=False), rtol=1e-5)
    # token ids: no end-to-end Jacobian (refused, naming the way), layerwise on the float inputs
    model = _FunctionalWithConfig()
    ids = {"ids": np.random.default_rng(1).integers(0, 20, (3, 5)).astype("int32")}
    with pytest.raises(ValueError, match="end_to_end=False.*Received: x of a dict of 1 inputs"):
        sniptf.jacobian_singular_values(model, ids)
    with pytest.raises(ValueError, match="Received: x of dtype int32"):
        sniptf.jacobian_singular_values(model, ids["ids"])
    report = sniptf.jacobian_singular_values(model, ids, end_to_end=False)
    assert report.end_to_end is None and report.summary()["end_to_end"] is None
    assert [(s.name, s.method) for s in report.layers] == [("embed", "kernel"), ("hid", "jacobian"),
                                                            ("head", "jacobian")]
    assert report.layers[1].values.shape == (3, 4)  # a 4 -> 6 Dense: min(4, 6) per example


def test_delta_orthogonal():
    kernel = np.array(initializers.DeltaOrthogonal(seed=0)((3, 3, 4, 6)))
    centre = kernel[1, 1]
    np.testing.assert_allclose(centre @ centre.T, np.eye(4), atol=1e-6)
    kernel[1, 1] = 0
    assert not kernel.any()
    dense = np.asarray(initializers.get("delta_orthogonal")((5, 5)))
    np.testing.assert_allclose(dense.T @ dense, np.eye(5), atol=1e-6)
    with pytest.raises(ValueError, match=r"cin <= cout.*cin=6, cout=4"):
        initializers.DeltaOrthogonal()((3, 3, 6, 4))
    with pytest.raises(ValueError, match="odd kernel sizes"):
        initializers.DeltaOrthogonal()((2, 2, 3, 4))
    # usable by name in the zoo: an orthogonal conv net is an isometry per layer (linear part)
    model = sniptf.models.get("simple_cnn", (28, 28, 1), 10, kernel_initializer="delta_orthogonal")
    conv2 = model.get_layer("conv2").kernel.numpy()[2, 2]
    np.testing.assert_allclose(conv2 @ conv2.T, np.eye(32), atol=1e-5)


def test_isometry_errors():
    model = _linear_net([np.eye(2, dtype=np.float32)])
    with pytest.raises(ValueError, match="no masked kernel"):
        sniptf.approximate_isometry(model)
    wrapped = sniptf.wrap(model)
    with pytest.raises(ValueError, match="Received: steps=-1"):
        sniptf.approximate_isometry(wrapped, steps=-1)
    for bad in (0, "0.1", None, float("nan")):
        with pytest.raises(ValueError, match=f"Received: learning_rate={bad!r}"):
            sniptf.approximate_isometry(wrapped, learning_rate=bad)
    with pytest.raises(ValueError, match="Received: optimizer='lbfgs'"):
        sniptf.approximate_isometry(wrapped, optimizer="lbfgs")
