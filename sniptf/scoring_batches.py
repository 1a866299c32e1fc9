"""Checks and iteration for the batches sniptf scores on.

Every element shape `model.fit` takes from a `tf.data.Dataset` or arrays:
`x` (a tensor, tuple or dict), `(x,)`, `(x, y)` or `(x, y, sample_weight)`,
with `y` a tensor, tuple or dict — unpacked as Keras unpacks them
(`keras.utils.unpack_x_y_sample_weight`).
"""

import keras
import numpy as np
import tensorflow as tf


def shape_of(value):
    """The shape of a tensor, or the list of shapes of a structure of them (for messages)."""
    shapes = [tuple(getattr(v, "shape", ())) for v in tf.nest.flatten(value)]
    return shapes[0] if len(shapes) == 1 else shapes


def unpack(element):
    """`(x, y, sample_weight)` of one element, as `model.fit` reads it."""
    if isinstance(element, list):
        element = tuple(element)
    return keras.utils.unpack_x_y_sample_weight(element)


def _size(x):
    first = tf.nest.flatten(x)[0]
    return len(first) if np.ndim(first) else 0


def batches(dataset, num_batches, batch_size=None):
    """Yields up to `num_batches` `(x, y, sample_weight)` batches (y and sample_weight may be None).

    Args:
        dataset: a `tf.data.Dataset` of batches, or arrays: `x`, `(x, y)` or
            `(x, y, sample_weight)` (one batch, or batches of `batch_size`).
    """
    if isinstance(dataset, tf.data.Dataset):
        for element in dataset.take(num_batches):
            yield unpack(element)
        return
    if isinstance(dataset, (tuple, list)) and not 1 <= len(dataset) <= 3:
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset, or arrays as model.fit takes them: x, "
            f"(x, y) or (x, y, sample_weight). Received: a {type(dataset).__name__} of {len(dataset)} items")
    if not isinstance(dataset, (tuple, list, dict, np.ndarray, tf.Tensor)):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset, or arrays as model.fit takes them: x, "
            f"(x, y) or (x, y, sample_weight). Received: dataset={type(dataset).__name__}")
    x, y, sw = unpack(dataset)
    n = _size(x)
    for name, value in (("y", y), ("sample_weight", sw)):
        if value is not None:
            for part in tf.nest.flatten(value):
                if len(part) != n:
                    raise ValueError(
                        f"x and {name} disagree on the number of examples: {n} vs {len(part)}. "
                        f"Received: x with {n} examples, {name} with {len(part)}")
    if n == 0:
        raise ValueError("The dataset yielded no batches; the arrays are empty. "
                         f"Received: x of shape {shape_of(x)}")
    if batch_size is None:
        yield x, y, sw
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an int >= 1. Received: batch_size={batch_size!r}")
    cut = lambda value, sl: None if value is None else tf.nest.map_structure(lambda a: a[sl], value)
    for index in range(min(num_batches, -(-n // batch_size))):
        sl = slice(index * batch_size, (index + 1) * batch_size)
        yield cut(x, sl), cut(y, sl), cut(sw, sl)


def _shape(value):
    """A batch's or a `tf.TensorSpec`'s shape as a tuple (None where unknown)."""
    if isinstance(value, tf.TensorSpec):
        return tuple(value.shape) if value.shape.rank is not None else None
    return tuple(np.shape(value))


def check_fits(model, x, y, index):
    """Raises a ValueError naming the shapes when batch `index` (arrays, or a dataset's
    element spec) cannot fit `model`."""
    inputs = getattr(model, "inputs", None)
    try:
        expected = [tuple(t.shape) for t in inputs] if inputs else None
        names = [t.name for t in inputs] if inputs else None
    except (AttributeError, ValueError):
        expected = names = None
    if isinstance(x, dict):  # match by input name; other keys are the model's business
        if expected is None or set(x) != set(names):
            expected = None
        else:
            x = [x[name] for name in names]
    xs = tf.nest.flatten(x)
    if expected is not None and len(expected) == len(xs):
        for want, arr in zip(expected, xs):
            got = _shape(arr)
            if got is None:
                continue
            fits = len(got) == len(want) and all(
                w is None or g is None or w == g for w, g in zip(want[1:], got[1:]))
            if not fits:
                hint = (" The batch looks unbatched; call dataset.batch(n)."
                        if len(got) == len(want) - 1 else "")
                raise ValueError(
                    f"Batch {index} does not fit the model: the model expects x of shape "
                    f"{want}.{hint} Received: x of shape {got}")
    first = lambda v: (_shape(v) or (None,))[0] if _shape(v) != () else None
    bx = first(xs[0])
    for part in tf.nest.flatten(y) if y is not None else []:
        by = first(part)
        if bx is not None and by is not None and bx != by:
            raise ValueError(f"Batch {index} has {bx} inputs but {by} labels. "
                             f"Received: {bx} examples in x, {by} in y")
