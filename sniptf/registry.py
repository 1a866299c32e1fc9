"""Which weights a layer has: one record per prunable class, open to users' layers.

Two tables drive every transform in sniptf, as jaxpruner keeps its
algorithms and distributions as records:

* ``_RECORDS``: layer class -> `LayerRecord` (its prunable weights, its
  biases, which are only masked when a caller asks for them, and the
  initializer attribute of each, used when weights are re-drawn);
* ``_CONTAINERS``: layer class -> names of attributes holding sub-layers
  (an RNN holds its cell, ``Bidirectional`` its two RNNs, ...).

A layer's prunable weights are found by walking containers down to the
registered leaves; each is named by its attribute path, e.g.
``"forward_layer.cell.recurrent_kernel"``.
"""

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """What sniptf knows about one prunable layer class.

    Attributes:
        layer_class: the registered class (subclasses inherit the record).
        weights: attribute names of the prunable weights.
        biases: attribute names of bias-like weights (masked on request).
        initializers: weight attribute -> attribute holding its initializer.
    """

    layer_class: type
    weights: tuple
    biases: tuple
    initializers: dict

    def initializer_attribute(self, weight):
        return self.initializers.get(weight, f"{weight}_initializer")


_RECORDS = {}
_CONTAINERS = {}

def _check_class(layer_class):
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(
            "Expected a subclass of keras.layers.Layer. "
            f"Received: layer_class={layer_class!r}"
        )


def _check_names(value, arg):
    if isinstance(value, str) or not all(isinstance(n, str) and n for n in value):
        raise TypeError(
            f"Expected `{arg}` to be a list of attribute names, e.g. ['kernel']. "
            f"Received: {arg}={value!r}"
        )
    return tuple(value)


def register_prunable(layer_class, weights, *, biases=(), initializers=None):
    """Declares which weights of `layer_class` sniptf may prune.

    Args:
        layer_class: a `keras.layers.Layer` subclass. Subclasses of it are
            covered too unless they are registered themselves.
        weights: attribute names of the prunable weights, e.g. `["kernel"]`.
        biases: attribute names of bias-like weights; they are masked only
            when a transform is asked to include biases.
        initializers: weight name -> name of the attribute holding its
            initializer, for `prune(reinitialize=True)`; default
            `"<weight>_initializer"`.

    Example:

    ```python
    sniptf.register_prunable(MyLayer, ["kernel"], biases=["bias"])
    ```
    """
    _check_class(layer_class)
    weights = _check_names(weights, "weights")
    biases = _check_names(biases, "biases")
    if not weights:
        raise ValueError(
            "Expected at least one prunable weight name. Received: weights=[]"
        )
    initializers = dict(initializers or {})
    unknown = sorted(set(initializers) - set(weights) - set(biases))
    if unknown:
        raise ValueError(
            f"`initializers` names weights that are not registered: {unknown}. "
            f"Received: initializers={initializers!r}")
    _CONTAINERS.pop(layer_class, None)
    _RECORDS[layer_class] = LayerRecord(layer_class, weights, biases, initializers)


def register_container(layer_class, sublayers):
    """Declares that `layer_class` holds prunable sub-layers in `sublayers`.

    An attribute may hold a layer or a list of layers.
    """
    _check_class(layer_class)
    sublayers = _check_names(sublayers, "sublayers")
    _RECORDS.pop(layer_class, None)
    _CONTAINERS[layer_class] = sublayers


def _lookup(table, layer):
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls]
    return None


def record(layer):
    """The `LayerRecord` of the nearest registered class, or None (also for containers)."""
    for cls in type(layer).__mro__:
        if cls in _RECORDS:
            return _RECORDS[cls]
        if cls in _CONTAINERS:
            return None
    return None


def _variable(layer, path, name):
    value = getattr(layer, name, None)
    if value is None:
        return None
    if not isinstance(value, keras.Variable):
        raise ValueError(
            f"Weight `{path}` of layer '{layer.name}' is not a variable "
            f"(got {type(value).__name__}); layers with LoRA or quantization "
            "enabled cannot be masked. Mask the layer before enabling them."
        )
    return value


def prunable_weights(layer, include_biases=False, _prefix=""):
    """Lists `(path, variable)` for every prunable weight of a built layer.

    Args:
        layer: a built Keras layer.
        include_biases: also list bias-like weights.

    Returns:
        A list of `(path, keras.Variable)` pairs in a fixed order.
    """
    leaf = record(layer)
    if leaf is not None:
        names = leaf.weights + (leaf.biases if include_biases else ())
        found = []
        for name in names:
            var = _variable(layer, _prefix + name, name)
            if var is not None:
                found.append((_prefix + name, var))
        return found
    subs = _lookup(_CONTAINERS, layer)
    found = []
    for attr in subs or ():
        value = getattr(layer, attr, None)
        children = value if isinstance(value, (list, tuple)) else [value]
        for i, child in enumerate(children):
            if not isinstance(child, keras.layers.Layer):
                continue
            sub = f"{attr}.{i}." if isinstance(value, (list, tuple)) else f"{attr}."
            found.extend(prunable_weights(child, include_biases, _prefix + sub))
    return found


def is_prunable(layer):
    """True if `layer`'s class (or a base class) is in the registry."""
    if isinstance(layer, keras.Model):
        return False
    return record(layer) is not None or _lookup(_CONTAINERS, layer) is not None


def supported_layers():
    """Names of the registered layer classes, sorted."""
    return sorted(c.__name__ for c in list(_RECORDS) + list(_CONTAINERS))


def owner_of(layer, path):
    """`(sub-layer, attribute)` that a weight path such as `"cell.cells.0.kernel"` names."""
    *parents, attr = path.split(".")
    owner = layer
    for part in parents:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    return owner, attr


_L = keras.layers
for _cls in (_L.Dense, _L.EinsumDense, _L.Conv1D, _L.Conv2D, _L.Conv3D,
             _L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose):
    register_prunable(_cls, ["kernel"], biases=["bias"])
for _cls in (_L.DepthwiseConv1D, _L.DepthwiseConv2D):
    register_prunable(_cls, ["kernel"], biases=["bias"],
                      initializers={"kernel": "depthwise_initializer"})
for _cls in (_L.SeparableConv1D, _L.SeparableConv2D):
    register_prunable(_cls, ["depthwise_kernel", "pointwise_kernel"], biases=["bias"],
                      initializers={"depthwise_kernel": "depthwise_initializer",
                                    "pointwise_kernel": "pointwise_initializer"})
register_prunable(_L.Embedding, ["embeddings"])
for _cls in (_L.SimpleRNNCell, _L.LSTMCell, _L.GRUCell):
    register_prunable(_cls, ["kernel", "recurrent_kernel"], biases=["bias"],
                      initializers={"recurrent_kernel": "recurrent_initializer"})
register_container(_L.RNN, ["cell"])
register_container(_L.StackedRNNCells, ["cells"])
register_container(_L.Bidirectional, ["forward_layer", "backward_layer"])
register_container(_L.TimeDistributed, ["layer"])
# the public properties (Keras >= 3.0); masks saved under the old private
# names load by position, so older files keep working (tests/data/)
register_container(_L.MultiHeadAttention,
                   ["query_dense", "key_dense", "value_dense", "output_dense"])
del _L, _cls
