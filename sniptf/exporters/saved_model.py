"""The `saved_model` and `sparse_saved_model` formats: a SavedModel that holds
TensorFlow variables only (each stored once), optionally sparse-encoded."""

import contextlib
import logging
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from sniptf import _keras_compat
from sniptf import transform
from sniptf.exporters import sparse_format


def input_signature(model):
    """The `serve` function's input spec: a graph model's inputs, else the shapes a
    subclassed model was built with."""
    if getattr(model, "inputs", None):
        spec = lambda t: tf.TensorSpec(t.shape, t.dtype, name=_keras_compat.input_layer_name(t))
        # a Sequential that was never called has `inputs` but no `input`
        structure = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
        return keras.tree.map_structure(spec, structure)
    config = model.get_build_config() or {}
    if "input_shape" not in config:
        raise ValueError(
            f"Model '{model.name}' has no known input shape to export; call it once on a "
            "batch (`model(x)`) or build it with a keras.Input.")
    return keras.tree.map_shape_structure(  # any batch size, as Keras's export allows
        lambda shape: tf.TensorSpec((None,) + tuple(shape)[1:], keras.backend.floatx()),
        config["input_shape"])


@contextlib.contextmanager
def _quiet():
    """TensorFlow's saver logs a line per file at INFO; an export says nothing."""
    tf_logger = logging.getLogger("tensorflow")
    tf_level, absl_level = tf_logger.level, absl_logging.get_verbosity()
    tf_logger.setLevel(max(tf_level, logging.WARNING))
    absl_logging.set_verbosity(min(absl_level, absl_logging.WARNING))  # lower = quieter
    try:
        yield
    finally:
        tf_logger.setLevel(tf_level)
        absl_logging.set_verbosity(absl_level)


def serve_function(model):
    """The dense `serve` tf.function over `model` (what TFLite converts)."""
    @tf.function(input_signature=[input_signature(model)])
    def serve(inputs):
        return model(inputs, training=False)
    return serve


def _write_saved_model(model, directory, *, sparse=False, batch_size_hint=1):
    """A SavedModel of `model` with each variable stored once (Keras 3.15's
    `model.export` stores every variable twice: `variables/...` and
    `_all_variables/...`); with `sparse`, in the sparse format
    (`sniptf.sparse_format`).

    The `serve` function calls the Keras model with every Keras variable read
    from the SavedModel's own TensorFlow variables (a `keras.StatelessScope`),
    so the file holds those and nothing of Keras or sniptf.

    Returns:
        A dict: per encoded weight its stored bytes and index kind, and the
        Dense layers on the sparse path with their crossover batch.
    """
    encoded = []
    if sparse:
        for i, (_, key, var) in enumerate(transform.plain_prunable_weights(model)):
            e = sparse_format.encode(var, f"sparse_{i}")
            if e is not None:
                encoded.append((key, e))
    keys = {id(e.variable): key for key, e in encoded}
    encoded = [e for _, e in encoded]
    plain_vars = [v for v in model.variables if id(v) not in keys]
    copies = [tf.Variable(v.numpy(), trainable=v.trainable, name=v.name.replace("/", "_"))
              for v in plain_vars]
    on_sparse_path = []
    for layer, e in sparse_format.dense_layers_with(model, encoded):
        crossover = sparse_format.crossover_batch(e.variable.numpy(), batch_size_hint)
        if crossover:
            on_sparse_path.append((layer, e, crossover))
    caches = sparse_format.Caches(encoded, [(layer, e) for layer, e, _ in on_sparse_path])

    # a public AutoTrackable: its attributes are the SavedModel's children (a
    # tf.Module would not take `variables`, which Keras's exports have)
    root = tf.train.Checkpoint()
    stored = [t for e in encoded for t in (e.values, e.index)]
    root.variables = copies + stored + (caches.tracked() if encoded else [])
    if encoded:
        root.rebuild_at_load = caches.at_load
    root.trainable_variables = [v for v in copies if v.trainable]
    root.non_trainable_variables = [v for v in root.variables if not v.trainable]

    @tf.function(input_signature=[input_signature(model)])
    def serve(inputs):
        kernels, kept = caches.read()
        pairs = list(zip(plain_vars, copies)) + list(zip((e.variable for e in encoded), kernels))
        kernel_of = dict(zip((id(e) for e in encoded), kernels))
        for (layer, e, crossover), blocks in zip(on_sparse_path, kept):
            layer.call = sparse_format.sparse_dense_call(layer, crossover, kernel_of[id(e)], blocks)
        try:
            with keras.StatelessScope(state_mapping=pairs):
                return model(inputs, training=False)
        finally:
            for layer, _, _ in on_sparse_path:
                del layer.call  # the instance's own `call` again

    @tf.function(input_signature=serve.input_signature)
    def serving_default(inputs):
        out = keras.tree.flatten(serve(inputs))
        return {f"output_{i}": t for i, t in enumerate(out)}

    root.serve = serve
    with _quiet():
        tf.saved_model.save(root, directory, signatures={"serving_default": serving_default})
    return {"encoded": {keys[id(e.variable)]: {"bytes": e.stored_bytes, "index": e.index_kind,
                                               "dense_bytes": int(np.prod(e.shape)) * 4}
                        for e in encoded},
            "sparse_path": {layer.name: crossover for layer, _, crossover in on_sparse_path}}


def _sizes(directory):
    return {"bytes": sum(os.path.getsize(os.path.join(r, f))
                         for r, _, files in os.walk(directory) for f in files),
            "graph_bytes": os.path.getsize(os.path.join(directory, "saved_model.pb"))}


def write_dense(plain, directory, *, batch_size_hint, quantize):
    """Exporter `saved_model`: writes into `directory`; returns (it, sizes)."""
    del quantize
    info = _write_saved_model(plain, directory, batch_size_hint=batch_size_hint)
    return directory, {**info, **_sizes(directory)}


def write_sparse(plain, directory, *, batch_size_hint, quantize):
    """Exporter `sparse_saved_model`: as `write_dense`, sparse-encoded."""
    del quantize
    info = _write_saved_model(plain, directory, sparse=True, batch_size_hint=batch_size_hint)
    return directory, {**info, **_sizes(directory)}

