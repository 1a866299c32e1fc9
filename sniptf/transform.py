"""Model transforms: wrap, strip and the walk over masked weights.

Every transform returns a new model and copies every weight value across;
the model passed in is never modified. Sequential and Functional models are
rebuilt by `keras.models.clone_model` (models nested in them are transformed
the same way), each prunable layer in its own `MaskedLayer`; a custom layer
or subclassed model nested in them is wrapped whole, its `MaskedLayer`
masking every prunable weight it holds. A subclassed model at the top,
whose graph cannot be cloned, is rebuilt from its config inside a
`MaskedModel`.
"""

import collections
import inspect

import keras
import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import registry
from sniptf.masked_layer import MaskedLayer, MaskedModel

Entry = collections.namedtuple("Entry", "key layer_key layer path weight mask")
Entry.__doc__ = """One masked weight of a model.

`key` is `"<masked layer>/<path>"`, the name `saliency` and `sparsity` use:
the MaskedLayer's key (`"block/fc1"` inside a nested model `block`) and the
weight's attribute path inside it (`"cell.kernel"`). `layer_key` is the layer
the weight is counted under: the MaskedLayer's key, or for a custom layer
wrapped whole the sub-layer's (`"encoder_0/_self_attention_layer.query_dense"`)."""


def _descend(model):
    return _keras_compat.is_graph_model(model) or isinstance(model, MaskedModel)


def walk_layers(model, prefix=(), seen=None):
    """Yields `(layer_key, layer)` for every layer, descending into nested models.

    `layer_key` is the `/`-joined names of the enclosing models and the layer.
    Sequential, Functional and `MaskedModel`s are descended into; custom
    layers and subclassed models are yielded whole. A layer shared by several
    places is yielded once.
    """
    seen = set() if seen is None else seen
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if _descend(layer):
            yield from walk_layers(layer, prefix + (layer.name,), seen)
        else:
            yield "/".join(prefix + (layer.name,)), layer


def _masked_layers(layer_key, layer, seen):
    """`(layer_key, MaskedLayer)` for `layer` and the MaskedLayers held inside it
    (placed by a custom layer's or subclassed model's own code), keyed
    `<layer_key>/<attribute path>`."""
    if id(layer) in seen:
        return
    seen.add(id(layer))
    if isinstance(layer, MaskedLayer):
        yield layer_key, layer
        layer = layer.layer
    for path, sub in _keras_compat.held_sublayers(layer):
        yield from _masked_layers(f"{layer_key}/{path}", sub, seen)


def _row(layer_key, layer, path):
    """The layer a weight is counted under: `layer` if registered, else the sub-layer holding it."""
    if registry.is_registered(layer):
        return layer_key
    owner = path.rpartition(".")[0]
    return f"{layer_key}/{owner}" if owner else layer_key


def masked_entries(model):
    """Every masked weight of the model's MaskedLayers, as `Entry`s in model order."""
    check_keras_model(model)
    entries = []
    seen = set()
    for top_key, top in walk_layers(model):
        for layer_key, layer in _masked_layers(top_key, top, seen):
            for path, weight, mask in layer.masked_weights():
                entries.append(Entry(f"{layer_key}/{path}", _row(layer_key, layer.layer, path),
                                     layer, path, weight, mask))
    return entries


