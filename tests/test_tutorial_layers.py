"""Models users actually write: custom layers in the keras-io tutorial style, whose
constructor takes no **kwargs and which define no get_config (`def __init__(self, a, b):
super().__init__()`), as in keras-io's "Text classification with Transformer" example.
The classes here are written in that style for these tests."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import sniptf

MAXLEN, VOCAB, EMBED = 12, 60, 16


class TokenAndPositionEmbedding(layers.Layer):
    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        positions = keras.ops.arange(0, keras.ops.shape(x)[-1], 1)
        return self.token_emb(x) + self.pos_emb(positions)


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn = self.dropout1(self.att(inputs, inputs), training=training)
        out1 = self.layernorm1(inputs + attn)
        return self.layernorm2(out1 + self.dropout2(self.ffn(out1), training=training))


class DenseStack(layers.Layer):
    """A layer holding a list of sub-layers."""

    def __init__(self, units, depth):
        super().__init__()
        self.blocks = [layers.Dense(units, activation="relu") for _ in range(depth)]

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _model():
    keras.utils.set_random_seed(0)
    inputs = layers.Input(shape=(MAXLEN,), dtype="int32")
    x = TokenAndPositionEmbedding(MAXLEN, VOCAB, EMBED)(inputs)
    x = TransformerBlock(EMBED, 2, 32)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = DenseStack(24, 2)(x)
    outputs = layers.Dense(2)(layers.Dropout(0.1)(x))
    return keras.Model(inputs=inputs, outputs=outputs)


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, VOCAB, (n, MAXLEN)).astype("int32"), rng.integers(0, 2, n)


def test_tutorial_layers_prune_with_every_matrix_weight_covered():
    model = _model()
    x, y = _data()
    pruned = sniptf.prune(model, (x, y), kappa=0.1)
    report = sniptf.sparsity(pruned)
    assert not report.uncovered and report.covered == report.all_weights
    kernels = [v for v in model.weights if len(v.shape) >= 2 and not v.path.endswith("bias")]
    assert report.total.total == sum(int(np.prod(v.shape)) for v in kernels)  # MHA's biases are 2-D
    assert report.kept == round(0.1 * report.total.total)
    # the copies keep the user's layer names and classes
    names = {l.name for l in sniptf.strip(pruned).layers}
    assert {l.name for l in model.layers} == names
    assert [type(l) for l in sniptf.strip(pruned).layers] == [type(l) for l in model.layers]


@pytest.mark.slow
def test_pruned_copy_trains_with_pruned_weights_at_zero_and_leaves_the_users_model_alone():
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    x, y = _data()
    pruned = sniptf.prune(model, (x, y), kappa=0.1)
    pruned.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the user's model is untouched
    masked = [(w, m) for entry in sniptf.transform.masked_entries(pruned) for w, m in [(entry.weight, entry.mask)]]
    assert masked
    for w, m in masked:
        assert not np.any(w.numpy()[~m.numpy().astype(bool)])  # pruned weights stay exactly zero


@pytest.mark.slow
def test_export_serves_without_sniptf_and_keras_reload_fails_as_keras_does(tmp_path):
    model = _model()
    x, y = _data(16)
    pruned = sniptf.prune(model, (x, y), kappa=0.1)
    expected = pruned(x, training=False).numpy()
    sniptf.export(pruned, tmp_path / "sm")
    sniptf.export(pruned, tmp_path / "sparse", format="sparse_saved_model")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", expected)
    code = f"""
import sys
class NoSniptf:
    def find_spec(self, name, path=None, target=None):
        if name == "sniptf" or name.startswith("sniptf."):
            raise ImportError("sniptf is not installed here")
sys.meta_path.insert(0, NoSniptf())
import numpy as np, tensorflow as tf
x, expected = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "expected.npy")!r})
for path in ({str(tmp_path / "sm")!r}, {str(tmp_path / "sparse")!r}):
    loaded = tf.saved_model.load(path)  # kept: its variables live as long as it does
    np.testing.assert_allclose(loaded.serve(x).numpy(), expected, rtol=1e-5, atol=1e-5)
assert "sniptf" not in sys.modules
print("served without sniptf")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "served without sniptf" in done.stdout
    # .keras: saving works; reloading fails exactly where Keras fails for the user's own model
    pruned.save(tmp_path / "pruned.keras")
    model.save(tmp_path / "model.keras")
    custom = {c.__name__: c for c in (TokenAndPositionEmbedding, TransformerBlock, DenseStack)}
    with pytest.raises(Exception) as keras_error:
        keras.models.load_model(tmp_path / "model.keras", custom_objects=custom)
    with pytest.raises(ValueError, match="Keras cannot reload") as ours:
        keras.models.load_model(tmp_path / "pruned.keras", custom_objects=custom)
    assert "TokenAndPositionEmbedding" in str(ours.value) and "**kwargs" in str(ours.value)
    assert "trainable" in str(keras_error.value)


def test_tflite_export_of_tutorial_layers(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = layers.Input(shape=(MAXLEN,), dtype="int32")
    x = TokenAndPositionEmbedding(MAXLEN, VOCAB, EMBED)(inputs)
    x = DenseStack(24, 2)(layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, layers.Dense(2)(x))
    xs, ys = _data(16)
    pruned = sniptf.prune(model, (xs, ys), kappa=0.2)
    plain = sniptf.export(pruned, tmp_path / "m.tflite", format="tflite")
    assert plain.export_info["bytes"] > 0 and plain.export_info["max_abs_error"] < 1e-4


class TakesALayer(layers.Layer):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, x):
        return self.inner(x)


def test_a_layer_keras_cannot_record_keeps_a_clear_error():
    inputs = layers.Input((4,))
    model = keras.Model(inputs, TakesALayer(layers.Dense(3))(inputs))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="(?s)cannot be copied.*another object.*get_config"):
        sniptf.prune(model, (np.ones((2, 4), "float32"), np.zeros(2, "int64")), kappa=0.5)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
