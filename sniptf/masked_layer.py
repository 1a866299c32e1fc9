"""`MaskedLayer`: a Keras 3 wrapper whose inner layer computes with W ⊙ C."""

import contextlib
import contextvars
import inspect
import weakref

import keras
import tensorflow as tf
from keras import ops
from sniptf import _keras_compat
from sniptf import registry


def _is_keras_layer(layer):
    return type(layer).__module__.startswith("keras.")


def _mask_name(path):
    return path.replace(".", "_") + "_mask"


# One byte per weight (bool: collectives, e.g. MultiWorkerMirrored's initial
# broadcast, take no uint8): a float32 mask would double a model's memory (issue 11).
# Files written with float32 masks load as before (Keras casts on assignment).
MASK_DTYPE = "bool"

# mask variable id -> a float tensor the next calls read instead of the mask:
# scoring differentiates with respect to these (a bool variable has no gradient)
_STAND_INS = contextvars.ContextVar("sniptf_mask_stand_ins", default=None)


@contextlib.contextmanager
def masks_read_as(pairs):
    """Inside, every `MaskedLayer` reads each mask variable of `pairs` (`(mask
    variable, float tensor)`) as its tensor: `tf.GradientTape` then gives ∂L/∂c.
    Set per thread (as `strategy.run` calls a replica's function)."""
    token = _STAND_INS.set({id(m): t for m, t in pairs})
    try:
        yield
    finally:
        _STAND_INS.reset(token)


# mask variable id -> (weak reference to the mask, its `DenseGradient`): set for the
# length of a `fit` by a method that grows connections from the dense gradient (RigL)
_DENSE_GRADIENTS = {}


class DenseGradient:
    """Where the backward pass writes ∂L/∂θ of one masked weight, θ = W ⊙ C.

    The one hook for methods that need the gradient of pruned connections too
    (RigL's growth): while `capture_dense_gradients` holds it, the `MaskedLayer`
    that owns the mask computes θ with a custom gradient that hands the weight
    ∂L/∂θ ⊙ C, exactly what it gets otherwise (training is unchanged), and, at
    the steps `due(step)` says (`step`: the optimizer step this backward pass
    makes), also writes ∂L/∂θ to `variable`. That gradient is taken at θ, so it
    does not depend on what a pruned raw weight holds. `variable` is on-read
    with SUM aggregation: each replica writes its own gradient of Keras's
    replica-scaled loss, and a read in cross-replica context (a callback) is
    the gradient of the global batch's loss. Calls of a layer shared within
    a step add up.
    """

    def __init__(self, variable, step, iterations, due):
        self.variable, self.step, self.iterations, self.due = variable, step, iterations, due

    def write(self, dy):
        step = ops.cast(self.iterations, "int64") + 1

        def write():
            value = tf.cast(tf.convert_to_tensor(dy), self.variable.dtype)
            fresh = tf.not_equal(self.step.read_value(), step)
            return tf.group(self.variable.assign(tf.where(fresh, value, self.variable.read_value() + value)),
                            self.step.assign(step))
        return tf.cond(self.due(step), write, tf.no_op)


def capture_dense_gradients(pairs):
    """From now on (until `release_dense_gradients`) the `MaskedLayer`s write ∂L/∂θ of each
    mask variable of `pairs` (`(mask variable, DenseGradient)`) into its `DenseGradient`;
    the next traced train step includes it (`model.make_train_function(force=True)`)."""
    for mask, sink in pairs:
        _DENSE_GRADIENTS[id(mask)] = (weakref.ref(mask), sink)


def release_dense_gradients(masks):
    """Ends `capture_dense_gradients` for `masks`."""
    for mask in masks:
        _DENSE_GRADIENTS.pop(id(mask), None)


def _dense_gradient_of(mask):
    ref, sink = _DENSE_GRADIENTS.get(id(mask), (None, None))
    return sink if ref is not None and ref() is mask else None


def _product_writing_gradient(value, mask, sink):
    """value ⊙ mask whose gradient to `value` is Mul's own (dy ⊙ mask), also handing
    dy = ∂L/∂θ to `sink`."""
    @tf.custom_gradient
    def product(v):
        def grad(dy):
            with tf.control_dependencies([sink.write(dy)]):
                return tf.convert_to_tensor(dy) * mask
        return v * mask, grad
    return product(value)


