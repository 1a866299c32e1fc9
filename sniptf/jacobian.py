"""Jacobian singular values: layerwise J^{l-1,l} = ∂x^l/∂x^{l-1} and end to end.

Layerwise dynamical isometry (Lee et al., ICLR 2020) asks the singular values
of every layer's input-output Jacobian to sit near 1; sparsity shrinks them.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from sniptf import data_utils
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
    """`layers` (one `SingularValues` per prunable layer, in model order) and `end_to_end`."""

    layers: tuple
    end_to_end: SingularValues

    def summary(self):
        """Every layer's and the end-to-end summary, as a dict."""
        return {"layers": [s.summary() for s in self.layers], "end_to_end": self.end_to_end.summary()}


def _svd_rows(jac, out_rank):
    """Singular values of each example's Jacobian, flattened to (out, in)."""
    b = jac.shape[0]
    out = int(np.prod(jac.shape[1:1 + out_rank]))
    matrices = tf.reshape(jac, (b, out, -1))
    return tf.linalg.svd(matrices, compute_uv=False).numpy()


def _kernel_values(layer):
    values = []
    weights = layer.masked_weights() if isinstance(layer, MaskedLayer) else [
        (p, w, None) for p, w in registry.prunable_weights(layer)]
    for _, w, m in weights:
        k = w.numpy() * (1.0 if m is None else m.numpy())
        if k.ndim >= 2:
            values.append(np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False))
    return np.concatenate(values)[None, :]


def _prunable_layers(model):
    return [(k, l) for k, l in transform.walk_layers(model)
            if isinstance(l, MaskedLayer) or registry.is_prunable(l)]


def jacobian_singular_values(model, x, layerwise=True, *, max_entries=MAX_JACOBIAN_ENTRIES):
    """Singular values of the layerwise and end-to-end Jacobians at inputs `x`.

    Args:
        model: a Functional or Sequential model, wrapped or plain (nested
            models are looked into for the layerwise part).
        x: a batch of inputs (each example gives its own Jacobians).
        layerwise: also compute J^{l-1,l} for every prunable layer, with the
            layer's own activation, at the inputs the layer sees for `x`.
        max_entries: layers whose Jacobian has more entries per example
            report the singular values of their masked kernel reshaped to
            `[kh*kw*cin, cout]` instead (method `"kernel"`).

    Returns:
        A `JacobianReport`; each `SingularValues` has `values`, `mean`, `std`,
        `min`, `max` and `method`.

    Example:

    ```python
    report = sniptf.jacobian_singular_values(pruned, x[:8])
    print(report.end_to_end.mean, [s.mean for s in report.layers])
    ```
    """
    transform.check_model(model)
    data_utils.check_fits(model, x, None, 0)
    x = tf.convert_to_tensor(x)
    if x.shape[0] == 0 or not bool(tf.reduce_all(tf.math.is_finite(tf.cast(x, tf.float32)))):
        raise ValueError("Expected `x` to be a non-empty batch of finite inputs. Received: x of "
                         f"shape {tuple(x.shape)}" + ("" if x.shape[0] == 0 else " with NaN or Inf entries"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=False)
    end = SingularValues("end_to_end", "jacobian",
                         _svd_rows(tape.batch_jacobian(logits, x), logits.shape.rank - 1))
    layers = []
    if layerwise:
        found = _prunable_layers(model)
        top = [(k, l) for k, l in found if "/" not in k]  # not inside a nested model
        probe = keras.Model(model.inputs, [l.input for _, l in top]) if top else None
        inputs = probe(x, training=False) if probe is not None else []
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        seen_inputs = dict(zip([id(l) for _, l in top], inputs))
        for name, layer in found:
            h = seen_inputs.get(id(layer))
            if h is None or isinstance(h, (list, tuple)):
                layers.append(SingularValues(name, "kernel", _kernel_values(layer)))
                continue
            out_size = int(np.prod(layer(h[:1], training=False).shape[1:]))
            in_size = int(np.prod(h.shape[1:]))
            if out_size * in_size > max_entries:
                layers.append(SingularValues(name, "kernel", _kernel_values(layer)))
                continue
            with tf.GradientTape() as tape:
                tape.watch(h)
                y = layer(h, training=False)
            layers.append(SingularValues(name, "jacobian",
                                         _svd_rows(tape.batch_jacobian(y, h), y.shape.rank - 1)))
    return JacobianReport(tuple(layers), end)
