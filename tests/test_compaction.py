"""compact: the dead units removed, the outputs equal strip(model)'s, the shapes those of
the live units (sniptf.effective_sparsity), and the result an ordinary Keras model."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf

L = keras.layers


def _set_masks(model, masks):
    for entry in sniptf.transform.masked_entries(model):
        entry.mask.assign(masks[entry.key])


def test_known_dead_units_leave_exactly_the_live_ones():
    inputs = keras.Input((4,))
    out = L.Dense(2, name="out")(L.ReLU()(L.Dense(3, name="h")(inputs)))
    model = keras.Model(inputs, out)
    model.get_layer("h").bias.assign([0.5, 2.0, -1.0])
    wrapped = sniptf.wrap(model)
    # input 3 has no kept weight; h unit 1 has no kept input (a constant relu(2.0));
    # h unit 2 has no kept output, so input 2 (read by unit 2 alone) is read by nothing
    _set_masks(wrapped, {"h/kernel": np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]], bool),
                         "out/kernel": np.array([[1, 1], [1, 0], [0, 0]], bool)})
    small, report = sniptf.compact(wrapped, return_report=True)
    assert small.get_layer("h").kernel.shape == (2, 1)  # inputs 0 and 1, unit 0
    assert small.get_layer("out").kernel.shape == (1, 2)
    assert report.units == (("h", 3, 1), ("out", 2, 2))
    assert report.parameters_after == 2 + 1 + 2 + 2 < report.parameters_before == 15 + 8
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(small(x), sniptf.strip(wrapped)(x), atol=1e-6)
    # the constant unit's value (relu(2.0)) times its kept outgoing weight went into out's bias
    w_out = sniptf.strip(wrapped).get_layer("out")
    np.testing.assert_allclose(small.get_layer("out").bias.numpy(),
                               w_out.bias.numpy() + 2.0 * w_out.kernel.numpy()[1], atol=1e-6)


def _mlp():
    x = keras.Input((12,))
    h = L.Dense(16, activation="relu", name="d1")(x)
    h = L.Dense(8, activation="tanh", name="d2")(h)
    return keras.Model(x, L.Dense(4, name="d3")(h))


def _conv_valid():
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, activation="relu", name="c1")(x)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(6, 3, name="c2")(h)
    return keras.Model(x, L.Dense(5, name="fc")(L.Flatten()(h)))


def _conv_same():
    x = keras.Input((9, 9, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    h = L.Conv2D(6, 3, padding="same", strides=2, activation="relu", name="c2")(h)
    h = L.AveragePooling2D(2, padding="same")(h)
    return keras.Model(x, L.Dense(5, name="fc")(L.GlobalAveragePooling2D()(h)))


def _conv1d():
    x = keras.Input((12, 4))
    h = L.Conv1D(8, 3, activation="relu", name="c1")(x)
    h = L.Conv1D(6, 1, name="c2")(h)
    return keras.Model(x, L.Dense(3, name="fc")(L.Flatten()(h)))


def _depthwise():
    x = keras.Input((8, 8, 4))
    h = L.Conv2D(6, 1, activation="relu", name="c1")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)
    h = L.Conv2D(5, 1, activation="relu", name="c2")(h)
    return keras.Model(x, L.Dense(3, name="fc")(L.GlobalMaxPooling2D()(h)))


def _batchnorm():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, name="c1")(x)
    h = L.ReLU()(L.BatchNormalization(name="bn")(h))
    h = L.Dense(7, name="d1")(L.Flatten()(h))
    h = L.BatchNormalization(name="bn2")(h)
    return keras.Model(x, L.Dense(4, name="fc")(L.Activation("relu")(h)))


def _embedding():
    x = keras.Input((6,), dtype="int32")
    h = L.Embedding(20, 8, name="emb")(x)
    h = L.Conv1D(5, 2, activation="relu", name="c1")(h)
    return keras.Model(x, L.Dense(3, name="fc")(L.GlobalAveragePooling1D()(h)))


def _residual():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 1, name="a")(x)
    b = L.Conv2D(6, 3, padding="same", name="b")(L.ReLU()(a))
    h = L.ReLU()(L.Add()([a, b]))
    return keras.Model(x, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h)))


def _concat():
    x = keras.Input((10,))
    a = L.Dense(6, activation="relu", name="a")(x)
    b = L.Dense(5, activation="relu", name="b")(x)
    h = L.Concatenate()([a, b])
    return keras.Model(x, L.Dense(3, name="fc")(L.Dropout(0.5)(h)))


def _sequence_dense():
    x = keras.Input((5, 6))
    h = L.Dense(8, activation="relu", name="d1")(x)
    h = L.Dense(4, name="d2")(h)
    return keras.Model(x, L.Dense(3, name="fc")(L.Flatten()(h)))


def _recurrent():
    x = keras.Input((7, 5))
    h = L.Dense(8, name="d1")(x)
    h = L.LSTM(6, name="lstm")(h)
    return keras.Model(x, L.Dense(3, name="fc")(h))


def _squeeze_excite():
    x = keras.Input((9, 9, 3))
    h = L.Conv2D(8, 3, activation="relu", name="c1")(L.ZeroPadding2D(1)(x))
    s = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(h))
    s = L.Conv2D(8, 1, activation="sigmoid", name="excite")(L.Conv2D(4, 1, activation="relu", name="squeeze")(s))
    h = L.Cropping2D(1)(L.UpSampling2D()(L.Multiply()([h, s])))
    return keras.Model(x, L.Dense(3, name="fc")(L.GlobalMaxPooling2D()(h)))


CASES = {"mlp": _mlp, "conv_valid": _conv_valid, "conv_same": _conv_same, "conv1d": _conv1d,
         "depthwise": _depthwise, "batchnorm": _batchnorm, "embedding": _embedding,
         "residual": _residual, "concat": _concat, "sequence_dense": _sequence_dense,
         "recurrent": _recurrent, "squeeze_excite": _squeeze_excite}


def _randomized(build, keep, seed):
    """The model with random biases and BN statistics (constants matter), wrapped and
    with random masks keeping a `keep` fraction."""
    keras.utils.set_random_seed(seed)
    model = build()
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            if any(part in w.path for part in ("bias", "beta", "moving_mean", "gamma")):
                w.assign(rng.normal(size=w.shape).astype("float32"))
            if "moving_variance" in w.path:
                w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
    wrapped = sniptf.wrap(model)
    for entry in sniptf.transform.masked_entries(wrapped):
        entry.mask.assign(rng.random(entry.mask.shape) < keep)
    return wrapped


def _inputs(model, n=16, seed=1):
    rng = np.random.default_rng(seed)
    shape, dtype = (n,) + tuple(model.inputs[0].shape[1:]), model.inputs[0].dtype
    if "int" in dtype:
        return rng.integers(0, 20, size=shape).astype(dtype)
    return rng.normal(size=shape).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_compaction_is_exact_on_each_layer_type(name):
    removed = 0
    for seed, keep in ((0, 0.25), (1, 0.12)):
        wrapped = _randomized(CASES[name], keep, seed)
        small, report = sniptf.compact(wrapped, return_report=True)
        x = _inputs(wrapped)
        expected = sniptf.strip(wrapped)(x).numpy()
        np.testing.assert_allclose(small(x).numpy(), expected, atol=1e-5, rtol=1e-5)
        assert small.output.shape[1:] == wrapped.output.shape[1:]
        removed += report.parameters_before - report.parameters_after
        if name == "recurrent":
            assert [w for w, _ in report.whole] == ["lstm"]
    assert removed > 0, "nothing was removed: the case tests nothing"


def test_units_kept_are_the_live_ones_of_the_effective_sparsity_report():
    for seed in range(3):
        wrapped = _randomized(_mlp, 0.15, seed)
        dead = {d.name: d for d in sniptf.effective_sparsity(wrapped).dead_units}
        small = sniptf.compact(wrapped)
        for name in ("d1", "d2"):
            assert small.get_layer(name).units == dead[name].total - dead[name].dead
        assert small.get_layer("d3").units == 4  # every output unit is kept


def _mnist_batch():
    x, y = sniptf.data.load_numpy("mnist10k", "train")
    return x[:100], y[:100]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5_caffe", "vgg_like"])
def test_zoo_models_at_99_percent(name):
    x, y = _mnist_batch()
    keras.utils.set_random_seed(0)
    model = sniptf.models.get(name, (28, 28, 1), 10)
    pruned = sniptf.prune(model, (x, y), kappa=0.01)
    small, report = sniptf.compact(pruned, return_report=True)
    np.testing.assert_allclose(small(x[:32]).numpy(), sniptf.strip(pruned)(x[:32]).numpy(),
                               atol=1e-5, rtol=1e-4)
    assert report.parameters_after < 0.5 * report.parameters_before


@pytest.mark.slow
def test_a_keras_application_compacts_exactly():
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 8)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10,
                                           classifier_activation=None)
    pruned = sniptf.prune(model, (x, y), kappa=0.1)
    # batch-norm statistics of this batch: at init (mean 0, variance 1) the signal vanishes
    # (output std 3e-12 dense) and any two models would agree
    for bn in [l for l in pruned.layers if isinstance(l, L.BatchNormalization)]:
        a = keras.Model(pruned.inputs, bn.input)(x).numpy()
        bn.moving_mean.assign(a.mean(axis=(0, 1, 2)))
        bn.moving_variance.assign(a.var(axis=(0, 1, 2)) + 1e-3)
    small, report = sniptf.compact(pruned, return_report=True)
    expected = sniptf.strip(pruned)(x).numpy()
    assert expected.std(axis=0).max() > 1e-2  # the outputs depend on the input
    np.testing.assert_allclose(small(x).numpy(), expected, atol=1e-4, rtol=1e-4)
    assert report.whole == () and report.parameters_after < report.parameters_before


@pytest.mark.slow
def test_compacted_model_trains_saves_and_exports_without_sniptf(tmp_path):
    x, y = _mnist_batch()
    keras.utils.set_random_seed(0)
    pruned = sniptf.prune(sniptf.models.get("lenet_300_100", (28, 28, 1), 10), (x, y), kappa=0.01)
    small = sniptf.compact(pruned)
    assert not any(isinstance(l, sniptf.MaskedLayer) for l in small.layers)
    small.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = small.fit(x, y, epochs=3, batch_size=50, verbose=0).history["loss"]
    assert loss[-1] < loss[0]
    small.save(tmp_path / "small.keras")
    sniptf.export(pruned, str(tmp_path / "sm"), compact=True)
    exported = sniptf.export(pruned, str(tmp_path / "m.tflite"), format="tflite", compact=True)
    assert exported.count_params() == sniptf.compact(pruned).count_params()
    sniptf.export(pruned, str(tmp_path / "sparse"), format="sparse_saved_model", compact=True)
    expected = sniptf.strip(pruned)(x[:4]).numpy()
    np.save(tmp_path / "x.npy", x[:4])
    np.save(tmp_path / "expected.npy", expected)
    code = f"""
