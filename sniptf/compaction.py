"""`compact`: the dead units of a pruned model removed, leaving a smaller dense model.

A unit (a Dense unit, a conv output channel, an embedding column) that depends
on no input computes a constant, and one that reaches no output feeds nothing
(`sniptf.effective_sparsity` finds both). Removing them gives an ordinary Keras
model with fewer units and no sparse op, faster on every runtime. The model's
input and output shapes stay as they were:
- every output unit is kept;
- input features no output reads (pixels after a Flatten included) are dropped
  by a gather (`keras.ops.take`) inside the model;
- a constant unit's value, through the next layer's weights, is added to that
  layer's bias, so the outputs equal `strip(model)`'s up to float rounding.

How: every tensor of the stripped graph gets a set of dropped channels (its last
axis). Units start dropped when dead; the constraints between layers then only
ever undrop (a fixed point): a channel crosses an elementwise layer, a pooling,
a residual add or a concat as itself; a layer taken whole (an RNN, a shared or
custom layer, a softmax across channels) needs all of its inputs; a constant
channel stays when its value cannot be folded exactly (it varies across
positions, or a SAME-padded conv reads it, where its padding is not that
constant). Then the graph is rebuilt with every weight sliced to the kept
channels.
"""

import dataclasses

import keras
import numpy as np

from sniptf import _keras_compat
from sniptf import effective_sparsity_report
from sniptf import transform

L = keras.layers
_UNITS = {L.Dense: "units", L.Conv1D: "filters", L.Conv2D: "filters", L.Conv3D: "filters",
          L.Embedding: "output_dim"}
_NOT_ELEMENTWISE = ("softmax", "log_softmax")
_PASS = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.GaussianNoise, L.SpatialDropout1D,
         L.SpatialDropout2D, L.Identity, L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D,
         L.AveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalAveragePooling1D,
         L.GlobalAveragePooling2D, L.BatchNormalization, L.Rescaling, *effective_sparsity_report.SPATIAL)


@dataclasses.dataclass(frozen=True)
class CompactionReport:
    """What `compact` did: `units` per sliced layer `(name, before, after)`,
    `whole` the layers it left as they were `(name, why)`, and the parameter
    counts of the stripped and the compacted model."""

    units: tuple
    whole: tuple
    parameters_before: int
    parameters_after: int

    def to_dict(self):
        """A JSON-ready dict."""
        return {"units": [list(u) for u in self.units], "whole": [list(w) for w in self.whole],
                "parameters_before": self.parameters_before, "parameters_after": self.parameters_after}


def _kind(layer):
    """How a layer's channels are handled: 'units', 'depthwise', 'pass', 'merge',
    'concat', 'flatten', or 'whole' (with why)."""
    if not _keras_compat.is_called_once(layer):
        return "whole", "called more than once (shared): every call keeps its channels"
    if type(layer) in _UNITS and getattr(layer, "data_format", "channels_last") == "channels_last" \
            and getattr(layer, "groups", 1) == 1:
        return "units", None
    if type(layer) is L.DepthwiseConv2D and layer.data_format == "channels_last":
        return "depthwise", None
    if isinstance(layer, L.BatchNormalization) and layer.axis not in (-1, len(layer.input.shape) - 1):
        return "whole", "a BatchNormalization over another axis than the last"
    if isinstance(layer, L.Rescaling) and (np.ndim(layer.scale) or np.ndim(layer.offset)):
        return "whole", "a Rescaling with per-channel factors"
    if isinstance(layer, L.Activation) and _activation_name(layer) in _NOT_ELEMENTWISE:
        return "whole", f"{_activation_name(layer)} mixes the channels"
    if isinstance(layer, _PASS) and getattr(layer, "data_format", "channels_last") == "channels_last":
        return "pass", None
    if isinstance(layer, effective_sparsity_report.MERGES):
        if len({t.shape[-1] for t in _tensors(layer.input)}) > 1:
            return "whole", "a merge broadcasting across channels"
        return "merge", None
    if isinstance(layer, L.Reshape) and layer.output.shape[-1] == layer.input.shape[-1]:
        return "pass", None  # the channel axis kept whole (a squeeze-excite [C] -> [1, 1, C])
    if isinstance(layer, L.Concatenate):
        return ("concat", None) if layer.axis in (-1, len(layer.output.shape) - 1) else ("merge", None)
    if isinstance(layer, L.Flatten):
        return "flatten", None
    if isinstance(layer, L.Softmax):
        return "whole", "softmax mixes the channels"
    return "whole", f"compact cannot slice a {type(layer).__name__}"


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _channels(value_map):
    """A `[1, ..., C]` 0/1 map reduced to one bool per channel (any position)."""
    array = np.asarray(value_map)
    return array.reshape(-1, array.shape[-1]).max(axis=0) > 0


