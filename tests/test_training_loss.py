"""SNIP scores the loss the model trains with: compiled multi-output losses, loss weights,
sample weights, and every element shape `model.fit` accepts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf

L = keras.layers
N = 16
RNG = np.random.default_rng(0)
X = {"tokens": RNG.integers(0, 50, (N, 6)), "features": RNG.normal(size=(N, 4)).astype(np.float32)}
Y = {"cls": RNG.integers(0, 3, (N,)), "reg": RNG.normal(size=(N, 1)).astype(np.float32)}
LOSSES = {"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"}


def _model(loss_weights=None, compiled=True):
    keras.utils.set_random_seed(7)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    features = keras.Input((4,), name="features")
    # a convolution over the tokens, not an RNN: each trace here is cheap (RNNs: tests/test_scoring.py)
    h = L.GlobalMaxPooling1D()(L.Conv1D(5, 3, name="conv")(L.Embedding(50, 8, name="embed")(tokens)))
    h = L.Concatenate()([h, L.Dense(6, activation="relu", name="feat")(features)])
    outputs = {"cls": L.Dense(3, name="cls")(h), "reg": L.Dense(1, name="reg")(h)}
    model = keras.Model({"tokens": tokens, "features": features}, outputs)
    if compiled:
        model.compile(keras.optimizers.Adam(1e-3), LOSSES, loss_weights=loss_weights)
    return model


def _manual_snip(model, loss_fn, x=None):
    """|∂L/∂w ⊙ w| on the unwrapped model at inputs `x` (default `X`), keyed like sniptf.saliency."""
    kernels = {f"{layer.name}/{path}": var for layer in model.layers if sniptf.registry.is_prunable(layer)
               for path, var in sniptf.registry.prunable_weights(layer)}
    with tf.GradientTape() as tape:
        loss = loss_fn(model(X if x is None else x))
    grads = tape.gradient(loss, list(kernels.values()))
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for v, g in zip(kernels.values(), grads)]
    return {k: np.abs(g.numpy() * v.numpy()) for (k, v), g in zip(kernels.items(), grads)}


def _assert_scores(scores, expected):
    assert set(scores) == set(expected)
    for key in expected:
        np.testing.assert_allclose(scores[key], expected[key], rtol=2e-4, atol=1e-9, err_msg=key)


def _cce(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


@pytest.mark.slow
def test_compiled_dict_losses_and_loss_weights_are_what_snip_scores():
    for weights in (None, {"cls": 1.0, "reg": 0.25}):
        model = _model(weights)
        w = weights or {"cls": 1.0, "reg": 1.0}
        expected = _manual_snip(model, lambda p: w["cls"] * tf.reduce_mean(_cce(Y["cls"], p["cls"])) +
                                w["reg"] * tf.reduce_mean(tf.square(p["reg"] - Y["reg"])))
        ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(N)
        _assert_scores(sniptf.saliency(sniptf.wrap(model), ds), expected)


def test_sample_weights_weight_the_scoring_loss_as_fit_does():
    model = _model()
    sw = np.r_[np.ones(N // 2), np.zeros(N // 2)].astype(np.float32)
    weighted = sniptf.saliency(sniptf.wrap(model), (X, Y, sw))
    half = sniptf.saliency(sniptf.wrap(model), ({k: v[:N // 2] for k, v in X.items()},
                                               {k: v[:N // 2] for k, v in Y.items()}))
    # Keras: sum(w·l) / n — the first half's mean loss, times 1/2
    for key in half:
        np.testing.assert_allclose(weighted[key], 0.5 * half[key], rtol=2e-4, atol=1e-9, err_msg=key)
    ds = tf.data.Dataset.from_tensor_slices((X, Y, sw)).batch(N)
    _assert_scores(sniptf.saliency(sniptf.wrap(model), ds), weighted)


def test_a_compiled_multi_output_loss_is_traced_once():
    # its first call would build a Mean tracker per output: a first trace that makes
    # variables, which TensorFlow traces again
    for data, traced in (((X, Y), lambda run: run.step),
                         (tf.data.Dataset.from_tensor_slices((X, Y)).batch(8), lambda run: run.over_dataset)):
        wrapped = sniptf.wrap(_model())
        sniptf.saliency(wrapped, data)
        (run,) = sniptf.scoring._PASSES[wrapped].values()
        assert traced(run).experimental_get_tracing_count() == 1


def test_prune_compiled_multi_output_model_then_fit():
    model = _model({"cls": 1.0, "reg": 0.5})
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    pruned = sniptf.prune(model, ds, kappa=0.1)
    report = sniptf.sparsity(pruned)
    assert report.kept == round(0.1 * report.total.total)
    assert pruned.compiled and pruned.optimizer is not model.optimizer  # compiled like the input
    before = {e.key: e.weight.numpy() for e in sniptf.transform.masked_entries(pruned)}
    pruned.fit(ds, epochs=2, verbose=0)
    entries = sniptf.transform.masked_entries(pruned)
    for e in entries:
        assert np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0)
    assert sum(np.any(e.weight.numpy() != before[e.key]) for e in entries) >= len(entries) // 2


def test_one_output_unit_scores_with_its_compiled_or_given_loss():
    # a binary classifier: SNIP differentiates binary cross-entropy (compiled or passed)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), L.Dense(5, activation="tanh", name="h"),
                              L.Dense(1, activation="sigmoid", name="out")])
    x, y = X["features"], (Y["cls"] > 0).astype(np.float32)[:, None]
    bce = lambda p: tf.reduce_mean(keras.losses.binary_crossentropy(y, p))
    _assert_scores(sniptf.saliency(sniptf.wrap(model), (x, y), loss="binary_crossentropy"),
                   _manual_snip(model, bce, x))
    model.compile("sgd", "binary_crossentropy")
    _assert_scores(sniptf.saliency(sniptf.wrap(model), (x, y)), _manual_snip(model, bce, x))


def test_user_loss_receives_the_structures():
    model = _model(compiled=False)
    seen = {}

    def loss(y_true, y_pred):
        seen["types"] = (type(y_true).__name__, type(y_pred).__name__, sorted(y_pred))
        return _cce(y_true["cls"], y_pred["cls"])  # per example

    scores = sniptf.saliency(sniptf.wrap(model), (X, Y), loss=loss)
    assert seen["types"] == ("dict", "dict", ["cls", "reg"])
    _assert_scores(scores, _manual_snip(model, lambda p: tf.reduce_mean(_cce(Y["cls"], p["cls"]))))
    with pytest.raises(ValueError, match="2 outputs and is not compiled.*Received: loss=None"):
        sniptf.saliency(sniptf.wrap(model), (X, Y))
    sw = np.ones(N, np.float32)
    with pytest.raises(ValueError, match="one number per batch"):
        sniptf.saliency(sniptf.wrap(model), (X, Y, sw), loss=lambda t, p: tf.reduce_mean(_cce(t["cls"], p["cls"])))


def test_element_shapes_fit_accepts():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), L.Dense(5, activation="tanh"), L.Dense(3)])
    x = RNG.normal(size=(N, 4)).astype(np.float32)
    y = RNG.integers(0, 3, (N,))
    wrapped = sniptf.wrap(model)
    reference = sniptf.saliency(wrapped, (x, y))
    for dataset in ([x, y], tf.data.Dataset.from_tensor_slices((x, y)).batch(N),
                    (x, y, np.ones(N, np.float32)),
                    tf.data.Dataset.from_tensor_slices((x, y, np.ones(N, np.float32))).batch(N)):
        _assert_scores(sniptf.saliency(wrapped, dataset), reference)
    # x alone: a compiled model with nothing but an added loss can be scored without targets
    inputs = keras.Input((4,))
    h = L.Dense(5, name="h")(inputs)
    out = L.ActivityRegularization(l2=1.0)(L.Dense(3, name="out")(h))  # adds a loss in call
    unsupervised = keras.Model(inputs, out)
    unsupervised.compile("sgd")  # no compiled loss: Keras trains on model.losses alone
    scores = sniptf.saliency(sniptf.wrap(unsupervised), x)
    assert all(np.count_nonzero(s) > 0.9 * s.size for s in scores.values())  # the added loss reaches them
    assert sniptf.sparsity(sniptf.prune(unsupervised, x, kappa=0.5)).kept == 18  # round(35 · 0.5)
    with pytest.raises(TypeError, match="4 items"):
        sniptf.saliency(wrapped, (x, y, y, y))