@keras.saving.register_keras_serializable(package="sniptf")
class MaskedLayer(keras.layers.Wrapper):
    """Wraps a layer so that its prunable weights are multiplied by fixed masks.

    Each prunable weight `W` of the inner layer (found through
    `sniptf.register_prunable`; RNNs through their cell: `kernel` and
    `recurrent_kernel`) gets a non-trainable mask variable `C` of the same
    shape (`bool`: one byte per weight), created in `build` and initialized
    to ones. The inner layer is
    called with every such `W` read as `W ⊙ C` (a `keras.StatelessScope`
    substitutes the product), so a pruned entry contributes nothing to the
    output and receives a zero gradient.

    Args:
        layer: the layer to wrap: `Dense`, `Conv1D/2D/3D`, `DepthwiseConv*`,
            `SeparableConv*`, `Conv*Transpose`, `EinsumDense`, `Embedding`,
            `SimpleRNN`, `LSTM`, `GRU`, `MultiHeadAttention`, `Bidirectional`
            or `TimeDistributed` of those, any class added with
            `sniptf.register_prunable`, or a custom layer or subclassed model
            that holds such layers (attributes, lists, dicts; any depth): every
            prunable weight inside is masked.
        mask_biases: also mask the layer's biases (the authors' code scores
            biases together with the weights).
        **kwargs: passed to `keras.layers.Layer`; the name defaults to the
            inner layer's, so `model.get_layer(name)` keeps working.

    Example:

    ```python
    layer = sniptf.MaskedLayer(keras.layers.Dense(10))
    y = layer(x)
    layer.masks["kernel"].assign(new_mask)
    ```
    """

    def __init__(self, layer, mask_biases=False, structure="unstructured", **kwargs):
        if not isinstance(layer, keras.layers.Layer) or _keras_compat.is_graph_model(layer):
            raise TypeError(
                "MaskedLayer wraps a Keras layer or a subclassed model; for a "
                "Sequential or Functional model use sniptf.wrap(model). "
                f"Received: layer={layer!r}"
            )
        if isinstance(layer, MaskedLayer):
            raise ValueError(
                f"Layer '{layer.name}' is already a MaskedLayer; wrap the inner "
                f"layer only once. Received: layer={layer!r}"
            )
        if not registry.may_hold_prunable(layer) and (layer.built or _is_keras_layer(layer)):
            # an unbuilt custom layer may create its sub-layers in build()
            raise ValueError(
                f"MaskedLayer cannot wrap a {type(layer).__name__}: it has no "
                "prunable weights and holds no layer that has. Supported layer "
                f"types: {', '.join(registry.supported_layers())} and layers or "
                "models built from them; add others with sniptf.register_prunable. "
                f"Received: layer={layer.name!r}"
            )
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.mask_biases = bool(mask_biases)
        self.structure = str(structure)  # what `prune` made the masks with (sniptf/structure.py)
        params = inspect.signature(layer.call).parameters
        self._inner_takes_training = "training" in params
        self._inner_takes_mask = "mask" in params
        self.supports_masking = layer.supports_masking
        self._mask_paths = []
        self._pairs = []

    def __call__(self, *args, **kwargs):
        if not self.built and (not self.layer.built
                               or not registry.prunable_weights(self.layer, self.mask_biases)):
            # Let the inner layer build itself from its own call signature:
            # ours only sees the first input's shape (MultiHeadAttention
            # needs query and value shapes, an RNN its initial state's), and a
            # custom layer's sub-layers are built only by calling it (when
            # loading, Keras builds the outer layer and leaves them unbuilt).
            # An inner layer whose weights all exist is not called twice.
            training = kwargs.pop("training", None)
            mask = kwargs.pop("mask", None)
            self.layer(*args, **self._inner_kwargs(training, mask, kwargs))
            if training is not None:
                kwargs["training"] = training
            if mask is not None:
                kwargs["mask"] = mask
        return super().__call__(*args, **kwargs)

    def _inner_kwargs(self, training, mask, kwargs):
        kwargs = dict(kwargs)
        if self._inner_takes_training and training is not None:
            kwargs["training"] = training
        if self._inner_takes_mask and mask is not None:
            kwargs["mask"] = mask
        return kwargs

    def build(self, input_shape=None, **shapes):
        if not self.layer.built:
            self.layer.build(input_shape, **shapes)
            self.layer.built = True
        pairs = registry.prunable_weights(self.layer, self.mask_biases)
        if not pairs and input_shape is not None:
            # A custom layer built by Keras's loader from its input shape has
            # unbuilt sub-layers; a symbolic call builds them (as Keras's own
            # build-by-run does for models).
            spec = lambda shape: keras.tree.map_shape_structure(keras.KerasTensor, shape)
            extra = {k[:-len("_shape")]: spec(v) for k, v in shapes.items() if k.endswith("_shape")}
            self.layer(spec(input_shape), **extra)
            pairs = registry.prunable_weights(self.layer, self.mask_biases)
        if not pairs:
            raise ValueError(
                f"Layer '{self.layer.name}' has no prunable weights once built "
                "(for example an RNN whose cell type is not registered, or a "
                "custom layer that holds no registered layer)."
            )
        for path, weight in pairs:
            mask = self.add_weight(
                name=_mask_name(path),
                shape=weight.shape,
                initializer="ones",
                dtype=MASK_DTYPE,
                trainable=False,
                autocast=False,
            )
            self._mask_paths.append(path)
            self._pairs.append((weight, mask))
        self.built = True

    @property
    def metrics(self):
        # A wrapped model's compiled metrics belong to its own training loop;
        # Keras leaves a nested model's out of the outer model's the same way.
        """The wrapped layer's metrics (none for a wrapped model: its compiled metrics belong to its own loop)."""
        return [] if isinstance(self.layer, keras.Model) else super().metrics

    @property
    def masks(self):
        """Dict: weight path (e.g. `"cell.kernel"`) -> its mask variable."""
        return {p: m for p, (_, m) in zip(self._mask_paths, self._pairs)}

    def masked_weights(self):
        """List of `(path, weight, mask)` triples in a fixed order."""
        return [(p, w, m) for p, (w, m) in zip(self._mask_paths, self._pairs)]

    def call(self, inputs, *args, training=None, mask=None, **kwargs):
        kwargs = self._inner_kwargs(training, mask, kwargs)
        outer = _keras_compat.get_stateless_scope()
        mapping = []
        stand_ins = _STAND_INS.get() or {}
        for weight, m in self._pairs:
            value = weight.value
            c = stand_ins.get(id(m))
            sink = _dense_gradient_of(m) if c is None else None
            factor = ops.cast(m.value if c is None else c, value.dtype)
            mapping.append((weight, value * factor if sink is None
                            else _product_writing_gradient(value, factor, sink)))
        scope = keras.StatelessScope(
            collect_losses=bool(outer and outer.collect_losses),
            initialize_variables=False,
        )
        # The products are mapped as they are, not converted to the variable's
        # dtype as `state_mapping=` would: under a float64 pass (SynFlow) they
        # stay float64 (an inner float32 copy would overflow; tested).
        products = {id(weight): product for weight, product in mapping}
        # Nested stateless calls (e.g. model.stateless_call) keep the outer
        # mapping for every variable we do not substitute.
        scope.state_mapping = {**(outer.state_mapping if outer is not None else {}), **products}
        with scope:
            outputs = self.layer(inputs, *args, **kwargs)
        self._carry_updates(scope, outer)
        return outputs

    def _carry_updates(self, scope, outer):
        # The scope swallows assignments the inner layer makes (RNG seed
        # state for dropout, running statistics); apply them as Keras would.
        substituted = {id(w) for w, _ in self._pairs}
        for var in self.layer.variables:
            if id(var) in substituted:
                continue
            new = scope.state_mapping.get(id(var))
            if new is None:
                continue
            if outer is not None:
                if outer.state_mapping.get(id(var)) is not new:
                    outer.add_update((var, new))
            elif not isinstance(new, keras.KerasTensor):
                var.assign(new)
        if outer is not None and outer.collect_losses:
            for loss in scope.losses:
                outer.add_loss(loss)

    def compute_output_spec(self, *args, training=None, mask=None, **kwargs):
        """The wrapped layer's output spec (masking changes no shape)."""
        return self.layer.compute_output_spec(*args, **self._inner_kwargs(training, mask, kwargs))

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        """The wrapped layer's Keras mask (a padding mask, not the pruning mask)."""
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        config = super().get_config()
        config["mask_biases"] = self.mask_biases
        if self.structure != "unstructured":
            config["structure"] = self.structure
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = config.pop("layer")
        try:
            layer = keras.saving.deserialize_keras_object(inner, custom_objects=custom_objects)
        except TypeError as e:
            name = inner.get("class_name", "?") if isinstance(inner, dict) else type(inner).__name__
            raise ValueError(
                f"Layer class {name} cannot be rebuilt from the config Keras saved for it ({e}). "
                "Keras cannot reload it either, pruned or not: its constructor does not take the "
                "config's keys (`trainable`, `dtype`, ...). Add **kwargs to its __init__ and pass "
                "them to super().__init__ (and a get_config returning its arguments) to use .keras "
                "files; sniptf.export (SavedModel, TFLite) serves the model without that.") from e
        return cls(layer, **config)