import sys, numpy as np, keras, tensorflow as tf
x, expected = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'expected.npy')!r})
for path in ("sm", "sparse"):
    loaded = tf.saved_model.load({str(tmp_path)!r} + "/" + path)
    out = loaded.serve(x)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4)
interpreter = tf.lite.Interpreter(model_path={str(tmp_path / 'm.tflite')!r})
interpreter.allocate_tensors()
small = keras.models.load_model({str(tmp_path / 'small.keras')!r})
assert small.get_layer("fc1").units < 300
assert "sniptf" not in sys.modules
print("loaded without sniptf")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert "loaded without sniptf" in done.stdout, done.stderr[-3000:]


def test_a_shared_layer_is_left_whole_and_compaction_stays_exact():
    keras.utils.set_random_seed(0)
    x = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="h")(x)
    shared = L.Dense(8, activation="relu", name="shared")
    out = L.Dense(3, name="out")(L.Concatenate()([shared(h), shared(L.ReLU()(h))]))
    wrapped = sniptf.wrap(keras.Model(x, out))
    rng = np.random.default_rng(0)
    for entry in sniptf.transform.masked_entries(wrapped):
        entry.mask.assign(rng.random(entry.mask.shape) < 0.3)
    wrapped.get_layer("h").layer.bias.assign(rng.normal(size=8).astype("float32"))
    small, report = sniptf.compact(wrapped, return_report=True)
    data = rng.normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(small(data).numpy(), sniptf.strip(wrapped)(data).numpy(), atol=1e-5)
    assert [name for name, _ in report.whole] == ["shared"] and "shared" in report.whole[0][1]
    assert small.get_layer("shared").kernel.shape == (8, 8)  # whole: both calls read all of h


def test_compact_refuses_what_it_cannot_rebuild_and_changes_nothing():
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(L.Dense(4)(inputs))))
    wrapped = sniptf.wrap(model)
    before = [w.numpy().copy() for w in wrapped.weights]
    with pytest.raises(ValueError, match=r"Received: input shape \(None, None, 3\)"):
        sniptf.compact(wrapped)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, wrapped.weights))
    with pytest.raises(TypeError, match="Received: compact='yes'"):
        sniptf.export(wrapped, "/tmp/never-written", compact="yes")
    assert not os.path.exists("/tmp/never-written")
    with pytest.raises(TypeError, match="Received: model="):
        sniptf.compact("model")
    assert tf.__version__  # TensorFlow is the backend the compacted model runs on
