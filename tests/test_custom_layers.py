"""Pruning inside custom layers: KerasHub transformers, users' blocks, subclassed models.

The KerasHub models are small configurations built offline with no
pretrained weights. What "every prunable weight" means is taken from the
models' own variable paths (`.../kernel`, `.../embeddings`), not from
sniptf's walk, so a layer the walk misses fails the test.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf
from sniptf import registry, transform
from sniptf.sparsity_report import mask_digest

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub is not installed; `make setup` installs it "
    "(pip install --no-deps keras-hub, see the Makefile)")

_PRUNABLE_SUFFIXES = ("/kernel", "/embeddings", "/depthwise_kernel", "/pointwise_kernel",
                      "/recurrent_kernel")


def _expected_prunable(model):
    """Every kernel/embedding variable of the model, by its Keras path."""
    return {v.path for v in model.weights if v.path.endswith(_PRUNABLE_SUFFIXES)}


def _originals(model):
    """The plain model's prunable variables under the keys sniptf gives them."""
    out, seen = {}, set()
    for layer_key, layer in transform.walk_layers(model):
        if registry.is_prunable(layer):
            for path, var in registry.prunable_weights(layer):
                if id(var) not in seen:  # a layer held twice counts once
                    seen.add(id(var))
                    out[f"{layer_key}/{path}"] = var
    return out


def _token_batch(n=8, seq=16, vocab=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, vocab, (n, seq)).astype("int32")


def _bert_classifier():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=500, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=16)
    inputs = {k: keras.Input((16,), dtype="int32", name=k)
              for k in ("token_ids", "segment_ids", "padding_mask")}
    logits = keras.layers.Dense(3, name="head")(backbone(inputs)["pooled_output"])
    model = keras.Model(inputs, logits, name="bert_classifier")
    tokens = _token_batch()
    x = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens),
         "padding_mask": np.ones_like(tokens)}
    y = np.arange(8) % 3
    return model, x, y


def _gpt2_lm():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=500, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=16)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    tokens = _token_batch(seed=1)
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    y = np.roll(tokens, -1, axis=1)
    return model, x, y


def _vit_classifier():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=32, mlp_dim=64, use_class_token=True)
    inputs = keras.Input((16, 16, 3), name="images")
    features = backbone(inputs)[:, 0]
    logits = keras.layers.Dense(4, name="head")(features)
    model = keras.Model(inputs, logits, name="vit_classifier")
    x = np.random.default_rng(2).normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.arange(8) % 4
    return model, x, y


HUB_MODELS = {"bert": _bert_classifier, "gpt2": _gpt2_lm, "vit": _vit_classifier}


@pytest.fixture(scope="module", params=sorted(HUB_MODELS))
def hub_case(request):
    keras.utils.set_random_seed(7)
    model, x, y = HUB_MODELS[request.param]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = sniptf.prune(model, (x, y), kappa=0.1)
    return request.param, model, x, y, pruned, [str(w.message) for w in caught]


@pytest.mark.slow
def test_every_kernel_inside_is_masked(hub_case):
    name, model, x, y, pruned, caught = hub_case
    masked = {id(e.weight) for e in transform.masked_entries(pruned)}
    # The pruned copy's kernels, by the same Keras paths as the original's.
    expected = _expected_prunable(pruned)
    assert expected == _expected_prunable(model) | set()  # same structure, same paths
    unmasked = sorted(v.path for v in pruned.weights
                      if v.path in expected and id(v) not in masked)
    # only KerasHub's own position tables (a layer type not in the registry,
    # reading its weight directly) stay dense, and the report names them
    assert all("position_embedding" in p for p in unmasked), f"{name}: unmasked {unmasked}"
    assert set(unmasked) <= {c.name for c in sniptf.sparsity(pruned).uncovered}
    # the transformer blocks' attention and feed-forward kernels are among them
    paths = {e.key for e in transform.masked_entries(pruned)}
    assert any("query_dense.kernel" in p for p in paths)
    assert any("value_dense.kernel" in p for p in paths)


