"""Jacobian singular values: layerwise J^{l-1,l} = ∂x^l/∂x^{l-1} and end to end.

Layerwise dynamical isometry (Lee et al., ICLR 2020) asks the singular values
of every layer's input-output Jacobian to sit near 1; sparsity shrinks them.
"""

import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import scoring_batches
from sniptf import registry
from sniptf import transform
from sniptf.masked_layer import MaskedLayer

# Above this many Jacobian entries per example a layer's full Jacobian is not
# formed; the singular values of its reshaped masked kernel are reported instead.
MAX_JACOBIAN_ENTRIES = 2 ** 24


@dataclasses.dataclass(frozen=True)
class SingularValues:
    """Singular values of one Jacobian (or kernel) and their summary.

    `values` has one row per example (method "jacobian") or a single row
    (method "kernel": the singular values of the masked kernel reshaped to
    `[kh*kw*cin, cout]`, the linear part of the layer without its
    nonlinearity or spatial structure).
    """

    name: str
    method: str
    values: np.ndarray

    @property
    def mean(self):
        """Mean of the singular values."""
        return float(self.values.mean())

    @property
    def std(self):
        """Standard deviation of the singular values."""
        return float(self.values.std())

    @property
    def min(self):
        """Smallest singular value."""
        return float(self.values.min())

    @property
    def max(self):
        """Largest singular value."""
        return float(self.values.max())

    def summary(self):
        """Name, method and the statistics, as a dict."""
        return {"name": self.name, "method": self.method, "mean": self.mean, "std": self.std,
                "min": self.min, "max": self.max}


@dataclasses.dataclass(frozen=True)
class JacobianReport:
    """`layers` (one `SingularValues` per prunable layer, in model order) and `end_to_end`
    (None when not asked for)."""

    layers: tuple
    end_to_end: SingularValues  # None when not asked for (end_to_end=False)

    def summary(self):
        """Every layer's and the end-to-end summary, as a dict."""
        return {"layers": [s.summary() for s in self.layers],
                "end_to_end": None if self.end_to_end is None else self.end_to_end.summary()}


def _svd_rows(jac, out_rank):
    """Singular values of each example's Jacobian, flattened to (out, in)."""
    b = jac.shape[0]
    out = int(np.prod(jac.shape[1:1 + out_rank]))
    matrices = tf.reshape(jac, (b, out, -1))
    return tf.linalg.svd(matrices, compute_uv=False).numpy()


def _masked_kernels(layer):
    """`(path, masked kernel)` of a layer's matrix weights (biases skipped)."""
    weights = layer.masked_weights() if isinstance(layer, MaskedLayer) else [
        (p, w, None) for p, w in registry.prunable_weights(layer)]
    out = []
    for path, w, m in weights:
        k = w.numpy() * (1.0 if m is None else m.numpy())
        if k.ndim >= 2:
            out.append((path, k.reshape(-1, k.shape[-1])))
    return out


def _kernel_values(layer):
    values = [np.linalg.svd(k, compute_uv=False) for _, k in _masked_kernels(layer)]
    return np.concatenate(values)[None, :]


def _kernel_reports(name, layer):
    """A layer's kernel singular values: one `SingularValues`, or one per weight for a
    MaskedLayer around a whole model (a KerasHub task or subclassed model is masked as
    one layer: its weights are its layers')."""
    if isinstance(layer, MaskedLayer) and isinstance(layer.layer, keras.Model):
        return [SingularValues(f"{name}/{path}", "kernel", np.linalg.svd(k, compute_uv=False)[None, :])
                for path, k in _masked_kernels(layer)]
    return [SingularValues(name, "kernel", _kernel_values(layer))]


def _view(model):
    """The model whose layers are listed: a plain model's wrapped copy (masks of ones,
    the same function), so that its layers are the ones `prune` masks, nested ones
    included; the model itself if it has masks or cannot be wrapped."""
    if transform.masked_entries(model):
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # weights no registered layer holds: as prune warns
            return transform.wrap(model)
    except ValueError:
        return model


