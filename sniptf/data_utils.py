"""Checks and iteration for the `(x, y)` batches sniptf scores on."""

import numpy as np
import tensorflow as tf


def shape_of(value):
    shapes = [tuple(getattr(v, "shape", ())) for v in tf.nest.flatten(value)]
    return shapes[0] if len(shapes) == 1 else shapes


def _unpack(element, index):
    if isinstance(element, dict):
        raise ValueError(
            f"Batch {index} is a dict with keys {sorted(element)}; sniptf needs "
            "(x, y) batches. For tfds, load with as_supervised=True.")
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise ValueError(
            f"Expected the dataset to yield (x, y) batches. Received: batch {index} "
            f"= {type(element).__name__} with structure {shape_of(element)}")
    return element[0], element[1]


def batches(dataset, num_batches, batch_size=None):
    """Yields up to `num_batches` `(x, y)` batches from a Dataset or an (x, y) pair."""
    if isinstance(dataset, tf.data.Dataset):
        for index, element in enumerate(dataset.take(num_batches)):
            yield _unpack(element, index)
        return
    if not isinstance(dataset, (tuple, list)) or len(dataset) != 2:
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset of (x, y) batches or an "
            f"(x, y) pair of arrays. Received: dataset={type(dataset).__name__}")
    x, y = dataset
    n = len(tf.nest.flatten(x)[0])
    if len(y) != n:
        raise ValueError(
            f"x and y disagree on the number of examples: {n} vs {len(y)}.")
    if n == 0:
        raise ValueError("The dataset yielded no batches; x and y are empty.")
    if batch_size is None:
        yield x, y
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an int >= 1. Received: batch_size={batch_size!r}")
    for index in range(min(num_batches, -(-n // batch_size))):
        sl = slice(index * batch_size, (index + 1) * batch_size)
        yield tf.nest.map_structure(lambda a: a[sl], x), y[sl]


def check_fits(model, x, y, index):
    """Raises a ValueError naming the shapes when batch `index` cannot fit `model`."""
    inputs = getattr(model, "inputs", None)
    try:
        expected = [tuple(t.shape) for t in inputs] if inputs else None
    except (AttributeError, ValueError):
        expected = None
    xs = tf.nest.flatten(x)
    if expected is not None and len(expected) == len(xs):
        for want, arr in zip(expected, xs):
            got = tuple(np.shape(arr))
            fits = len(got) == len(want) and all(
                w is None or w == g for w, g in zip(want[1:], got[1:]))
            if not fits:
                hint = (" The batch looks unbatched; call dataset.batch(n)."
                        if len(got) == len(want) - 1 else "")
                raise ValueError(
                    f"Batch {index} does not fit the model: x has shape {got}, "
                    f"the model expects {want}.{hint}")
    bx = np.shape(xs[0])[0] if np.ndim(xs[0]) else None
    by = np.shape(y)[0] if np.ndim(y) else None
    if bx is not None and by is not None and bx != by:
        raise ValueError(
            f"Batch {index} has {bx} inputs but {by} labels.")
