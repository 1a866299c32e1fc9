"""`export`: a SavedModel of the stripped model, written atomically; `export_checkpoint`."""

import contextlib
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from sniptf import _keras_compat
from sniptf import sparse_format
from sniptf import tflite
from sniptf import transform


def _input_signature(model):
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


def _serve_function(model):
    """The dense `serve` tf.function over `model` (what TFLite converts)."""
    @tf.function(input_signature=[_input_signature(model)])
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

    @tf.function(input_signature=[_input_signature(model)])
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


FORMATS = ("saved_model", "sparse_saved_model", "tflite")


def check_format(format):
    if format not in FORMATS:
        raise ValueError(f"Expected `format` to be one of {list(FORMATS)}. Received: format={format!r}")
    return format


def export(model, path, *, format="saved_model", overwrite=False, batch_size_hint=1,
           quantize=None):
    """Writes `strip(model)` for serving: a SavedModel, a sparse SavedModel or TFLite.

    Formats:

    * `"saved_model"` (default): an ordinary SavedModel with a `serve`
      endpoint (and `serving_default`, outputs `output_0`, ...); loads with
      `tf.saved_model.load` and `keras.layers.TFSMLayer`; each weight is
      stored once (Keras 3.15's `model.export` stores every variable twice).
    * `"sparse_saved_model"`: the same endpoints; every weight that is at
      least half zeros is stored as its kept values plus a bit mask or flat
      positions, whichever is smaller (`sniptf.sparse_format`). Layers compute
      with the dense kernel rebuilt once when the SavedModel is loaded, or,
      for `Dense` layers where a measurement at export time for a batch of
      `batch_size_hint` found it faster, with a sparse matmul for batches up
      to the measured crossover. Loads with TensorFlow alone.
    * `"tflite"`: a `.tflite` file (`path` is the file) from TensorFlow Lite's
      converter with `Optimize.EXPERIMENTAL_SPARSITY` (and dynamic-range
      quantization with `quantize="dynamic"`), checked against the Keras
      model on a batch before it is written.

    Every format is written to a temporary path beside `path` and moved into
    place, so a failure never leaves a half-written export.

    Args:
        model: a model, wrapped or plain, whose inputs have known shapes.
        path: the output directory (a file for `"tflite"`).
        format: one of the formats above.
        overwrite: replace an existing `path`.
        batch_size_hint: the batch size the sparse format is tuned for.
        quantize: None or `"dynamic"`; `"tflite"` only.

    Returns:
        The stripped model that was exported; its `export_info` attribute has
        the sizes: `{"format", "bytes", "weight_bytes", ...}`.

    Raises:
        ValueError: an unknown `format`, `quantize` for another format, a bad
            `batch_size_hint`, or a model TFLite cannot convert (naming the layer).
        FileExistsError: `path` exists and `overwrite` is False.

    Example:

    ```python
    sniptf.export(pruned, "out/saved_model")
    sniptf.export(pruned, "out/sparse", format="sparse_saved_model")
    reloaded = tf.saved_model.load("out/sparse")   # TensorFlow only
    ```
    """
    check_format(format)
    tflite.check_quantize(quantize)
    if quantize is not None and format != "tflite":
        raise ValueError(f"`quantize` applies to format='tflite' only. Received: "
                         f"format={format!r}, quantize={quantize!r}")
    if isinstance(batch_size_hint, bool) or not isinstance(batch_size_hint, int) or batch_size_hint < 1:
        raise ValueError(f"Expected `batch_size_hint` to be an int >= 1. "
                         f"Received: batch_size_hint={batch_size_hint!r}")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"Expected `path` to be a non-empty str or os.PathLike. Received: path={path!r}")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"Export path exists: {path!r}. Pass overwrite=True or choose "
            f"another path. Received: path={path!r}")
    plain = transform.strip(model)  # before anything is created: a bad model changes nothing
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sniptf-export-", dir=parent)
    try:
        info = {"format": format, "weight_bytes": sum(
            int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in plain.weights)}
        if format == "tflite":
            serve = _serve_function(plain)
            flatbuffer, error = tflite.convert(plain, serve, serve.input_signature[0], quantize)
            target = os.path.join(tmp, "model.tflite")
            with open(target, "wb") as f:
                f.write(flatbuffer)
            info.update(bytes=len(flatbuffer), max_abs_error=error, quantize=quantize)
        else:
            info.update(_write_saved_model(plain, tmp, sparse=format == "sparse_saved_model",
                                           batch_size_hint=batch_size_hint))
            info["bytes"] = sum(os.path.getsize(os.path.join(r, f))
                                for r, _, files in os.walk(tmp) for f in files)
            info["graph_bytes"] = os.path.getsize(os.path.join(tmp, "saved_model.pb"))
            target = tmp
        if os.path.exists(path):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.replace(target, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # empty after a tflite move
    plain.export_info = info
    return plain


def export_checkpoint(checkpoint_dir, output_dir, *, overwrite=False, format="saved_model"):
    """Exports a trained run's best model (`checkpoints/best.keras`) for serving.

    Args:
        checkpoint_dir: a `training.run` output directory, or its `checkpoints/`.
        output_dir: where the export goes (see `export`; a file for `"tflite"`).
        format: `"saved_model"`, `"sparse_saved_model"` or `"tflite"` (see `export`).

    Returns:
        The loaded best model.

    Raises:
        ValueError: no `best.keras` there.
        FileExistsError: `output_dir` exists and `overwrite` is False.
    """
    check_format(format)
    candidates = [os.path.join(checkpoint_dir, "best.keras"),
                  os.path.join(checkpoint_dir, "checkpoints", "best.keras")]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        raise ValueError(
            f"No best.keras in {checkpoint_dir!r} or its checkpoints/; pass the output_dir "
            "of a scripts/train.py run (or its checkpoints/ folder). "
            f"Received: checkpoint_dir={checkpoint_dir!r}")
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"Export path exists: {output_dir!r}. Pass overwrite=True or choose another path.")
    model = keras.models.load_model(path)
    export(model, output_dir, overwrite=overwrite, format=format)
    return model
