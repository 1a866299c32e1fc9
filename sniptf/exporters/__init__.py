"""Export formats, one module each, and the table that names them.

`export(model, path, format=...)` strips the model, hands it to the format's
writer in a temporary directory beside `path`, and moves what it wrote into
place, so a failure never leaves a half-written export. A new format is one
module with a writer and one row of `EXPORTERS`:

    write(plain, directory, *, batch_size_hint, quantize) -> (written path, info)

where `plain` is the stripped model, `directory` an empty temporary directory,
the written path a file or directory inside it, and `info` a dict of sizes
(at least `"bytes"`).
"""

import dataclasses
import os
import shutil
import tempfile

import keras
import numpy as np

from sniptf import compaction
from sniptf import transform
from sniptf.exporters import saved_model
from sniptf.exporters import tflite


@dataclasses.dataclass(frozen=True)
class Exporter:
    """A format: its writer and the options it takes beyond `batch_size_hint`."""

    name: str
    write: object
    options: tuple = ()


EXPORTERS = {e.name: e for e in (
    Exporter("saved_model", saved_model.write_dense),
    Exporter("sparse_saved_model", saved_model.write_sparse),
    Exporter("tflite", tflite.write, options=("quantize",)),
)}
FORMATS = tuple(EXPORTERS)


def check_format(format):
    """Validates an export `format`: a name in `EXPORTERS`."""
    if format not in EXPORTERS:
        raise ValueError(f"Expected `format` to be one of {list(FORMATS)}. Received: format={format!r}")
    return format


def export(model, path, *, format="saved_model", overwrite=False, batch_size_hint=1,
           quantize=None, compact=False):
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
        compact: remove the dead units first (`sniptf.compact`): a smaller dense
            model with the same outputs, then the format.

    Returns:
        The stripped (or compacted) model that was exported; its `export_info` attribute has
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
    exporter = EXPORTERS[check_format(format)]
    tflite.check_quantize(quantize)
    if quantize is not None and "quantize" not in exporter.options:
        takes = [name for name, e in EXPORTERS.items() if "quantize" in e.options]
        raise ValueError(f"`quantize` applies to format={takes[0]!r} only. Received: "
                         f"format={format!r}, quantize={quantize!r}")
    if isinstance(batch_size_hint, bool) or not isinstance(batch_size_hint, int) or batch_size_hint < 1:
        raise ValueError(f"Expected `batch_size_hint` to be an int >= 1. "
                         f"Received: batch_size_hint={batch_size_hint!r}")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"Expected `path` to be a non-empty str or os.PathLike. Received: path={path!r}")
    if not isinstance(compact, bool):
        raise TypeError(f"Expected `compact` to be True or False. Received: compact={compact!r}")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"Export path exists: {path!r}. Pass overwrite=True or choose "
            f"another path. Received: path={path!r}")
    # before anything is created: a bad model changes nothing
    plain = compaction.compact(model) if compact else transform.strip(model)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sniptf-export-", dir=parent)
    try:
        info = {"format": format, "weight_bytes": sum(
            int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in plain.weights)}
        target, written = exporter.write(plain, tmp, batch_size_hint=batch_size_hint,
                                         quantize=quantize)
        info.update(written)
        if os.path.exists(path):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.replace(target, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # empty after a tflite move
    plain.export_info = info
    return plain


def export_checkpoint(checkpoint_dir, output_dir, *, overwrite=False, format="saved_model", compact=False):
    """Exports a trained run's best model (`checkpoints/best.keras`) for serving.

    Args:
        checkpoint_dir: a `training.run` output directory, or its `checkpoints/`.
        output_dir: where the export goes (see `export`; a file for `"tflite"`).
        format: `"saved_model"`, `"sparse_saved_model"` or `"tflite"` (see `export`).
        compact: remove the dead units first (see `export`).

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
    export(model, output_dir, overwrite=overwrite, format=format, compact=compact)
    return model