def test_kept_count_is_exact_over_all_and_uncovered_are_reported(hub_case):
    name, model, x, y, pruned, caught = hub_case
    report = sniptf.sparsity(pruned)
    n = report.total.total
    assert report.total.kept == round(0.1 * n)
    assert n == sum(int(np.prod(v.shape)) for v in _originals(model).values())
    # what is not covered (position tables, class tokens) is named, and prune said so
    uncovered = {c.name for c in report.uncovered}
    for path in uncovered:  # KerasHub position tables; ViT's class token
        assert "position_embedding" in path or "class_token" in path, path
    assert report.all_weights == n + sum(c.total for c in report.uncovered)
    warned = [m for m in caught if "could not be masked" in m]
    assert len(warned) == (1 if uncovered else 0)
    for path in uncovered:
        assert path in warned[0] or "more" in warned[0]


def _by_value(model):
    """The model's variables by their exact values: how a copy's weight finds its original."""
    return {(tuple(v.shape), v.numpy().tobytes()): v for v in model.weights}


def _assert_snip_scores_are_gradient_times_weight_of(model, x, y, loss_fn, rtol):
    wrapped = sniptf.wrap(model)
    scores = sniptf.saliency(wrapped, (x, y), loss=loss_fn)
    originals = _by_value(model)
    pairs = [(e.key, originals[(tuple(e.weight.shape), e.weight.numpy().tobytes())])
             for e in transform.masked_entries(wrapped)]
    assert set(scores) == {k for k, _ in pairs}
    assert len({id(v) for _, v in pairs}) == len(pairs)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    grads = tape.gradient(loss, [v for _, v in pairs])
    for (key, var), g in zip(pairs, grads):
        expected = np.abs(tf.convert_to_tensor(g).numpy() * var.numpy())
        np.testing.assert_allclose(scores[key], expected, rtol=rtol,
                                   atol=1e-6 * expected.max(), err_msg=key)


@pytest.mark.slow
def test_snip_scores_equal_gradient_times_weight_of_the_plain_model(hub_case):
    name, model, x, y, pruned, caught = hub_case
    _assert_snip_scores_are_gradient_times_weight_of(
        model, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True), 2e-4)