def _prunable_layers(model):
    return [(k, l) for k, l in transform.walk_layers(model)
            if isinstance(l, MaskedLayer) or registry.is_prunable(l)]


def jacobian_singular_values(model, x, layerwise=True, *, max_entries=MAX_JACOBIAN_ENTRIES,
                             end_to_end=True):
    """Singular values of the layerwise and end-to-end Jacobians at inputs `x`.

    Args:
        model: a Keras model, wrapped or plain. Sequential and Functional
            models (KerasHub tasks included) get every top-level prunable
            layer's Jacobian at the inputs it sees; layers inside nested models
            and of subclassed models report their masked kernels (method
            `"kernel"`).
        x: a batch of inputs (each example gives its own Jacobians): an array,
            or a dict / list for a model with several inputs.
        layerwise: also compute J^{l-1,l} for every prunable layer, with the
            layer's own activation, at the inputs the layer sees for `x`.
        max_entries: layers whose Jacobian has more entries per example
            report the singular values of their masked kernel reshaped to
            `[kh*kw*cin, cout]` instead (method `"kernel"`).
        end_to_end: also compute ∂y/∂x (one float input needed); False for
            models fed token ids, where it is not defined (`end_to_end` of the
            report is then None).

    Returns:
        A `JacobianReport`; each `SingularValues` has `values`, `mean`, `std`,
        `min`, `max` and `method`.

    Example:

    ```python
    report = sniptf.jacobian_singular_values(pruned, x[:8])
    print(report.end_to_end.mean, [s.mean for s in report.layers])
    ```
    """
    transform.check_keras_model(model)
    scoring_batches.check_fits(model, x, None, 0)
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    for leaf in tf.nest.flatten(x):
        if leaf.shape[0] == 0 or (leaf.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(leaf)))):
            raise ValueError("Expected `x` to be a non-empty batch of finite inputs. Received: x of "
                             f"shape {tuple(leaf.shape)}" + ("" if leaf.shape[0] == 0 else " with NaN or Inf entries"))
    end = None
    if end_to_end:
        if not isinstance(x, tf.Tensor) or not x.dtype.is_floating:
            what = (f"dtype {x.dtype.name} (token ids?)" if isinstance(x, tf.Tensor)
                    else f"a {type(x).__name__} of {len(tf.nest.flatten(x))} inputs")
            raise ValueError(
                "The end-to-end Jacobian dy/dx needs one float input; x is " + what + ". Pass "
                "end_to_end=False for the layerwise Jacobians alone (each layer's input is float). "
                f"Received: x of {what}")
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model(x, training=False)
        end = SingularValues("end_to_end", "jacobian",
                             _svd_rows(tape.batch_jacobian(logits, x), logits.shape.rank - 1))
    layers = []
    if layerwise:
        model = _view(model)
        found = _prunable_layers(model)
        # layers inside a nested model, or of a model with no layer graph: their kernels
        graph = _keras_compat.has_layer_graph(model)
        top = [(k, l) for k, l in found if "/" not in k] if graph else []
        probe = keras.Model(model.inputs, [l.input for _, l in top]) if top else None
        inputs = probe(x, training=False) if probe is not None else []
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        seen_inputs = dict(zip([id(l) for _, l in top], inputs))
        for name, layer in found:
            h = seen_inputs.get(id(layer))
            # several inputs, or ids (an Embedding's): no Jacobian in x; the kernel's values
            if h is None or isinstance(h, (list, tuple, dict)) or not h.dtype.is_floating:
                layers.extend(_kernel_reports(name, layer))
                continue
            out_size = int(np.prod(layer(h[:1], training=False).shape[1:]))
            in_size = int(np.prod(h.shape[1:]))
            if out_size * in_size > max_entries:
                layers.extend(_kernel_reports(name, layer))
                continue
            with tf.GradientTape() as tape:
                tape.watch(h)
                y = layer(h, training=False)
            layers.append(SingularValues(name, "jacobian",
                                         _svd_rows(tape.batch_jacobian(y, h), y.shape.rank - 1)))
    return JacobianReport(tuple(layers), end)