def check_keras_model(model):
    """A keras.Model, or TypeError naming what was passed."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: model={model!r}")


def check_model(model):
    """For transforms that need the layer graph: a Sequential or Functional model."""
    check_keras_model(model)
    if not _keras_compat.is_graph_model(model):
        raise ValueError(
            f"Model '{model.name}' is a subclassed {type(model).__name__}, whose "
            "layer graph sniptf cannot clone. Use sniptf.MaskedLayer(layer) for "
            "its prunable layers inside the model's own code (then "
            "sniptf.saliency / sniptf.sparsity work on it), or build it as a "
            "Sequential or Functional model."
        )


def _default_clone(layer):
    """A new instance of `layer`'s class with its configuration (weights not copied).

    `from_config` first; for a class whose constructor rejects its own config — the
    keras-io tutorial style, `def __init__(self, a, b): super().__init__()` with no
    `**kwargs`, where Keras's default `get_config` still adds `trainable` and `dtype` —
    the constructor is called with the config's entries it names, and name, trainable
    flag and dtype policy are set afterwards.
    """
    try:
        config = layer.get_config()
    except NotImplementedError as e:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied: it has no config "
            "(Keras records a layer's constructor arguments only when they are numbers, strings, "
            "booleans or None; it was likely given another object, e.g. a layer or a function). "
            "Give the class a `get_config` that returns its constructor arguments, or place "
            "sniptf.MaskedLayer around its prunable layers in its own code.") from e
    try:
        return layer.__class__.from_config(config)
    except TypeError as e:
        first = e
    parameters = inspect.signature(layer.__class__.__init__).parameters
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        try:
            new = layer.__class__(**{k: v for k, v in config.items() if k in parameters and k != "self"})
        except TypeError as e:
            first = e
        else:
            new.name = layer.name
            new.trainable = layer.trainable
            new.dtype_policy = layer.dtype_policy
            return new
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt from its config "
        f"({first}). Give the class a `get_config` that returns its constructor arguments "
        "(and pass **kwargs to super().__init__), or place sniptf.MaskedLayer around its "
        "prunable layers in its own code.") from first


def _rebuild(model, inner, outer, copy):
    """A subclassed `model` rebuilt as `outer(copy of inner)`, built and filled by `copy`."""
    new = outer(_default_clone(inner))
    if model.weights:
        config = model.get_build_config() or {}
        try:
            if getattr(inner, "inputs", None):  # Functional subclasses know their inputs
                new(keras.tree.map_structure(_input_like, inner.input))
            elif "input_shape" in config:  # a symbolic call, so that export sees a called model
                new(keras.tree.map_shape_structure(keras.KerasTensor, config["input_shape"]))
            elif config:
                new.build_from_config(config)
        except ValueError as e:
            if "is not a valid root scope name" not in str(e):
                raise
            # Keras names a class `_Net` "__net", which TensorFlow refuses as a scope
            raise ValueError(
                f"Model '{model.name}' ({type(model).__name__}) has a name TensorFlow refuses "
                "as a name scope (it must start with a letter, digit or '.'), so its copy cannot "
                "be called. Give it another name, e.g. `super().__init__(name=\"net\")` in its "
                f"constructor. Received: name={model.name!r}") from None
        if len(new.weights) < len(inner.weights):
            raise ValueError(
                f"Model '{model.name}' ({type(model).__name__}) could not be rebuilt from "
                "its config and input shape. Call it once on a batch of data "
                "(`model(x)`) before transforming it, or give it a `build` method.")
        new.built = True  # build_from_config creates a model's weights but leaves it unmarked
        copy(new)
    _copy_compile(model, new)
    return new


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


def _clone(model, clone_layer, _memo=None):
    check_model(model)
    pairs = []
    # one copy per layer across nested models: a layer a nested model shares
    # with its parent (GPT-2's tied token embedding) stays one layer
    memo = {} if _memo is None else _memo

    def fn(layer):
        if id(layer) in memo:
            return memo[id(layer)]
        if _keras_compat.is_graph_model(layer):
            new = _clone(layer, clone_layer, memo)  # nested models: same transform
        else:
            new = clone_layer(layer)
            pairs.append((layer, new))
        memo[id(layer)] = new
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


@_keras_compat.keeps_name_scopes
def wrap(model, *, include_biases=False):
    """Returns a copy of `model` with every prunable layer in a `MaskedLayer`.

    Masks start at 1, so the copy computes what `model` computes. Layers
    that are already `MaskedLayer`s keep their masks. A compiled model's copy
    is compiled the same way (losses, loss weights, metrics; a fresh
    optimizer of the same configuration), so scoring uses its training loss.

    Args:
        model: a Keras model: Sequential or Functional (nested models are
            followed, custom layers in them wrapped whole) or subclassed.
        include_biases: also mask biases (the authors' scoring includes them).

    Returns:
        A new `keras.Model`; for a subclassed model a `MaskedModel`.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: a subclassed model that cannot be rebuilt from its config.

    Example:

    ```python
    wrapped = sniptf.wrap(model)
    scores = sniptf.saliency(wrapped, (x, y))
    ```
    """
    check_keras_model(model)
    if not isinstance(include_biases, bool):
        raise TypeError(f"Expected `include_biases` to be a bool. Received: include_biases={include_biases!r}")
    if isinstance(model, MaskedModel):
        return _rebuild(model, model.model,
                        lambda c: MaskedModel(c, mask_biases=model.masked.mask_biases),
                        lambda new: new.set_weights(model.get_weights()))
    if not _keras_compat.is_graph_model(model):
        return _rebuild(model, model, lambda c: MaskedModel(c, mask_biases=include_biases),
                        lambda new: new.model.set_weights(model.get_weights()))

    def clone_layer(layer):
        if isinstance(layer, MaskedLayer):
            return _default_clone(layer)
        if isinstance(layer, keras.layers.Layer) and registry.is_prunable(layer):
            return MaskedLayer(_default_clone(layer), mask_biases=include_biases)
        return _default_clone(layer)

    return _clone(model, clone_layer)


@_keras_compat.keeps_name_scopes
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
    check_keras_model(model)
    if isinstance(model, MaskedModel):
        return _rebuild(model, model.model, lambda c: c,
                        lambda new: new.set_weights(_effective_weights(model.masked)))
    if not _keras_compat.is_graph_model(model):
        if masked_entries(model):
            raise ValueError(
                f"Model '{model.name}' is a subclassed {type(model).__name__} whose own "
                "code creates MaskedLayers; strip cannot take them out of its code. "
                "Save its weights, or build it without MaskedLayers and use "
                "sniptf.wrap / sniptf.prune, which return a strippable MaskedModel.")
        return _rebuild(model, model, lambda c: c, lambda new: new.set_weights(model.get_weights()))

    def clone_layer(layer):
        if isinstance(layer, MaskedLayer):
            return _default_clone(layer.layer)
        return _default_clone(layer)

    return _clone(model, clone_layer)


@_keras_compat.keeps_name_scopes
def copy_wrapped(model):
    """A wrapped copy of a pruned `model`: the same names, weights, masks and structure
    labels, and `(entry of model, entry of the copy)` pairs in model order.

    Raises:
        ValueError: `model` has no masks, or its copy masks other weights.
    """
    entries = masked_entries(model)
    if not entries:
        raise ValueError(f"Model '{model.name}' has no MaskedLayer: this takes a pruned "
                         "model (sniptf.prune or sniptf.wrap). Received: a model without masks")
    include_biases = any(e.path.split(".")[-1] == "bias" for e in entries)
    copy = wrap(strip(model), include_biases=include_biases)
    copied = {e.key: e for e in masked_entries(copy)}
    if set(copied) != {e.key for e in entries}:
        raise ValueError(f"Model '{model.name}' could not be copied with the same masked weights. "
                         f"Received: {sorted(e.key for e in entries)}, copied {sorted(copied)}")
    pairs = [(e, copied[e.key]) for e in entries]
    apply_masks([c for _, c in pairs], {c.key: e.mask.numpy() for e, c in pairs})
    for e, c in pairs:  # the label stays; the report says if a changed mask broke it
        c.layer.structure = e.layer.structure
    return copy, pairs


def _inner(layer):
    return layer.layer if isinstance(layer, MaskedLayer) else layer


def plain_prunable_weights(model):
    """`(layer_key, key, variable)` for prunable weights of layers that are not wrapped."""
    found = []
    for layer_key, layer in walk_layers(model):
        if not isinstance(layer, MaskedLayer) and registry.is_prunable(layer) and layer.built:
            for path, var in registry.prunable_weights(layer):
                found.append((_row(layer_key, layer, path), f"{layer_key}/{path}", var))
    return found


def uncovered_weights(model):
    """`(path, variable)` for the model's matrix weights (rank >= 2) that no mask
    covers and no registered layer holds: a weight a custom `call` uses directly
    (`ops.matmul(x, self.w)`), a position table, a layer type not in the registry."""
    entries = masked_entries(model)
    covered = {id(e.weight) for e in entries} | {id(e.mask) for e in entries}
    covered |= {id(v) for _, _, v in plain_prunable_weights(model)}
    covered |= {id(v) for _, layer in walk_layers(model)  # registered biases
                for _, v in registry.prunable_weights(_inner(layer), include_biases=True)}
    found, seen = [], set()
    for v in model.weights:
        if len(v.shape) >= 2 and id(v) not in covered and id(v) not in seen:
            seen.add(id(v))
            found.append((v.path, v))
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


def change_masks(entries, masks, optimizer=None, *, old=None):
    """Changes masks during training and keeps the invariant the during-training
    methods rely on: where a mask is 0, the raw weight and (given the `optimizer`)
    each of its slots (momentum, Adam's moments) are exactly 0.

    Only connections whose mask bit changes are touched (as google-research/rigl's
    `new_connections = mask2 & (mask == 0)`): a connection kept before and after
    keeps its value and slots, even when a method dropped and regrew it in one
    update; a removed one (1 -> 0) and a new one (0 -> 1) are set to 0, slots too.

    Args:
        entries: `masked_entries` of the model.
        masks: boolean arrays, a dict by entry key or a list in the order of `entries`.
        optimizer: the model's optimizer (None: not built yet, no slots).
        old: the current masks as boolean arrays in the order of `entries`, if the
            caller holds them (not read again).

    Returns:
        `(removed, added)`: boolean arrays per entry, the bits that went 1 -> 0 and 0 -> 1.
    """
    if not isinstance(masks, dict):
        masks = dict(zip((e.key for e in entries), masks))
    missing = [e.key for e in entries if e.key not in masks]
    if missing:
        raise ValueError(f"No mask given for {missing}. Received masks for: {sorted(masks)}")
    removed, added = [], []
    for i, entry in enumerate(entries):
        new = np.asarray(masks[entry.key]).astype(bool, copy=False)
        before = mask_bits(entry) if old is None else old[i]
        removed.append(before & ~new)
        added.append(new & ~before)
        if not (removed[-1].any() or added[-1].any()):
            continue  # this tensor's mask is unchanged: nothing to write
        _mask_writer(entry, optimizer)(new, before & new)
    return removed, added


def _mask_writer(entry, optimizer):
    """One traced function per masked weight (and optimizer) that writes a new mask and
    zeroes the weight and its slots off `stay`: one call instead of a dozen eager ops."""
    writers = entry.layer.__dict__.setdefault("_sniptf_mask_writers", {})  # untracked by Keras
    slots = list(_keras_compat.optimizer_slots(optimizer, entry.weight)) if optimizer is not None else []
    variables = [entry.weight, *slots]
    key = (entry.path, tuple(id(v) for v in variables))  # live: the writer holds them
    if key not in writers:
        for old in [k for k in writers if k[0] == entry.path]:  # another optimizer's: let its slots go
            del writers[old]
        mask = entry.mask

        @tf.function(autograph=False)
        def write(new, stay):
            mask.assign(tf.cast(new, mask.dtype))
            for variable in variables:  # computed and written by TF: no copy through numpy
                variable.assign(tf.where(stay, variable.value, tf.zeros((), variable.dtype)))
        writers[key] = write
    return writers[key]


def set_structure(model, structure):
    """Records on every MaskedLayer of `model` the structure its masks were made with
    (`sniptf/structure.py`; kept in the layer's config, so in `.keras` files)."""
    for entry in masked_entries(model):
        entry.layer.structure = str(structure)


def mask_bits(entry):
    """An entry's mask as a boolean array."""
    values = entry.mask.numpy()
    return values if values.dtype == bool else values.astype(bool)


def zero_pruned(entries, optimizer=None):
    """Sets every raw weight (and, given the `optimizer`, each of its slots) where its mask is
    0 to exactly 0: the invariant `change_masks` keeps, enforced on a model that may not hold
    it (weights assigned by hand, loaded from elsewhere)."""
    for entry in entries:
        keep = mask_bits(entry)
        variables = [entry.weight] + (list(_keras_compat.optimizer_slots(optimizer, entry.weight))
                                      if optimizer is not None else [])
        for variable in variables:
            values = variable.numpy()
            if np.any(values[~keep]):
                variable.assign(np.where(keep, values, 0).astype(values.dtype))


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