registry._opaque(MaskedLayer)


@keras.saving.register_keras_serializable(package="sniptf")
class MaskedModel(keras.Model):
    """A subclassed model with every prunable weight inside it masked.

    What `sniptf.wrap` and `sniptf.prune` return for a subclassed model,
    whose layer graph cannot be cloned: the model is called through one
    `MaskedLayer` (`.masked`), which masks every prunable weight the model
    holds, at any depth. `fit`, `evaluate`, `predict` and `.keras` saving
    work as for any model (the inner model's class must be serializable:
    `get_config` and `keras.saving.register_keras_serializable`).

    The inner model's own `train_step` or `compute_loss` overrides are not
    used (this model's are Keras's); a model that needs its own training
    step places `MaskedLayer`s in its code instead.

    Args:
        model: a subclassed `keras.Model`.
        mask_biases: also mask biases.
    """

    def __init__(self, model, mask_biases=False, structure="unstructured", **kwargs):
        kwargs.setdefault("name", model.name)
        super().__init__(**kwargs)
        self.masked = MaskedLayer(model, mask_biases=mask_biases, structure=structure)

    @property
    def model(self):
        """The inner (subclassed) model."""
        return self.masked.layer

    def call(self, inputs, training=None):
        return self.masked(inputs, training=training)

    def get_config(self):
        """Keras's model config (name, trainable, dtype) with the inner model and
        `mask_biases`."""
        config = super().get_config()
        config.update({"mask_biases": self.masked.mask_biases,
                       "model": keras.saving.serialize_keras_object(self.model)})
        if self.masked.structure != "unstructured":
            config["structure"] = self.masked.structure
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"),
                                                      custom_objects=custom_objects)
        return cls(model, **config)
