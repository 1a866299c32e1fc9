"""`export`: a SavedModel of the stripped model, written atomically; `export_checkpoint`."""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import transform


def _input_signature(model):
    """The `serve` function's input spec: a graph model's inputs, else the shapes a
    subclassed model was built with."""
    if getattr(model, "inputs", None):
        spec = lambda t: tf.TensorSpec(t.shape, t.dtype, name=_keras_compat.input_layer_name(t))
        return keras.tree.map_structure(spec, model.input)
    config = model.get_build_config() or {}
    if "input_shape" not in config:
        raise ValueError(
            f"Model '{model.name}' has no known input shape to export; call it once on a "
            "batch (`model(x)`) or build it with a keras.Input.")
    return keras.tree.map_shape_structure(  # any batch size, as Keras's export allows
        lambda shape: tf.TensorSpec((None,) + tuple(shape)[1:], keras.backend.floatx()),
        config["input_shape"])


def _write_saved_model(model, directory):
    """A SavedModel with each variable stored once (Keras 3.15's `model.export`
    stores every variable twice: `variables/...` and `_all_variables/...`).

    The `serve` function calls the Keras model with every Keras variable read
    from the module's own TensorFlow variables (a `keras.StatelessScope`), so
    the SavedModel holds those and nothing of Keras or sniptf.
    """
    # a public AutoTrackable: its attributes are the SavedModel's children (a
    # tf.Module would not take `variables`, which Keras's exports have)
    root = tf.train.Checkpoint()
    copies = [tf.Variable(v.numpy(), trainable=v.trainable, name=v.name.replace("/", "_"))
              for v in model.variables]
    root.variables = copies
    root.trainable_variables = [v for v in copies if v.trainable]
    root.non_trainable_variables = [v for v in copies if not v.trainable]
    pairs = list(zip(model.variables, copies))

    @tf.function(input_signature=[_input_signature(model)])
    def serve(inputs):
        with keras.StatelessScope(state_mapping=pairs):
            return model(inputs, training=False)

    @tf.function(input_signature=serve.input_signature)
    def serving_default(inputs):
        out = keras.tree.flatten(serve(inputs))
        return {f"output_{i}": t for i, t in enumerate(out)}

    root.serve = serve
    tf.saved_model.save(root, directory, signatures={"serving_default": serving_default})


def export(model, path, *, overwrite=False):
    """Writes a SavedModel of `strip(model)` to `path`.

    The SavedModel has a `serve` endpoint (and `serving_default`, outputs
    named `output_0`, ...), loads with `tf.saved_model.load` and
    `keras.layers.TFSMLayer`, needs no sniptf, and stores each weight once
    (Keras 3.15's `model.export` stores every variable twice).
    It is written to a temporary directory beside `path` and moved into
    place, so a failure never leaves a half-written export.

    Args:
        model: a model, wrapped or plain, whose inputs have known shapes.
        path: the output directory.
        overwrite: replace an existing `path`.

    Returns:
        The stripped model that was exported.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.

    Example:

    ```python
    sniptf.export(pruned, "out/saved_model")
    reloaded = tf.saved_model.load("out/saved_model")
    ```
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"Export path exists: {path!r}. Pass overwrite=True or choose "
            "another path.")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    plain = transform.strip(model)
    tmp = tempfile.mkdtemp(prefix=".sniptf-export-", dir=parent)
    try:
        _write_saved_model(plain, tmp)
        if os.path.exists(path):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plain


def export_checkpoint(checkpoint_dir, output_dir, *, overwrite=False):
    """Exports a trained run's best model (`checkpoints/best.keras`) as a SavedModel.

    Args:
        checkpoint_dir: a `training.run` output directory, or its `checkpoints/`.
        output_dir: where the SavedModel goes (see `export`).

    Returns:
        The loaded best model.

    Raises:
        ValueError: no `best.keras` there.
        FileExistsError: `output_dir` exists and `overwrite` is False.
    """
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
    export(model, output_dir, overwrite=overwrite)
    return model
