"""Model transforms: wrap, strip and the walk over masked weights.

Every transform returns a new model built by `keras.models.clone_model`
(models nested in models are transformed the same way) and copies
every weight value across; the model passed in is never modified.
"""

import collections
import inspect

import keras
import numpy as np
from keras.src.models.functional import Functional  # no public alias

from sniptf import registry
from sniptf.masked_layer import MaskedLayer

Entry = collections.namedtuple("Entry", "key layer path weight mask")


def _walk(model, prefix=(), seen=None):
    """Yields `(prefix, layer)` for every layer, descending into nested models."""
    seen = set() if seen is None else seen
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            yield from _walk(layer, prefix + (layer.name,), seen)
        else:
            yield prefix, layer


def masked_entries(model):
    """Every `(key, layer, path, weight, mask)` of the model's MaskedLayers."""
    entries = []
    for prefix, layer in _walk(model):
        if isinstance(layer, MaskedLayer):
            for path, weight, mask in layer.masked_weights():
                key = "/".join(prefix + (layer.name, path))
                entries.append(Entry(key, layer, path, weight, mask))
    return entries


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: model={model!r}")
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"Model '{model.name}' is a subclassed {type(model).__name__}, whose "
            "layer graph sniptf cannot clone. Use sniptf.MaskedLayer(layer) for "
            "its prunable layers inside the model's own code (then "
            "sniptf.saliency / sniptf.sparsity work on it), or build it as a "
            "Sequential or Functional model."
        )


def _default_clone(layer):
    return layer.__class__.from_config(layer.get_config())


def _effective_weights(masked):
    """The inner layer's weights with every masked weight replaced by W ⊙ C."""
    products = {id(w): w.numpy() * m.numpy() for _, w, m in masked.masked_weights()}
    return [products[id(v)] if id(v) in products else v.numpy()
            for v in masked.layer.weights]


def _copy_weights(old, new):
    if isinstance(new, MaskedLayer) and not isinstance(old, MaskedLayer):
        new.layer.set_weights(old.get_weights())
    elif isinstance(old, MaskedLayer) and not isinstance(new, MaskedLayer):
        new.set_weights(_effective_weights(old))
    else:
        new.set_weights(old.get_weights())


def _call(layer, *args, **kwargs):
    # A recorded call may carry arguments (mask=, training=) that the old
    # layer took and the new one does not; drop those.
    params = inspect.signature(layer.call).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return layer(*args, **kwargs)


def _input_like(tensor):
    # Keep the input layer's name (clone_model would use the tensor's name).
    layer = tensor._keras_history.operation
    return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=layer.name)


def _clone(model, clone_layer):
    _check_model(model)
    pairs = []

    def fn(layer):
        if isinstance(layer, keras.Model):
            return _clone(layer, clone_layer)  # nested models: same transform
        new = clone_layer(layer)
        pairs.append((layer, new))
        return new

    kwargs = {}
    if isinstance(model, Functional):
        kwargs = dict(call_function=_call,
                      input_tensors=keras.tree.map_structure(_input_like, model.input))
    new_model = keras.models.clone_model(model, clone_function=fn, **kwargs)
    for old, new in pairs:
        if isinstance(old, keras.layers.Layer) and old.built and old.weights:
            if not new.built:
                raise ValueError(
                    f"Layer '{old.name}' could not be rebuilt in the copy of model "
                    f"'{model.name}'; give the model an Input so its shapes are known.")
            _copy_weights(old, new)
    return new_model


def wrap(model, *, include_biases=False):
    """Returns a copy of `model` with every prunable layer in a `MaskedLayer`.

    Masks start at 1, so the copy computes what `model` computes. Layers
    that are already `MaskedLayer`s keep their masks.

    Args:
        model: a Sequential or Functional model (nested models are followed).
        include_biases: also mask biases (the authors' scoring includes them).

    Returns:
        A new `keras.Model`.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: `model` is subclassed (use `MaskedLayer` directly).

    Example:

    ```python
    wrapped = sniptf.wrap(model)
    scores = sniptf.saliency(wrapped, (x, y))
    ```
    """
    def clone_layer(layer):
        if isinstance(layer, MaskedLayer):
            return _default_clone(layer)
        if isinstance(layer, keras.layers.Layer) and registry.is_prunable(layer):
            return MaskedLayer(_default_clone(layer), mask_biases=include_biases)
        return _default_clone(layer)

    return _clone(model, clone_layer)


def strip(model):
    """Returns a copy of `model` with plain Keras layers and kernels W ⊙ C.

    The exact inverse of `wrap`: `strip(wrap(m))` has `m`'s layers, names
    and weights.

    Example:

    ```python
    plain = sniptf.strip(pruned)
    plain.save("pruned.keras")  # loads without sniptf installed
    ```
    """
    def clone_layer(layer):
        if isinstance(layer, MaskedLayer):
            return _default_clone(layer.layer)
        return _default_clone(layer)

    return _clone(model, clone_layer)


def plain_prunable_weights(model):
    """`(key, variable)` for prunable weights of layers that are not wrapped."""
    found = []
    for prefix, layer in _walk(model):
        if not isinstance(layer, MaskedLayer) and registry.is_prunable(layer) and layer.built:
            for path, var in registry.prunable_weights(layer):
                found.append(("/".join(prefix + (layer.name, path)), var))
    return found


def apply_masks(entries, masks):
    """Assigns boolean `masks` to `entries` and zeroes the pruned weights."""
    for entry, mask in zip(entries, masks):
        value = np.asarray(mask, dtype=entry.mask.dtype)
        entry.mask.assign(value)
        entry.weight.assign(entry.weight.numpy() * value)


def _owner(layer, path):
    *parents, attr = path.split(".")
    owner = layer
    for part in parents:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    return owner, attr


def redraw(entries, seed):
    """Re-initializes masked weights with their layers' initializers.

    Seeded initializers get `seed + i` for the i-th weight so the draw is
    reproducible; weights without an initializer attribute get Keras's
    default variance scaling.
    """
    for i, e in enumerate(entries):
        owner, attr = _owner(e.layer.layer, e.path)
        names = [f"{attr}_initializer"]
        if attr == "recurrent_kernel":
            names.append("recurrent_initializer")
        init = next((getattr(owner, n) for n in names if getattr(owner, n, None)), None)
        init = keras.initializers.get(init) if init is not None else keras.initializers.VarianceScaling()
        config = init.get_config()
        if "seed" in config:
            config["seed"] = seed + i
            init = init.__class__.from_config(config)
        e.weight.assign(init(tuple(e.weight.shape), dtype=e.weight.dtype))
