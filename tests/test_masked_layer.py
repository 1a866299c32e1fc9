import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf
from sniptf import MaskedLayer

L = keras.layers
RNG = np.random.default_rng(0)


def _float(*shape):
    return RNG.random(shape, dtype=np.float32)


# One case per registered class (sniptf.supported_layers()): (factory, example
# input batch or list of batches, expected mask paths). A class registered
# without a case here fails test_every_registered_layer_has_a_case.
CASES = {
    "Dense": (lambda: L.Dense(3), _float(4, 5), ["kernel"]),
    "EinsumDense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=3), _float(4, 5), ["kernel"]),
    "Conv1D": (lambda: L.Conv1D(3, 2), _float(2, 6, 4), ["kernel"]),
    "Conv2D": (lambda: L.Conv2D(3, 2), _float(2, 5, 5, 2), ["kernel"]),
    "Conv3D": (lambda: L.Conv3D(2, 2), _float(2, 4, 4, 4, 2), ["kernel"]),
    "Conv1DTranspose": (lambda: L.Conv1DTranspose(2, 3, strides=2), _float(2, 5, 3), ["kernel"]),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(2, 2), _float(2, 4, 4, 3), ["kernel"]),
    "Conv3DTranspose": (lambda: L.Conv3DTranspose(2, 2), _float(2, 3, 3, 3, 2), ["kernel"]),
    "DepthwiseConv1D": (lambda: L.DepthwiseConv1D(2, depth_multiplier=2), _float(2, 6, 3), ["kernel"]),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(2), _float(2, 5, 5, 3), ["kernel"]),
    "SeparableConv1D": (lambda: L.SeparableConv1D(4, 3), _float(2, 7, 4),
                        ["depthwise_kernel", "pointwise_kernel"]),
    "SeparableConv2D": (lambda: L.SeparableConv2D(3, 2), _float(2, 5, 5, 2),
                        ["depthwise_kernel", "pointwise_kernel"]),
    "Embedding": (lambda: L.Embedding(7, 3), np.array([[1, 2, 6], [0, 3, 4]]), ["embeddings"]),
    "SimpleRNNCell": (lambda: L.SimpleRNN(3), _float(2, 4, 5), ["cell.kernel", "cell.recurrent_kernel"]),
    "LSTMCell": (lambda: L.LSTM(3, return_sequences=True), _float(2, 4, 5),
                 ["cell.kernel", "cell.recurrent_kernel"]),
    "GRUCell": (lambda: L.GRU(3), _float(2, 4, 5), ["cell.kernel", "cell.recurrent_kernel"]),
    "RNN": (lambda: L.RNN(L.LSTMCell(3)), _float(2, 4, 5), ["cell.kernel", "cell.recurrent_kernel"]),
    "Bidirectional": (lambda: L.Bidirectional(L.LSTM(3)), _float(2, 4, 5),
                      ["forward_layer.cell.kernel", "forward_layer.cell.recurrent_kernel",
                       "backward_layer.cell.kernel", "backward_layer.cell.recurrent_kernel"]),
    "TimeDistributed": (lambda: L.TimeDistributed(L.Dense(3)), _float(2, 4, 5), ["layer.kernel"]),
    "StackedRNNCells": (lambda: L.RNN(L.StackedRNNCells([L.GRUCell(3), L.LSTMCell(2)])), _float(2, 4, 5),
                        ["cell.cells.0.kernel", "cell.cells.0.recurrent_kernel",
                         "cell.cells.1.kernel", "cell.cells.1.recurrent_kernel"]),
    "MultiHeadAttention": (lambda: L.MultiHeadAttention(2, 4), [_float(2, 5, 8), _float(2, 3, 8)],
                           ["query_dense.kernel", "key_dense.kernel", "value_dense.kernel",
                            "output_dense.kernel"]),
}
LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _model(factory, x):
    xs = x if isinstance(x, list) else [x]
    inputs = [keras.Input(a.shape[1:], dtype="int32" if a.dtype.kind == "i" else "float32") for a in xs]
    outputs = MaskedLayer(factory())(*inputs)
    return keras.Model(inputs if isinstance(x, list) else inputs[0], outputs)


def test_every_registered_layer_has_a_case():
    missing = sorted(set(sniptf.supported_layers()) - set(CASES))
    assert not missing, f"add test cases to CASES for the registered {missing}"