def _tensors(value):
    return list(keras.tree.flatten(value))


def _nodes(plain, layers):
    """`(layer, input tensors, output tensors)` for every call of every layer, in an
    order where each call's inputs come first (a shared layer has one per call)."""
    calls = []
    for layer in layers:
        if _keras_compat.is_called_once(layer):
            calls.append((layer, _tensors(layer.input), _tensors(layer.output)))
        else:
            calls += [(layer, ins, outs) for ins, outs in _keras_compat.call_tensors(layer)]
    ready = {id(t) for t in _tensors(plain.inputs)}
    ordered = []
    while calls:
        left = [c for c in calls if not all(id(t) in ready for t in c[1])]
        done = [c for c in calls if all(id(t) in ready for t in c[1])]
        if not done:
            raise ValueError(f"compact cannot order the calls of model '{plain.name}'. Received: "
                             f"layers {[c[0].name for c in left][:5]} whose inputs never come")
        for c in done:
            ordered.append(c)
            ready.update(id(t) for t in c[2])
        calls = left
    return ordered


def compact(model, *, return_report=False):
    """A new plain Keras model with `model`'s dead units removed.

    Dense units, conv output channels and embedding columns that are dead
    (`sniptf.effective_sparsity`: constant, or reaching no output) are removed
    and every following layer's weights sliced to match; the outputs equal
    `sniptf.strip(model)`'s up to float rounding, for every input. Layers it
    cannot slice (RNNs, custom blocks, nested models, shared layers, softmax
    across channels) are left whole, and the channels they read are kept.

    Example:

    ```python
    pruned = sniptf.prune(model, batch, kappa=0.01)
    ...  # train
    small, report = sniptf.compact(pruned, return_report=True)
    print(report.parameters_before, "->", report.parameters_after)
    small.save("small.keras")  # loads without sniptf
    ```

    Args:
        model: a Functional or Sequential model, wrapped (pruned) or plain,
            built on inputs of fixed shape (the batch axis aside).
        return_report: also return a `CompactionReport`.

    Returns:
        The compacted `keras.Model` (uncompiled), or `(model, CompactionReport)`.

    Raises:
        ValueError: a subclassed model, or an input shape that is not fixed.
    """
    transform.check_model(model)
    plain = transform.strip(model)
    for t in _tensors(plain.inputs):
        if any(d is None for d in t.shape[1:]):
            raise ValueError("compact needs inputs of fixed shape (constant units are folded from "
                             "their values). Build the model on keras.Input(shape=...) with every "
                             f"dimension but the batch given. Received: input shape {tuple(t.shape)}")
    layers = [l for l in plain.layers if not isinstance(l, L.InputLayer)]
    nodes = _nodes(plain, layers)
    found = effective_sparsity_report.analyze(plain)
    plan = _Plan(plain, nodes, found)
    new = _rebuild(plain, nodes, plan)
    if not return_report:
        return new
    units = tuple((l.name, int(outs[0].shape[-1]), int(len(plan.kept(outs[0]))))
                  for l, _, outs in nodes if plan.kinds[l.name][0] in ("units", "depthwise"))
    whole = tuple(dict.fromkeys((l.name, plan.kinds[l.name][1]) for l, _, _ in nodes
                                if plan.kinds[l.name][0] == "whole" and l.weights))
    return new, CompactionReport(units, whole, int(plain.count_params()), int(new.count_params()))


