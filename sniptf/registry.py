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
``"forward_layer.cell.recurrent_kernel"``. A layer whose class is in neither
table (a user's residual block, a KerasHub `TransformerEncoder`, a subclassed
model) is walked through the sub-layers it holds in its attributes, so
nothing needs registering for layers built from registered ones;
``register_container`` only narrows that walk for unusual cases.
"""

import dataclasses

import keras

from sniptf import _keras_compat


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
        """The layer attribute holding `weight`'s initializer (`<weight>_initializer` unless registered otherwise)."""
        return self.initializers.get(weight, f"{weight}_initializer")


_RECORDS = {}
_CONTAINERS = {}
# classes the walk does not enter: MaskedLayer masks its own weights
_OPAQUE = []


def _opaque(layer_class):
    """Marks `layer_class` as one whose weights the walk leaves to it (MaskedLayer)."""
    _OPAQUE.append(layer_class)

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


def _children(layer):
    """`(attribute path, sub-layer)` the walk enters for an unregistered or container layer."""
    attrs = _lookup(_CONTAINERS, layer)
    if attrs is not None:
        found = []
        for attr in attrs:
            found.extend(_keras_compat.layers_in(getattr(layer, attr, None), attr))
        return found
    if isinstance(layer, tuple(_OPAQUE)):
        return []
    return _keras_compat.held_sublayers(layer)


def prunable_weights(layer, include_biases=False, _prefix="", _seen=None):
    """Lists `(path, variable)` for every prunable weight of a built layer.

    Registered layers list their recorded weights; any other layer lists
    those of the sub-layers it holds (attributes, lists and dicts of layers,
    at any depth), each named by its attribute path
    (`"_self_attention_layer.query_dense.kernel"`). A sub-layer held twice
    is listed once, under its first path.

    Args:
        layer: a built Keras layer.
        include_biases: also list bias-like weights.

    Returns:
        A list of `(path, keras.Variable)` pairs in a fixed order.
    """
    _seen = set() if _seen is None else _seen
    if id(layer) in _seen:
        return []
    _seen.add(id(layer))
    leaf = record(layer)
    if leaf is not None:
        names = leaf.weights + (leaf.biases if include_biases else ())
        found = []
        for name in names:
            var = _variable(layer, _prefix + name, name)
            if var is not None:
                found.append((_prefix + name, var))
        return found
    found = []
    for path, child in _children(layer):
        found.extend(prunable_weights(child, include_biases, f"{_prefix}{path}.", _seen))
    return found


def is_registered(layer):
    """True if `layer`'s class (or a base class) is in either table."""
    return record(layer) is not None or _lookup(_CONTAINERS, layer) is not None


def is_prunable(layer):
    """True if `layer` has prunable weights: its class is registered, or it holds
    registered layers (custom blocks, subclassed models). Sequential and
    Functional models are not layers to wrap: the transforms walk into them."""
    if _keras_compat.is_graph_model(layer):
        return False
    if is_registered(layer):
        return True
    if isinstance(layer, tuple(_OPAQUE)):
        return False
    return bool(prunable_weights(layer))


def may_hold_prunable(layer, _seen=None):
    """True if `layer` is registered or holds a registered layer, built or not
    (its prunable weights may not exist yet)."""
    _seen = set() if _seen is None else _seen
    if id(layer) in _seen:
        return False
    _seen.add(id(layer))
    if is_registered(layer):
        return True
    return any(may_hold_prunable(child, _seen) for _, child in _children(layer))


def supported_layers():
    """Names of the registered layer classes, sorted."""
    return sorted(c.__name__ for c in list(_RECORDS) + list(_CONTAINERS))


def owner_of(layer, path):
    """`(sub-layer, attribute)` that a weight path such as `"cell.cells.0.kernel"` names."""
    *parents, attr = path.split(".")
    owner = layer
    for part in parents:
        if isinstance(owner, (list, tuple)):
            owner = owner[int(part)]
        elif isinstance(owner, dict):
            owner = owner[part]
        else:
            owner = getattr(owner, part)
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
