"""`effective_sparsity`: the weights that lie on some input-to-output path, and the dead units.

A mask at 98-99% disconnects whole units: a unit none of whose kept inputs
depends on the input computes a constant, one none of whose kept outputs
reaches an output feeds nothing (Vysogorets & Kempe, JMLR 2023). A kept weight
is *effective* when its input end depends on the model's input and its output
end reaches an output.

How: on the stripped model (a kept weight is a non-zero entry of W ⊙ C), every
layer is replaced by its *connectivity map*: the layer's linear part with each
kernel replaced by its 0/1 pattern, no bias, no activation, batch-norm the
identity, max-pooling an average (any element of a window can be its
maximum). Propagating an all-ones input through those maps marks what depends
on the input (`alive`); propagating the outputs' ones back through their
gradients marks what reaches an output (`used`); a weight's gradient at `alive`
inputs and `used` outputs is non-zero exactly when it is effective. Layers
with no map (RNNs, a shared layer, a nested model, custom blocks) are taken
whole: all of their outputs alive if any input is, all inputs used if any
output is, every kept weight inside effective; the report names them.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import sparsity_report
from sniptf import transform

_ELEMENTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
                keras.layers.ELU, keras.layers.Softmax, keras.layers.Dropout,
                keras.layers.BatchNormalization, keras.layers.GaussianNoise,
                keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                keras.layers.Rescaling, keras.layers.Identity)
_RESHAPES = (keras.layers.Flatten, keras.layers.Reshape)
# channel-preserving spatial layers: their map is the layer itself on the 0/1 map
SPATIAL = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
            keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
            keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D)
MERGES = (keras.layers.Add, keras.layers.Average, keras.layers.Maximum, keras.layers.Subtract,
          keras.layers.Multiply)
_POOLS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.AveragePooling1D,
          keras.layers.AveragePooling2D, keras.layers.GlobalMaxPooling1D,
          keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling1D,
          keras.layers.GlobalAveragePooling2D)


@dataclasses.dataclass(frozen=True)
class DeadUnits:
    """Units (Dense units, conv output channels, embedding columns) of one layer that
    depend on no input (`constant`, a bias alone), reach no output (`unused`), or
    either (`dead`), of `total`."""

    name: str
    constant: int
    unused: int
    dead: int
    total: int


@dataclasses.dataclass(frozen=True)
class EffectiveSparsityReport(sparsity_report.SparsityReport):
    """A `SparsityReport` whose kept counts are the effective weights, with the
    nominal report beside it, the dead units per layer, and the layers taken whole
    (`whole`: `(layer name, why)`)."""

    nominal: sparsity_report.SparsityReport = None
    dead_units: tuple = ()
    whole: tuple = ()

    def to_dict(self):
        """As `SparsityReport.to_dict`, with `nominal`, `dead_units` and `whole`."""
        out = super().to_dict()
        out.update(nominal=self.nominal.to_dict(), dead_units=[dataclasses.asdict(d) for d in self.dead_units],
                   whole=[list(w) for w in self.whole])
        return out


def _pattern(variable):
    return tf.constant((np.asarray(variable.numpy()) != 0).astype(np.float32))


def _conv(layer, x, kernel):
    rank = len(kernel.shape) - 2
    strides = layer.strides if isinstance(layer.strides, (tuple, list)) else (layer.strides,) * rank
    dilation = layer.dilation_rate if isinstance(layer.dilation_rate, (tuple, list)) else (layer.dilation_rate,) * rank
    return tf.nn.convolution(x, kernel, strides=list(strides), padding=layer.padding.upper(),
                             dilations=list(dilation))


def _linear_map(layer):
    """`(fn(x, kernels), [kernel patterns], [kernel names])` for a layer with kernels,
    or None."""
    L = keras.layers
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)) and not isinstance(
            layer, (L.SeparableConv1D, L.SeparableConv2D, L.Conv1DTranspose, L.Conv2DTranspose,
                    L.Conv3DTranspose)) and layer.data_format == "channels_last" and layer.groups == 1 \
            and layer.padding in ("valid", "same"):  # causal: taken whole
        return (lambda x, k: _conv(layer, x, k[0])), [_pattern(layer.kernel)], ["kernel"]
    if isinstance(layer, L.Dense):
        return (lambda x, k: tf.tensordot(x, k[0], axes=[[-1], [0]])), [_pattern(layer.kernel)], ["kernel"]
    if isinstance(layer, L.DepthwiseConv2D) and layer.data_format == "channels_last":
        def depthwise(x, k):
            return tf.nn.depthwise_conv2d(x, k[0], strides=[1, *layer.strides, 1],
                                          padding=layer.padding.upper(), dilations=layer.dilation_rate)
        return depthwise, [_pattern(layer.kernel)], ["kernel"]
    return None


def _pool_map(layer):
    L = keras.layers
    keepdims = bool(getattr(layer, "keepdims", False))
    if isinstance(layer, (L.GlobalMaxPooling1D, L.GlobalAveragePooling1D)):
        return lambda x: tf.reduce_mean(x, axis=1, keepdims=keepdims)
    if isinstance(layer, (L.GlobalMaxPooling2D, L.GlobalAveragePooling2D)):
        return lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=keepdims)
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        return lambda x: tf.nn.avg_pool2d(x, layer.pool_size, layer.strides, layer.padding.upper())
    return lambda x: tf.nn.avg_pool1d(x, layer.pool_size, layer.strides, layer.padding.upper())


def _tensors(value):
    return [t for t in keras.tree.flatten(value)]


def effective_sparsity(model):
    """Counts only the kept weights that lie on some input-to-output path.

    Args:
        model: a Functional or Sequential model, wrapped or plain (built on
            `keras.Input`).

    Returns:
        An `EffectiveSparsityReport`: `.weights`, `.layers`, `.total` as in
        `sniptf.sparsity` but counting effective weights; `.nominal` (the
        `sniptf.sparsity` report), `.dead_units` (per layer with units: constant,
        unused, dead, total), `.whole` (layers taken whole, with why) and the
        masks' `.structure` (with `.broken`, `.padded`) as `sniptf.sparsity`.

    Raises:
        ValueError: a subclassed model (no layer graph), or no prunable layer.
    """
    transform.check_model(model)
    nominal = sparsity_report.sparsity(model)
    found = analyze(transform.strip(model))
    return _report(nominal, found.effective, found.dead_units, found.whole)


@dataclasses.dataclass(frozen=True)
class Connectivity:
    """What `analyze` finds on a plain model. `alive[id(t)]` / `used[id(t)]`: 0/1
    maps of shape `[1, *t.shape[1:]]` (depends on an input / reaches an output) for
    every tensor `t` of the graph; `effective[(layer, weight)]`: effective weight
    counts; `dead_units` and `whole` as in `EffectiveSparsityReport`."""

    alive: dict
    used: dict
    effective: dict
    dead_units: tuple
    whole: tuple


def analyze(plain):
    """The connectivity of a plain (stripped) Functional or Sequential model."""
    alive, whole, maps = {}, [], {}
    for t in _tensors(plain.inputs):
        alive[id(t)] = tf.ones([1] + list(t.shape[1:]), tf.float32)
    layers = [l for l in plain.layers if not isinstance(l, keras.layers.InputLayer)]
    for layer in layers:
        if not _keras_compat.is_called_once(layer):  # whole: every output alive, every input used
            whole.append((layer.name, "called more than once (shared)"))
            for _, outs in _keras_compat.call_tensors(layer):
                for t in outs:
                    alive[id(t)] = tf.ones([1] + list(t.shape[1:]), tf.float32)
            continue
        ins, outs = _tensors(layer.input), _tensors(layer.output)
        linear = _linear_map(layer)  # built once: the backward pass reuses it
        maps[layer.name] = (ins, outs, linear)
        xs = [alive.get(id(t)) for t in ins]
        if any(x is None for x in xs):
            xs = [tf.ones([1] + list(t.shape[1:])) if x is None else x for x, t in zip(xs, ins)]
        if linear is not None:
            fn, kernels, _ = linear
            alive[id(outs[0])] = tf.cast(fn(xs[0], kernels) > 0, tf.float32)
        elif isinstance(layer, keras.layers.Embedding):
            column = tf.cast(tf.reduce_any(_pattern(layer.embeddings) > 0, axis=0), tf.float32)
            alive[id(outs[0])] = tf.broadcast_to(column, [1] + list(outs[0].shape[1:]))
        elif isinstance(layer, _ELEMENTWISE):
            alive[id(outs[0])] = xs[0]
        elif isinstance(layer, _RESHAPES):
            alive[id(outs[0])] = tf.reshape(xs[0], [1] + list(outs[0].shape[1:]))
        elif isinstance(layer, _POOLS):
            alive[id(outs[0])] = tf.cast(_pool_map(layer)(xs[0]) > 0, tf.float32)
        elif isinstance(layer, SPATIAL):
            alive[id(outs[0])] = tf.cast(layer(xs[0]) > 0, tf.float32)
        elif isinstance(layer, MERGES):  # broadcasting: a squeeze-excite scale is [1, 1, C]
            total = xs[0]
            for x in xs[1:]:
                total = total + x
            alive[id(outs[0])] = tf.cast(total > 0, tf.float32)
        elif isinstance(layer, keras.layers.Concatenate):
            alive[id(outs[0])] = tf.concat(xs, axis=layer.axis)
        else:
            whole.append((layer.name, f"no connectivity map for {type(layer).__name__}"))
            any_alive = float(max(float(tf.reduce_max(x)) for x in xs))
            for t in outs:
                alive[id(t)] = tf.fill([1] + list(t.shape[1:]), any_alive)
    # backward: what reaches an output
    used = {id(t): tf.ones([1] + list(t.shape[1:]), tf.float32) for t in _tensors(plain.outputs)}
    effective, dead = {}, []
    for layer in reversed(layers):
        if layer.name not in maps:
            for ins, _ in _keras_compat.call_tensors(layer):
                for t in ins:
                    _accumulate(used, t, tf.ones([1] + list(t.shape[1:])))
            continue
        ins, outs, linear = maps[layer.name]
        ups = [used.get(id(t), tf.zeros([1] + list(t.shape[1:]))) for t in outs]
        xs = [tf.ones([1] + list(t.shape[1:])) for t in ins]
        if linear is not None:
            fn, kernels, names = linear
            with tf.GradientTape() as tape:
                tape.watch(xs[0])
                out = fn(xs[0], kernels)
                objective = tf.reduce_sum(out * ups[0])
            grad = tape.gradient(objective, xs[0])
            _accumulate(used, ins[0], tf.cast(grad > 0, tf.float32))
            x_alive = alive.get(id(ins[0]), xs[0])
            with tf.GradientTape() as tape:
                tape.watch(kernels)
                out = fn(x_alive, kernels)
                objective = tf.reduce_sum(out * ups[0])
            grads = tape.gradient(objective, kernels)
            for name, k, g in zip(names, kernels, grads):
                effective[(layer.name, name)] = int(np.count_nonzero((g.numpy() > 0) & (k.numpy() > 0)))
            out_alive = alive[id(outs[0])].numpy().reshape(-1, out.shape[-1]).max(axis=0) > 0
            out_used = ups[0].numpy().reshape(-1, out.shape[-1]).max(axis=0) > 0
            dead.append(DeadUnits(layer.name, int((~out_alive).sum()), int((~out_used).sum()),
                                  int((~(out_alive & out_used)).sum()), int(out.shape[-1])))
        elif isinstance(layer, keras.layers.Embedding):
            column_used = ups[0].numpy().reshape(-1, ups[0].shape[-1]).max(axis=0) > 0
            pattern = _pattern(layer.embeddings).numpy() > 0
            effective[(layer.name, "embeddings")] = int(np.count_nonzero(pattern & column_used[None, :]))
            column_alive = pattern.any(axis=0)
            dead.append(DeadUnits(layer.name, int((~column_alive).sum()), int((~column_used).sum()),
                                  int((~(column_alive & column_used)).sum()), int(pattern.shape[1])))
        elif isinstance(layer, _ELEMENTWISE):
            _accumulate(used, ins[0], ups[0])
        elif isinstance(layer, _RESHAPES):
            _accumulate(used, ins[0], tf.reshape(ups[0], [1] + list(ins[0].shape[1:])))
        elif isinstance(layer, _POOLS):
            with tf.GradientTape() as tape:
                tape.watch(xs[0])
                objective = tf.reduce_sum(_pool_map(layer)(xs[0]) * ups[0])
            _accumulate(used, ins[0], tf.cast(tape.gradient(objective, xs[0]) > 0, tf.float32))
        elif isinstance(layer, SPATIAL):
            with tf.GradientTape() as tape:
                tape.watch(xs[0])
                objective = tf.reduce_sum(layer(xs[0]) * ups[0])
            _accumulate(used, ins[0], tf.cast(tape.gradient(objective, xs[0]) > 0, tf.float32))
        elif isinstance(layer, MERGES):
            for t in ins:
                _accumulate(used, t, _reduce_to(ups[0], [1] + list(t.shape[1:])))
        elif isinstance(layer, keras.layers.Concatenate):
            sizes = [int(t.shape[layer.axis]) for t in ins]
            for t, part in zip(ins, tf.split(ups[0], sizes, axis=layer.axis)):
                _accumulate(used, t, part)
        else:
            any_used = float(max(float(tf.reduce_max(u)) for u in ups))
            for t in ins:
                _accumulate(used, t, tf.fill([1] + list(t.shape[1:]), any_used))
    for layer in layers:  # a tensor no layer reads reaches no output
        if layer.name in maps:
            for t in maps[layer.name][0] + maps[layer.name][1]:
                used.setdefault(id(t), tf.zeros([1] + list(t.shape[1:])))
    return Connectivity(alive, used, effective, tuple(dead[::-1]), tuple(whole))


def _reduce_to(value, shape):
    """A broadcast map taken back to `shape`: any position it was broadcast to."""
    axes = [i for i, (a, b) in enumerate(zip(value.shape, shape)) if b == 1 and a != 1]
    return tf.reduce_max(value, axis=axes, keepdims=True) if axes else value


def _accumulate(used, tensor, value):
    previous = used.get(id(tensor))
    used[id(tensor)] = value if previous is None else tf.maximum(previous, value)


def _report(nominal, effective, dead, whole):
    """The nominal counts with each weight mapped through `effective` (weights of
    layers taken whole keep their nominal count)."""
    weights = []
    for c in nominal.weights:
        layer, _, attribute = c.name.partition("/")
        key = (layer, attribute.split(".")[-1])
        weights.append(sparsity_report.Count(c.name, effective.get(key, c.kept), c.total))
    per_layer = {}
    for c in weights:
        layer = c.name.partition("/")[0]
        a, b = per_layer.get(layer, (0, 0))
        per_layer[layer] = (a + c.kept, b + c.total)
    layers = tuple(sparsity_report.Count(n, a, b) for n, (a, b) in per_layer.items())
    total = sparsity_report.Count("total", sum(c.kept for c in weights), sum(c.total for c in weights))
    return EffectiveSparsityReport(tuple(weights), layers, total, nominal.uncovered, nominal.structure,
                                   nominal.broken, nominal.padded, nominal=nominal, dead_units=dead, whole=whole)