class _Plan:
    """The dropped channels of every tensor (the fixed point) and the constant
    values folded into the layers that read them."""

    def __init__(self, plain, nodes, found):
        self.kinds = {l.name: _kind(l) for l, _, _ in nodes}
        self.values = _constant_values(plain, nodes, found, self.kinds)
        alive = {k: _channels(v) for k, v in found.alive.items()}
        used = {k: _channels(v) for k, v in found.used.items()}
        self.constant = {k: ~a for k, a in alive.items()}
        self.drop = {}
        for t in _tensors(plain.inputs):
            self.drop[id(t)] = ~used[id(t)] if t.dtype != "int32" and t.dtype != "int64" else \
                np.zeros(t.shape[-1], bool)
        for layer, ins, outs in nodes:
            out = outs[0]
            kind = self.kinds[layer.name][0]
            if kind == "units":
                if isinstance(layer, L.Embedding) or _activation_name(layer) not in _NOT_ELEMENTWISE:
                    self.drop[id(out)] = ~(alive[id(out)] & used[id(out)])
                else:
                    self.drop[id(out)] = np.zeros(out.shape[-1], bool)
            elif kind == "depthwise":
                self.drop[id(out)] = np.repeat(self.drop[id(ins[0])], layer.depth_multiplier)
            elif kind == "pass":
                self.drop[id(out)] = self.drop[id(ins[0])].copy()
            elif kind == "merge":
                self.drop[id(out)] = np.logical_and.reduce([self.drop[id(t)] for t in ins])
            elif kind == "concat":
                self.drop[id(out)] = np.concatenate([self.drop[id(t)] for t in ins])
            elif kind == "flatten":
                positions = found.alive[id(out)].numpy().reshape(-1) > 0
                # dead positions (a dead channel's are all dead)
                self.drop[id(out)] = ~positions | ~_position_used(found, out)
            else:
                for t in outs:
                    self.drop[id(t)] = np.zeros(t.shape[-1], bool)
        for t in _tensors(plain.outputs):
            self.drop[id(t)] = np.zeros(t.shape[-1], bool)
        self.used = used
        while self._constrain(nodes):
            pass

    def _undrop(self, tensor, keep):
        before = self.drop[id(tensor)]
        after = before & ~keep
        self.drop[id(tensor)] = after
        return bool((before != after).any())

    def _constrain(self, nodes):
        """One pass of every constraint; True if a channel was undropped."""
        changed = False
        for layer, ins, outs in nodes:
            out = outs[0]
            kind = self.kinds[layer.name][0]
            if kind == "units":
                if not isinstance(layer, L.Embedding):
                    changed |= self._undrop(ins[0], self._unfoldable(layer, ins[0]))
                else:
                    changed |= self._undrop(ins[0], np.ones(ins[0].shape[-1], bool))
            elif kind == "depthwise":
                m = layer.depth_multiplier
                keep_out = ~self.drop[id(out)]
                keep_in = keep_out.reshape(-1, m).any(axis=1) | ~self.drop[id(ins[0])]
                changed |= self._undrop(ins[0], keep_in)
                changed |= self._undrop(out, np.repeat(keep_in, m))
            elif kind in ("pass", "merge"):
                keep = ~self.drop[id(out)]
                for t in ins:
                    keep = keep | ~self.drop[id(t)]
                for t in ins + [out]:
                    changed |= self._undrop(t, keep)
            elif kind == "concat":
                keep = ~self.drop[id(out)] | np.concatenate([~self.drop[id(t)] for t in ins])
                changed |= self._undrop(out, keep)
                start = 0
                for t in ins:
                    changed |= self._undrop(t, keep[start:start + t.shape[-1]])
                    start += t.shape[-1]
            elif kind == "flatten":
                positions = int(np.prod(ins[0].shape[1:-1])) if len(ins[0].shape) > 2 else 1
                kept_flat = ~self.drop[id(out)]
                changed |= self._undrop(ins[0], kept_flat.reshape(positions, -1).any(axis=0))
            else:
                for t in ins:
                    changed |= self._undrop(t, np.ones(t.shape[-1], bool))
            for t in ins + outs:  # a tensor keeps at least one channel
                if self.drop[id(t)].all():
                    keep = np.zeros(t.shape[-1], bool)
                    keep[0] = True
                    changed |= self._undrop(t, keep)
        return changed

    def _unfoldable(self, layer, tensor):
        """The dropped channels of `tensor` that `layer` needs and cannot take as a bias."""
        needed = self.drop[id(tensor)] & self.constant[id(tensor)] & self.used[id(tensor)]
        if not needed.any():
            return needed
        value = self.values.get(id(tensor))
        uniform = value is not None and value[1]
        spatial = len(getattr(layer, "kernel_size", ())) and layer.padding != "valid" and any(
            k > 1 for k in layer.kernel_size)
        if isinstance(layer, L.Dense) and len(tensor.shape) == 2:
            return np.zeros_like(needed)
        return needed & ~(uniform & (not spatial))

    def kept(self, tensor):
        return np.flatnonzero(~self.drop[id(tensor)])


