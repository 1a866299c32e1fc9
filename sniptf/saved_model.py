"""`export`: a SavedModel of the stripped model, written atomically; `export_checkpoint`."""

import os
import shutil
import tempfile

import keras

from sniptf import transform


def export(model, path, *, overwrite=False):
    """Writes a SavedModel of `strip(model)` to `path`.

    The SavedModel has a `serve` endpoint (and `serving_default`), loads with
    `tf.saved_model.load` and `keras.layers.TFSMLayer`, and needs no sniptf.
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
        plain.export(tmp, format="tf_saved_model", verbose=False)
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