def _random_masks(layer, keep=0.5, seed=0):
    rng = np.random.default_rng(seed)
    for _, _, mask in layer.masked_weights():
        mask.assign((rng.random(mask.shape) < keep).astype("float32"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(sniptf.supported_layers()) & set(CASES)))
def test_layer_type_masks_forward_save_and_train(name, tmp_path):
    factory, x, paths = CASES[name]
    model = _model(factory, x)
    layer = model.layers[-1]
    assert list(layer.masks) == paths
    for _, w, m in layer.masked_weights():
        assert m.shape == w.shape and not m.trainable
        np.testing.assert_array_equal(m.numpy(), 1.0)
    _random_masks(layer)

    # Forward computes with W ⊙ C: equal to the plain layer holding W ⊙ C.
    plain = sniptf.strip(model)
    np.testing.assert_allclose(model(x), plain(x), rtol=1e-5, atol=1e-6)

    # .keras round trip without a custom-object scope keeps the masks.
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for (p1, _, m1), (p2, _, m2) in zip(layer.masked_weights(), loaded.layers[-1].masked_weights()):
        assert p1 == p2
        np.testing.assert_array_equal(m1.numpy(), m2.numpy())
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)

    # One training step: pruned weights get exactly zero gradient.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    weights = [w for _, w, _ in layer.masked_weights()]
    grads = tape.gradient(loss, weights)
    for g, (_, _, m) in zip(grads, layer.masked_weights()):
        assert np.all(g.numpy()[m.numpy() == 0] == 0)
        assert np.any(g.numpy()[m.numpy() == 1] != 0)


def test_multi_head_attention_masks_saved_under_old_private_names_still_load():
    # saved by sniptf 0.1 (Keras 3.15) when the masks were named after
    # MultiHeadAttention's private `_query_dense` etc.: they load by position
    model = keras.models.load_model(os.path.join(LEGACY, "mha_masks_keras3.15_v0.1.keras"))
    saved = np.load(os.path.join(LEGACY, "mha_masks_keras3.15_v0.1.npz"))
    layer = model.get_layer("mha")
    assert list(layer.masks) == CASES["MultiHeadAttention"][2]
    assert 0 < sniptf.sparsity(model).sparsity < 1
    np.testing.assert_allclose(model([saved["x0"], saved["x1"]]), saved["y"], rtol=1e-5, atol=1e-6)


def test_hand_computed_dense_2x2():
    layer = MaskedLayer(L.Dense(2, use_bias=False))
    layer.build((None, 2))
    layer.layer.kernel.assign([[1.0, 2.0], [3.0, 4.0]])
    layer.masks["kernel"].assign([[1.0, 0.0], [0.0, 1.0]])
    y = layer(np.array([[1.0, 1.0]], np.float32))
    np.testing.assert_array_equal(y.numpy(), [[1.0, 4.0]])
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(np.array([[1.0, 2.0]], np.float32)))
    g = tape.gradient(out, layer.layer.kernel)
    # d(sum)/dW_ij = x_i * c_ij
    np.testing.assert_array_equal(g.numpy(), [[1.0, 0.0], [0.0, 2.0]])


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    lambda: keras.optimizers.Adam(0.01),
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
], ids=["sgd_momentum", "nesterov", "adam", "adamw"])
def test_pruned_weights_stay_zero_under_optimizers(optimizer):
    x = _float(64, 6)
    y = RNG.integers(0, 3, 64)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="tanh"), L.Dense(3)])
    pruned = sniptf.prune(model, (x, y), kappa=0.3)
    pruned.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {e.key: e.weight.numpy() for e in sniptf.transform.masked_entries(pruned)}
    pruned.fit(x, y, batch_size=16, epochs=3, verbose=0)
    for e in sniptf.transform.masked_entries(pruned):
        pruned_entries = e.mask.numpy() == 0
        assert pruned_entries.any()
        np.testing.assert_array_equal(e.weight.numpy()[pruned_entries], 0.0)
        assert not np.allclose(e.weight.numpy()[~pruned_entries], before[e.key][~pruned_entries])
    assert sniptf.sparsity(pruned).kept == sniptf.selection.kept_count(0.3, 6 * 8 + 8 * 3)