def _position_used(found, tensor):
    return found.used[id(tensor)].numpy().reshape(-1) > 0


def _constant_values(plain, nodes, found, kinds):
    """`{id(t): (value per channel, uniform per channel)}` for the inputs of unit
    layers: their values on a zero input (a constant channel's value is the same
    on every input; `uniform`: the same at every position)."""
    wanted = []
    for layer, ins, _ in nodes:
        if kinds[layer.name][0] == "units" and not isinstance(layer, L.Embedding):
            t = ins[0]
            if id(t) not in {id(w) for w in wanted}:
                wanted.append(t)
    if not wanted:
        return {}
    probe = keras.Model(plain.inputs, wanted)
    zeros = [np.zeros([1] + list(t.shape[1:]), t.dtype) for t in _tensors(plain.inputs)]
    values = probe(zeros)
    values = values if isinstance(values, (list, tuple)) else [values]
    out = {}
    for t, v in zip(wanted, values):
        v = np.asarray(v, np.float64).reshape(-1, t.shape[-1])
        mean = v.mean(axis=0)
        out[id(t)] = (mean, np.all(np.abs(v - mean) <= 1e-6 * (1.0 + np.abs(mean)), axis=0))
    return out


def _rebuild(plain, nodes, plan):
    """The compacted graph: each layer rebuilt on its kept channels."""
    new = {}
    inputs = []
    for t in _tensors(plain.inputs):
        x = keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=_keras_compat.input_layer_name(t))
        inputs.append(x)
        keep = plan.kept(t)
        new[id(t)] = x if len(keep) == t.shape[-1] else keras.ops.take(x, keep, axis=-1)
    for layer, ins, outs in nodes:
        out = outs[0]
        kind = plan.kinds[layer.name][0]
        args = [new[id(t)] for t in ins]
        if kind == "units":
            new[id(out)] = _sliced_units(layer, ins[0], out, plan)(args[0])
        elif kind == "depthwise":
            new[id(out)] = _sliced_depthwise(layer, ins[0], plan)(args[0])
        elif kind == "pass" and isinstance(layer, L.BatchNormalization):
            fresh = L.BatchNormalization.from_config(layer.get_config())
            y = fresh(args[0])
            keep = plan.kept(out)
            fresh.set_weights([w[keep] for w in layer.get_weights()])
            new[id(out)] = y
        elif kind in ("pass", "merge", "concat", "flatten"):
            config = layer.get_config()
            if isinstance(layer, L.Reshape):
                config["target_shape"] = (*config["target_shape"][:-1], int(len(plan.kept(out))))
            fresh = type(layer).from_config(config)
            y = fresh(args if kind in ("merge", "concat") else args[0])
            if kind == "flatten":
                positions = int(np.prod(ins[0].shape[1:-1])) if len(ins[0].shape) > 2 else 1
                held = (np.arange(positions)[:, None] * ins[0].shape[-1] + plan.kept(ins[0])[None, :]).reshape(-1)
                keep = ~plan.drop[id(out)][held]
                if not keep.all():
                    y = keras.ops.take(y, np.flatnonzero(keep), axis=-1)
            new[id(out)] = y
        else:  # whole: this private copy's own layer (shared: once per call), on its full inputs
            if _keras_compat.is_called_once(layer):  # as it was called (a list, a dict, ...)
                result = layer(keras.tree.map_structure(lambda t: new[id(t)], layer.input))
            else:
                result = layer(args[0] if len(args) == 1 else args)
            for t, r in zip(outs, _tensors(result)):
                new[id(t)] = r
    outputs = keras.tree.map_structure(lambda t: new[id(t)], plain.outputs)
    one = lambda xs: xs if len(xs) > 1 else xs[0]  # noqa: E731
    return keras.Model(one(inputs), one(outputs), name=f"{plain.name}_compact")


