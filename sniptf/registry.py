"""Which weights of a layer are prunable: a data table open to users' layers.

Two tables drive every transform in sniptf:

* ``_WEIGHTS``: layer class -> names of its prunable weights (and, separately,
  its biases, which are only masked when a caller asks for them).
* ``_CONTAINERS``: layer class -> names of attributes holding sub-layers
  (an RNN holds its cell, ``Bidirectional`` its two RNNs, ...).

A layer's prunable weights are found by walking containers down to the
registered leaves; each is named by its attribute path, e.g.
``"forward_layer.cell.recurrent_kernel"``.
"""

import keras

_WEIGHTS = {}
_BIASES = {}
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


def register_prunable(layer_class, weights, *, biases=()):
    """Declares which weights of `layer_class` sniptf may prune.

    Args:
        layer_class: a `keras.layers.Layer` subclass. Subclasses of it are
            covered too unless they are registered themselves.
        weights: attribute names of the prunable weights, e.g. `["kernel"]`.
        biases: attribute names of bias-like weights; they are masked only
            when a transform is asked to include biases.

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
    _CONTAINERS.pop(layer_class, None)
    _WEIGHTS[layer_class] = weights
    _BIASES[layer_class] = biases


def register_container(layer_class, sublayers):
    """Declares that `layer_class` holds prunable sub-layers in `sublayers`.

    An attribute may hold a layer or a list of layers.
    """
    _check_class(layer_class)
    sublayers = _check_names(sublayers, "sublayers")
    _WEIGHTS.pop(layer_class, None)
    _BIASES.pop(layer_class, None)
    _CONTAINERS[layer_class] = sublayers


def _lookup(table, layer):
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls]
    return None


def _leaf_entry(layer):
    """(weights, biases) of the nearest registered class, or None."""
    for cls in type(layer).__mro__:
        if cls in _WEIGHTS:
            return _WEIGHTS[cls], _BIASES[cls]
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
    entry = _leaf_entry(layer)
    if entry is not None:
        names = entry[0] + (entry[1] if include_biases else ())
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
    return _leaf_entry(layer) is not None or _lookup(_CONTAINERS, layer) is not None


def supported_layers():
    """Names of the registered layer classes, sorted."""
    return sorted(c.__name__ for c in list(_WEIGHTS) + list(_CONTAINERS))


_L = keras.layers
for _cls in (_L.Dense, _L.EinsumDense, _L.Conv1D, _L.Conv2D, _L.Conv3D,
             _L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose,
             _L.DepthwiseConv1D, _L.DepthwiseConv2D):
    register_prunable(_cls, ["kernel"], biases=["bias"])
for _cls in (_L.SeparableConv1D, _L.SeparableConv2D):
    register_prunable(_cls, ["depthwise_kernel", "pointwise_kernel"], biases=["bias"])
register_prunable(_L.Embedding, ["embeddings"])
for _cls in (_L.SimpleRNNCell, _L.LSTMCell, _L.GRUCell):
    register_prunable(_cls, ["kernel", "recurrent_kernel"], biases=["bias"])
register_container(_L.RNN, ["cell"])
register_container(_L.StackedRNNCells, ["cells"])
register_container(_L.Bidirectional, ["forward_layer", "backward_layer"])
register_container(_L.TimeDistributed, ["layer"])
register_container(_L.MultiHeadAttention,
                   ["_query_dense", "_key_dense", "_value_dense", "_output_dense"])
del _L, _cls
