import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf

L = keras.layers


def _mlp(activation=None):
    inputs = keras.Input((4,))
    h = L.Dense(3, activation="tanh", name="h")(inputs)
    return keras.Model(inputs, L.Dense(2, activation=activation, name="out")(h))


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 2, n)


def _hand_sensitivity(model, batches, from_logits=True):
    """Σ_batches ∂L/∂w ⊙ w on the plain model: the connection sensitivity."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    total = None
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        kernels = [model.get_layer("h").kernel, model.get_layer("out").kernel]
        g = [gr.numpy() * k.numpy() for gr, k in zip(tape.gradient(loss, kernels), kernels)]
        total = g if total is None else [a + b for a, b in zip(total, g)]
    return [np.abs(t) for t in total]


def test_snip_equals_abs_grad_times_weight():
    model = _mlp()
    x, y = _data()
    scores = sniptf.saliency(sniptf.wrap(model), (x, y))
    assert list(scores) == ["h/kernel", "out/kernel"]
    for got, want in zip(scores.values(), _hand_sensitivity(model, [(x, y)])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_num_batches_sums_signed_gradients_before_abs():
    model = _mlp()
    x, y = _data(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    scores = sniptf.saliency(sniptf.wrap(model), ds, num_batches=3)
    want = _hand_sensitivity(model, [(x[i:i + 8], y[i:i + 8]) for i in (0, 8, 16)])
    for got, w in zip(scores.values(), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)
    same = sniptf.saliency(sniptf.wrap(model), (x, y), batch_size=8, num_batches=3)
    for a, b in zip(scores.values(), same.values()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_datasets_are_scored_in_one_compiled_pass(monkeypatch):
    """A dataset is iterated inside the compiled function (no Python loop over
    batches); only a failing pass goes batch by batch, to name the batch."""
    from sniptf import scoring
    model = _mlp()
    x, y = _data(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    wrapped = sniptf.wrap(model)

    def no_python_loop(*args, **kwargs):
        raise AssertionError("batch-by-batch path used for a good dataset")

    monkeypatch.setattr(scoring, "_batch_gradients", no_python_loop)
    scores = sniptf.saliency(wrapped, ds, num_batches=3)
    want = _hand_sensitivity(model, [(x[i:i + 8], y[i:i + 8]) for i in (0, 8, 16)])
    for got, w in zip(scores.values(), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)
    with pytest.warns(UserWarning, match="num_batches=9 but the dataset had only 4"):
        sniptf.saliency(wrapped, ds, num_batches=9)


def test_softmax_output_is_not_treated_as_logits():
    model = _mlp(activation="softmax")
    x, y = _data()
    scores = sniptf.saliency(sniptf.wrap(model), (x, y))
    want = _hand_sensitivity(model, [(x, y)], from_logits=False)
    for got, w in zip(scores.values(), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)


def test_compiled_loss_and_explicit_loss_are_used():
    model = _mlp()
    x, y = _data()
    onehot = np.eye(2, dtype="float32")[y]
    wrapped = sniptf.wrap(model)
    wrapped.compile("sgd", loss="mse")
    compiled = sniptf.saliency(wrapped, (x, onehot))
    explicit = sniptf.saliency(sniptf.wrap(model), (x, onehot), loss="mse")
    default = sniptf.saliency(sniptf.wrap(model), (x, y))
    for a, b, c in zip(compiled.values(), explicit.values(), default.values()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        assert not np.allclose(a, c)


def test_magnitude_and_random_criteria():
    model = _mlp()
    x, y = _data()
    wrapped = sniptf.wrap(model)
    mag = sniptf.saliency(wrapped, (x, y), criterion="magnitude")
    np.testing.assert_array_equal(mag["h/kernel"], np.abs(model.get_layer("h").kernel.numpy()))
    r1 = sniptf.saliency(wrapped, (x, y), criterion="random", seed=5)
    r2 = sniptf.saliency(wrapped, (x, y), criterion="random", seed=5)
    r3 = sniptf.saliency(wrapped, (x, y), criterion="random", seed=6)
    np.testing.assert_array_equal(r1["out/kernel"], r2["out/kernel"])
    assert not np.array_equal(r1["out/kernel"], r3["out/kernel"])


def test_bn_training_uses_batch_statistics_and_restores_state():
    inputs = keras.Input((4,))
    h = L.BatchNormalization(name="bn")(L.Dense(3, name="h")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    x, y = _data()
    x = x * 5 + 3
    wrapped = sniptf.wrap(model)
    before = [v.numpy() for v in wrapped.get_layer("bn").non_trainable_variables]
    inference = sniptf.saliency(wrapped, (x, y))
    training = sniptf.saliency(wrapped, (x, y), bn_training=True)
    after = [v.numpy() for v in wrapped.get_layer("bn").non_trainable_variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(inference["h/kernel"], training["h/kernel"])


def test_errors_name_the_problem():
    model = _mlp()
    x, y = _data()
    wrapped = sniptf.wrap(model)
    with pytest.raises(ValueError, match="has no MaskedLayer; call sniptf.wrap"):
        sniptf.saliency(model, (x, y))
    with pytest.raises(ValueError, match=r"Unknown criterion.*Received: criterion='grasp2'"):
        sniptf.saliency(wrapped, (x, y), criterion="grasp2")
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(4)
    with pytest.raises(ValueError, match="yielded no batches"):
        sniptf.saliency(wrapped, empty)
    with pytest.raises(ValueError, match="arrays are empty"):
        sniptf.saliency(wrapped, (x[:0], y[:0]))
    dicts = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(4)
    with pytest.raises(ValueError, match="as_supervised=True"):
        sniptf.saliency(wrapped, dicts)
    singles = tf.data.Dataset.from_tensor_slices(x).batch(4)
    with pytest.raises(ValueError, match=r"inputs but no targets, and the model is not compiled"):
        sniptf.saliency(wrapped, singles)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="looks unbatched; call dataset.batch"):
        sniptf.saliency(wrapped, unbatched)
    with pytest.raises(ValueError, match=r"Batch 0 does not fit the model.*\(None, 4\).*Received: x of shape \(16, 5\)"):
        sniptf.saliency(wrapped, (np.ones((16, 5), "float32"), y))
    with pytest.raises(ValueError, match="disagree on the number of examples: 16 vs 15"):
        sniptf.saliency(wrapped, (x, y[:15]))
    bad = x.copy()
    bad[3, 1] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((np.concatenate([x, bad]), np.concatenate([y, y]))).batch(16)
    with pytest.raises(ValueError, match="not finite on batch 1"):
        sniptf.saliency(wrapped, ds, num_batches=2)
    with pytest.raises(ValueError, match=r"Scoring failed on batch 0: Received a label value of \d+ "
                                         r"which is outside the valid range.*Received: x of shape"):
        sniptf.saliency(wrapped, (x, y + 5))
    with pytest.raises(TypeError, match="Received: dataset=str"):
        sniptf.saliency(wrapped, "mnist")
    with pytest.raises(ValueError, match="Received: num_batches=0"):
        sniptf.saliency(wrapped, (x, y), num_batches=0)


def test_fewer_batches_than_asked_warns():
    model = _mlp()
    x, y = _data(8)
    with pytest.warns(UserWarning, match="num_batches=3 but the dataset had only 2"):
        sniptf.saliency(sniptf.wrap(model), (x, y), batch_size=4, num_batches=3)


@pytest.mark.parametrize("rnn", ["LSTM", "GRU"])
def test_snip_on_recurrent_gates_equals_abs_grad_times_weight(rnn):
    """Every gate block of a recurrent kernel is scored as |∂L/∂W ⊙ W| of the plain net:
    SNIP's near-total pruning of LSTM/GRU gates at 95% (experiments/rnn_masks.py) is
    what the criterion says, not a masking defect."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    h = getattr(keras.layers, rnn)(6, name="rnn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5, 3)).astype("float32"), rng.integers(0, 2, 8)
    scores = sniptf.saliency(sniptf.wrap(model), (x, y))
    cell = model.get_layer("rnn").cell
    kernels = [cell.kernel, cell.recurrent_kernel]
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
    for key, g, k in zip(("rnn/cell.kernel", "rnn/cell.recurrent_kernel"),
                         tape.gradient(loss, kernels), kernels):
        np.testing.assert_allclose(scores[key], np.abs(g.numpy() * k.numpy()), rtol=1e-4, atol=1e-7)
