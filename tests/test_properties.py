"""Property-based tests (hypothesis) over random small models: every kind of
prunable layer, shared layers, several inputs and outputs, nested models;
random kappa (fractions and exact counts, 1 and N), scopes, dtype policies,
batch sizes with a ragged last batch.

`make test` runs a short, derandomized profile; `make fuzz` a long random one.
"""

import pytest
import keras
import numpy as np
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import sniptf
from sniptf import selection
from sniptf.sparsity_report import mask_digest
from sniptf import transform

L = keras.layers
KINDS = ("dense", "conv", "depthwise", "separable", "embedding", "lstm", "gru", "shared",
         "multi_io", "nested")


def _build(kind, width):
    """A small compiled model of `kind`, and a function making a random batch."""
    if kind in ("dense", "shared", "multi_io", "nested"):
        shape, dtype = (6,), "float32"
    elif kind in ("conv", "depthwise", "separable"):
        shape, dtype = (8, 8, 2), "float32"
    elif kind == "embedding":
        shape, dtype = (5,), "int32"
    else:
        shape, dtype = (4, 3), "float32"
    inputs = [keras.Input(shape, dtype=dtype)]
    x = inputs[0]
    if kind == "dense":
        outputs = [L.Dense(3)(L.Dense(width, activation="relu")(x))]
    elif kind == "conv":
        outputs = [L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(width, 3, activation="relu")(x)))]
    elif kind == "depthwise":
        h = L.Conv2D(width, 1)(L.DepthwiseConv2D(3, activation="relu")(x))
        outputs = [L.Dense(3)(L.Flatten()(h))]
    elif kind == "separable":
        outputs = [L.Dense(3)(L.GlobalAveragePooling2D()(L.SeparableConv2D(width, 3)(x)))]
    elif kind == "embedding":
        outputs = [L.Dense(3)(L.GlobalAveragePooling1D()(L.Embedding(20, width)(x)))]
    elif kind == "lstm":
        outputs = [L.Dense(3)(L.LSTM(width)(x))]
    elif kind == "gru":
        outputs = [L.Dense(3)(L.Flatten()(L.GRU(width, return_sequences=True)(x)))]
    elif kind == "shared":
        inputs.append(keras.Input(shape))
        shared = L.Dense(width, activation="tanh")
        outputs = [L.Dense(3)(L.Concatenate()([shared(inputs[0]), shared(inputs[1])]))]
    elif kind == "multi_io":
        inputs.append(keras.Input(shape))
        h = L.Dense(width, activation="relu")(L.Concatenate()(inputs))
        outputs = [L.Dense(3)(h), L.Dense(3)(L.Dense(width)(h))]
    else:  # nested
        inner = keras.Sequential([keras.Input(shape), L.Dense(width, activation="relu"), L.Dense(width)])
        outputs = [L.Dense(3)(inner(x))]
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0],
                        outputs if len(outputs) > 1 else outputs[0])
    model.compile("sgd", [keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * len(outputs))

    def batch(n, rng):
        xs = [rng.integers(0, 20, (n,) + shape).astype(dtype) if dtype == "int32"
              else rng.standard_normal((n,) + shape).astype(dtype) for _ in inputs]
        ys = [rng.integers(0, 3, n) for _ in outputs]
        return (tuple(xs) if len(xs) > 1 else xs[0]), (tuple(ys) if len(ys) > 1 else ys[0])

    return model, batch


def _close(policy):
    return dict(rtol=1e-5, atol=1e-5) if policy == "float32" else dict(rtol=2e-2, atol=2e-2)


def _f32(outputs):
    return [np.asarray(o, np.float32) for o in keras.tree.flatten(outputs)]


@pytest.mark.slow
@given(data=st.data())
def test_pruning_properties_hold_for_random_models(data, tmp_path_factory):
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    width = data.draw(st.integers(2, 6), label="width")
    policy = data.draw(st.sampled_from(["float32", "mixed_float16", "mixed_bfloat16"]), label="policy")
    scope = data.draw(st.sampled_from(selection.SCOPES), label="scope")
    seed = data.draw(st.integers(0, 3), label="seed")
    n = data.draw(st.integers(5, 12), label="examples")
    batch_size = data.draw(st.integers(2, 5), label="batch_size")  # a ragged last batch, often
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        model, make_batch = _build(kind, width)
    finally:
        keras.config.set_dtype_policy("float32")  # the layers keep theirs
    x, y = make_batch(n, np.random.default_rng(seed))
    total = sniptf.sparsity(sniptf.wrap(model)).total.total
    kappa = data.draw(st.one_of(st.sampled_from([1, total, 1.0]), st.integers(1, total),
                                st.floats(0.5 / total + 1e-9, 1.0)), label="kappa")
    num_batches = -(-n // batch_size)

    # strip(wrap(m)) reproduces m
    np.testing.assert_allclose(_f32(sniptf.strip(sniptf.wrap(model))(x))[0], _f32(model(x))[0],
                               **_close(policy))

    pruned = sniptf.prune(model, (x, y), kappa=kappa, scope=scope, seed=seed,
                          batch_size=batch_size, num_batches=num_batches)
    report = sniptf.sparsity(pruned)
    assert report.kept == selection.kept_count(kappa, total)  # exact
    again = sniptf.prune(model, (x, y), kappa=kappa, scope=scope, seed=seed,
                         batch_size=batch_size, num_batches=num_batches)
    assert mask_digest(again) == mask_digest(pruned)  # deterministic for a seed

    # masked weights stay exactly zero after optimizer steps
    pruned.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    for e in transform.masked_entries(pruned):
        assert np.all(e.weight.numpy()[~e.mask.numpy().astype(bool)] == 0), e.key
    expected = _f32(pruned(x))

    # .keras and SavedModel round trips keep the masks and the outputs
    work = tmp_path_factory.mktemp("roundtrip")
    pruned.save(work / "m.keras")
    loaded = keras.saving.load_model(work / "m.keras")
    assert mask_digest(loaded) == mask_digest(pruned)
    for a, b in zip(_f32(loaded(x)), expected):
        np.testing.assert_allclose(a, b, **_close(policy))
    sniptf.export(pruned, str(work / "saved"))
    served = tf.saved_model.load(str(work / "saved"))
    # the serving signature has the model's input structure (a list here), as Keras's export
    for a, b in zip(_f32(served.serve(list(x) if isinstance(x, tuple) else x)), expected):
        np.testing.assert_allclose(a, b, **_close(policy))