def _sliced_units(layer, tensor, out, plan):
    """A Dense/Conv/Embedding layer with the kept units, reading the kept input
    channels, the folded constants in its bias."""
    keep_out = plan.kept(out)
    config = layer.get_config()
    config[_UNITS[type(layer)]] = int(len(keep_out))
    if isinstance(layer, L.Embedding):
        fresh = L.Embedding.from_config(config)
        fresh.build(tuple(tensor.shape))
        fresh.set_weights([layer.embeddings.numpy()[:, keep_out]])
        return fresh
    kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
    drop_in = plan.drop[id(tensor)]
    if id(tensor) in plan.values:
        mean, uniform = plan.values[id(tensor)]
        fold = drop_in & plan.constant[id(tensor)] & (uniform | (isinstance(layer, L.Dense) and len(tensor.shape) == 2))
        if fold.any():
            reduce_axes = tuple(range(kernel.ndim - 2))
            weights = kernel.sum(axis=reduce_axes) if reduce_axes else kernel  # [in, out]
            bias = bias + (mean[fold][:, None] * weights[fold]).sum(axis=0).astype(bias.dtype)
    keep_in = np.flatnonzero(~drop_in)
    kernel = np.take(np.take(kernel, keep_in, axis=-2), keep_out, axis=-1)
    bias = bias[keep_out]
    config["use_bias"] = bool(layer.use_bias or np.any(bias != 0))
    fresh = type(layer).from_config(config)
    shape = list(tensor.shape)
    shape[-1] = len(keep_in)
    fresh.build(tuple(shape))
    fresh.set_weights([kernel, bias] if config["use_bias"] else [kernel])
    return fresh


def _sliced_depthwise(layer, tensor, plan):
    keep_in = plan.kept(tensor)
    m = layer.depth_multiplier
    fresh = L.DepthwiseConv2D.from_config(layer.get_config())
    shape = list(tensor.shape)
    shape[-1] = len(keep_in)
    fresh.build(tuple(shape))
    weights = [layer.kernel.numpy()[:, :, keep_in, :]]
    if layer.use_bias:
        weights.append(layer.bias.numpy().reshape(-1, m)[keep_in].reshape(-1))
    fresh.set_weights(weights)
    return fresh