@pytest.mark.slow
def test_pruned_model_trains_saves_and_exports(hub_case, tmp_path):
    name, model, x, y, pruned, caught = hub_case
    pruned.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0)
    entries = transform.masked_entries(pruned)
    moved = 0
    for e in entries:
        w, m = e.weight.numpy(), e.mask.numpy()
        assert np.all(w[m == 0] == 0), e.key
        moved += int(np.count_nonzero(w))
    assert 0 < moved <= sniptf.sparsity(pruned).total.kept

    expected = pruned.predict(x, verbose=0)
    path = tmp_path / f"{name}.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert mask_digest(loaded) == mask_digest(pruned)

    if name == "bert":  # export: one transformer is enough for the suite's time
        sniptf.export(pruned, tmp_path / "saved")
        served = tf.saved_model.load(str(tmp_path / "saved"))
        out = served.serve({k: tf.constant(v) for k, v in x.items()})
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_registering_a_custom_weight_covers_it():
    model, x, y = _bert_classifier()
    cls = keras_hub.layers.PositionEmbedding
    try:
        sniptf.register_prunable(cls, ["position_embeddings"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruned = sniptf.prune(model, (x, y), kappa=0.1)
        assert not [w for w in caught if "could not be masked" in str(w.message)]
        report = sniptf.sparsity(pruned)
        assert report.uncovered == ()
        assert any(k.endswith("position_embedding.position_embeddings") for k in
                   (c.name for c in report.weights))
    finally:
        registry._RECORDS.pop(cls)


# --- users' own blocks and subclassed models ---------------------------------

@keras.saving.register_keras_serializable("sniptf_tests")
class ResidualBlock(keras.layers.Layer):
    """A user's block: sub-layers in an attribute, a list and a dict, plus a raw weight."""

    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = keras.layers.Dense(units, activation="relu")
        self.convs = [keras.layers.Dense(units), keras.layers.Dense(units)]
        self.heads = {"gate": keras.layers.Dense(units, activation="sigmoid")}
        self.norm = keras.layers.LayerNormalization()

    def build(self, input_shape):
        self.mix = self.add_weight(shape=(self.units, self.units), name="mix")

    def call(self, x):
        h = self.convs[1](self.convs[0](self.inner(x)))
        h = h * self.heads["gate"](x)
        return self.norm(x + keras.ops.matmul(h, self.mix))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("sniptf_tests")
class SubclassedNet(keras.Model):
    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.stem = keras.layers.Dense(units)
        self.blocks = [ResidualBlock(units), ResidualBlock(units)]
        self.out = keras.layers.Dense(3)

    def call(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(32, 12)).astype("float32"), rng.integers(0, 3, 32)


def _functional_with_block():
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, name="stem")(inputs)
    h = ResidualBlock(16, name="block")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def _subclassed():
    model = SubclassedNet(16, name="net")
    model(np.zeros((1, 12), "float32"))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("make", [_functional_with_block, _subclassed], ids=["block", "subclassed"])
def test_users_blocks_and_subclassed_models_prune_train_and_round_trip(make, tmp_path):
    x, y = _data()
    model = make()
    before = [w.copy() for w in model.get_weights()]
    wrapped = sniptf.wrap(model)
    np.testing.assert_allclose(wrapped(x), model(x), rtol=1e-6, atol=1e-6)

    with pytest.warns(UserWarning, match=r"mix \[16, 16\]"):
        pruned = sniptf.prune(model, (x, y), kappa=0.2)
    for a, b in zip(before, model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)
    report = sniptf.sparsity(pruned)
    keys = [c.name for c in report.weights]
    for part in ("inner.kernel", "convs.0.kernel", "convs.1.kernel", "heads.gate.kernel"):
        assert any(k.endswith(part) for k in keys), (part, keys)
    assert report.total.kept == round(0.2 * report.total.total)
    assert all(c.name.endswith("/mix") for c in report.uncovered)
    assert len(report.uncovered) == (2 if make is _subclassed else 1)

    _assert_snip_scores_are_gradient_times_weight_of(  # |g ⊙ w| on the plain model
        model, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True), 1e-4)

    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for e in transform.masked_entries(pruned):
        assert np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0), e.key

    expected = pruned.predict(x, verbose=0)
    pruned.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert mask_digest(loaded) == mask_digest(pruned)

    plain = sniptf.strip(pruned)
    assert not transform.masked_entries(plain)
    np.testing.assert_allclose(plain.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert sniptf.sparsity(plain).total.kept <= report.total.kept
    sniptf.export(pruned, tmp_path / "saved")
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_masked_layers_placed_in_a_users_block_are_found():
    @keras.saving.register_keras_serializable("sniptf_tests")
    class Placed(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.a = sniptf.MaskedLayer(keras.layers.Dense(8))
            self.b = keras.layers.Dense(8)

        def call(self, x):
            return self.b(self.a(x))

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Placed(name="placed")(inputs))
    wrapped = sniptf.wrap(model)
    keys = [e.key for e in transform.masked_entries(wrapped)]
    # the user's MaskedLayer keeps its own mask; the plain Dense gets one from the wrap
    assert sorted(keys) == ["placed/a/kernel", "placed/b.kernel"]
    assert len({id(e.weight) for e in transform.masked_entries(wrapped)}) == 2


def test_masked_model_config_extends_the_model_config():
    """`MaskedModel.get_config` is Keras's model config plus its own keys, and
    `from_config` gives back a model with the same name, trainable flag and masks."""
    wrapped = sniptf.wrap(_subclassed())
    assert isinstance(wrapped, sniptf.MaskedModel)
    wrapped.trainable = False
    config = wrapped.get_config()
    assert set(keras.Model.get_config(wrapped)) <= set(config)
    assert {"model", "mask_biases"} <= set(config) and config["trainable"] is False
    again = sniptf.MaskedModel.from_config(config)
    assert again.name == wrapped.name and again.trainable is False
