"""Model transforms: wrap, strip and the walk over masked weights.

Every transform returns a new model built by `keras.models.clone_model`
(models nested in models are transformed the same way) and copies
every weight value across; the model passed in is never modified.
"""

import collections
import inspect

import keras
import numpy as np

from sniptf import _keras_compat
from sniptf import registry
from sniptf.masked_layer import MaskedLayer

Entry = collections.namedtuple("Entry", "key layer_key layer path weight mask")
Entry.__doc__ = """One masked weight of a model.

`layer_key` names its layer (`"block/fc1"` inside a nested model `block`),
`path` the weight inside the layer (`"cell.kernel"`), and `key` is
`"<layer_key>/<path>"`, the name `saliency` and `sparsity` use."""


def walk_layers(model, prefix=(), seen=None):
    """Yields `(layer_key, layer)` for every layer, descending into nested models.

    `layer_key` is the `/`-joined names of the enclosing models and the layer.
    A layer shared by several places is yielded once.
    """
    seen = set() if seen is None else seen
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, prefix + (layer.name,), seen)
        else:
            yield "/".join(prefix + (layer.name,)), layer


def masked_entries(model):
    """Every masked weight of the model's MaskedLayers, as `Entry`s in model order."""
    entries = []
    for layer_key, layer in walk_layers(model):
        if isinstance(layer, MaskedLayer):
            for path, weight, mask in layer.masked_weights():
                entries.append(Entry(f"{layer_key}/{path}", layer_key, layer, path, weight, mask))
    return entries


def check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: model={model!r}")
    if not _keras_compat.is_graph_model(model):
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
    return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype,
                       name=_keras_compat.input_layer_name(tensor))


def _clone(model, clone_layer):
    check_model(model)
    pairs = []

    def fn(layer):
        if isinstance(layer, keras.Model):
            return _clone(layer, clone_layer)  # nested models: same transform
        new = clone_layer(layer)
        pairs.append((layer, new))
        return new

    kwargs = {}
    if _keras_compat.is_functional(model):
        kwargs = dict(call_function=_call,
                      input_tensors=keras.tree.map_structure(_input_like, model.input))
    new_model = keras.models.clone_model(model, clone_function=fn, **kwargs)
    _copy_compile(model, new_model)
    for old, new in pairs:
        if isinstance(old, keras.layers.Layer) and old.built and old.weights:
            if not new.built:
                raise ValueError(
                    f"Layer '{old.name}' could not be rebuilt in the copy of model "
                    f"'{model.name}'; give the model an Input so its shapes are known.")
            _copy_weights(old, new)
    return new_model


def _fresh(obj):
    """A new instance from `obj`'s config (optimizers, metrics), or `obj` itself."""
    if isinstance(obj, (keras.optimizers.Optimizer, keras.metrics.Metric)):
        return obj.__class__.from_config(obj.get_config())
    return obj


def _copy_compile(source, target):
    """Compiles `target` as `source` was: same losses, loss weights and metrics, and a
    fresh optimizer of the same configuration (no state is shared)."""
    args = _keras_compat.compile_arguments(source)
    if args is None:
        return
    args["optimizer"] = _fresh(args.get("optimizer"))
    for name in ("metrics", "weighted_metrics"):
        if args.get(name) is not None:
            args[name] = keras.tree.map_structure(_fresh, args[name])
    target.compile(**args)


def wrap(model, *, include_biases=False):
    """Returns a copy of `model` with every prunable layer in a `MaskedLayer`.

    Masks start at 1, so the copy computes what `model` computes. Layers
    that are already `MaskedLayer`s keep their masks. A compiled model's copy
    is compiled the same way (losses, loss weights, metrics; a fresh
    optimizer of the same configuration), so scoring uses its training loss.

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
    """`(layer_key, key, variable)` for prunable weights of layers that are not wrapped."""
    found = []
    for layer_key, layer in walk_layers(model):
        if not isinstance(layer, MaskedLayer) and registry.is_prunable(layer) and layer.built:
            for path, var in registry.prunable_weights(layer):
                found.append((layer_key, f"{layer_key}/{path}", var))
    return found


def apply_masks(entries, masks):
    """Assigns boolean `masks` (a dict by entry key) and zeroes the pruned weights.

    A list in the order of `entries` is accepted too.
    """
    if not isinstance(masks, dict):
        masks = dict(zip((e.key for e in entries), masks))
    missing = [e.key for e in entries if e.key not in masks]
    if missing:
        raise ValueError(f"No mask given for {missing}. Received masks for: {sorted(masks)}")
    for entry in entries:
        value = np.asarray(masks[entry.key], dtype=entry.mask.dtype)
        entry.mask.assign(value)
        entry.weight.assign(entry.weight.numpy() * value)


def redraw(entries, seed):
    """Re-initializes masked weights with their layers' initializers.

    The initializer is the attribute the layer's `registry.LayerRecord` names
    (e.g. `depthwise_initializer` for a depthwise kernel). Seeded
    initializers get `seed + i` for the i-th weight so the draw is
    reproducible; weights without an initializer attribute get Keras's
    default variance scaling.
    """
    for i, e in enumerate(entries):
        owner, attr = registry.owner_of(e.layer.layer, e.path)
        record = registry.record(owner)
        name = record.initializer_attribute(attr) if record else f"{attr}_initializer"
        init = getattr(owner, name, None)
        init = keras.initializers.get(init) if init is not None else keras.initializers.VarianceScaling()
        config = init.get_config()
        if "seed" in config:
            config["seed"] = seed + i
            init = init.__class__.from_config(config)
        e.weight.assign(init(tuple(e.weight.shape), dtype=e.weight.dtype))