def test_dropout_rng_advances_inside_wrapper():
    layer = MaskedLayer(L.LSTM(4, dropout=0.5))
    x = _float(3, 5, 2)
    a = layer(x, training=True).numpy()
    b = layer(x, training=True).numpy()
    assert not np.allclose(a, b)
    np.testing.assert_allclose(layer(x, training=False), layer(x, training=False))


def test_masking_propagates_through_embedding():
    inputs = keras.Input((None,), dtype="int32")
    h = MaskedLayer(L.Embedding(10, 3, mask_zero=True))(inputs)
    out = MaskedLayer(L.LSTM(2))(h)
    model = keras.Model(inputs, out)
    plain = sniptf.strip(model)
    x = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])
    np.testing.assert_allclose(model(x), plain(x), rtol=1e-5, atol=1e-6)
    # Padding is masked through the wrapper: appending more padding changes nothing...
    x2 = np.array([[1, 2, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(model(x2), model(x), rtol=1e-6, atol=1e-7)
    # ...while a token in place of that padding does (the comparison above can fail)
    x3 = np.array([[1, 2, 0, 0, 0, 0, 5], [3, 0, 0, 0, 0, 0, 5]])
    assert np.abs(np.asarray(model(x3)) - np.asarray(model(x))).max() > 1e-4


def test_mask_biases():
    layer = MaskedLayer(L.Dense(2), mask_biases=True)
    layer.build((None, 3))
    assert list(layer.masks) == ["kernel", "bias"]


def test_wrapping_errors_name_the_value():
    with pytest.raises(ValueError, match=r"cannot wrap a Dropout.*Supported layer types:.*Dense.*LSTM.*Received: layer='drop'"):
        MaskedLayer(L.Dropout(0.5, name="drop"))
    with pytest.raises(TypeError, match=r"Sequential or Functional model use sniptf.wrap\(model\)"):
        MaskedLayer(keras.Sequential([L.Dense(2)]))
    with pytest.raises(TypeError, match="Received: layer=3"):
        MaskedLayer(3)
    with pytest.raises(ValueError, match="already a MaskedLayer"):
        MaskedLayer(MaskedLayer(L.Dense(2)))


def test_register_prunable_custom_layer():
    class Scale(L.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.kernel

    built = Scale()
    built.build((None, 3))
    with pytest.raises(ValueError, match="cannot wrap a Scale"):  # built: known at once
        MaskedLayer(built)
    unbuilt = MaskedLayer(Scale())  # might create sub-layers in build: known when built
    with pytest.raises(ValueError, match="has no prunable weights once built"):
        unbuilt(np.ones((1, 3), np.float32))
    sniptf.register_prunable(Scale, ["kernel"])
    layer = MaskedLayer(Scale())
    layer(np.ones((1, 3), np.float32))
    layer.masks["kernel"].assign([1.0, 0.0, 1.0])
    np.testing.assert_array_equal(layer(np.ones((1, 3), np.float32)), [[1.0, 0.0, 1.0]])
    with pytest.raises(TypeError, match="Received: weights='kernel'"):
        sniptf.register_prunable(Scale, "kernel")
    with pytest.raises(TypeError, match="subclass of keras.layers.Layer"):
        sniptf.register_prunable(int, ["kernel"])


def test_subclassed_model_uses_masked_layer_directly():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = MaskedLayer(L.Dense(4, name="fc"))
            self.out = L.Dense(2)

        def call(self, x):
            return self.out(self.fc(x))

    net = Net()
    x = _float(8, 3)
    net(x)
    scores = sniptf.saliency(net, (x, RNG.integers(0, 2, 8)))
    assert list(scores) == ["fc/kernel"]
    assert sniptf.sparsity(net).total.total == 12 + 8


def test_mixed_precision_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(3)])
        x = _float(16, 6)
        y = RNG.integers(0, 3, 16)
        pruned = sniptf.prune(model, (x, y), kappa=0.25)
        assert pruned(x).dtype == "float16"
        for e in sniptf.transform.masked_entries(pruned):
            assert e.mask.dtype == "bool" and e.weight.dtype == "float32"
        pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruned.fit(x, y, epochs=2, verbose=0)
        for e in sniptf.transform.masked_entries(pruned):
            assert np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0)
        np.testing.assert_allclose(sniptf.strip(pruned)(x), pruned(x), rtol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
