"""The criteria that followed SNIP, registered by name next to it.

* `"grasp"` — GraSP (Wang, Zhang, Grosse, ICLR 2020): keep the connections whose
  removal least reduces the gradient flow. With g = ∇θL and H = ∇²θL, removing
  θ changes the gradient norm by about −θ ⊙ Hg; the score is θ ⊙ Hg (signed;
  the highest are kept, i.e. the top −θ ⊙ Hg are removed). g is summed over the
  scoring batches without a graph, then Hg = ∇θ(gᵀ stop(g)) by double
  backpropagation, with the logits divided by a temperature of 200 (the authors'
  code). At initialization, on the dense network.
* `"synflow"` — SynFlow (Tanaka, Kunin, Yamins, Ganguli, NeurIPS 2020),
  data-free: R = 1ᵀ(∏_l |θ_l|)1, the output of the network with every parameter
  replaced by its absolute value on an all-ones input (batch-norm in eval mode,
  its statistics linearized too); score |θ ⊙ ∂R/∂θ| at the current mask; `prune`
  iterates it over 100 rounds, keeping κ^(r/100) of the weights after round r
  (the paper's exponential schedule). R is a product of |θ| over the depth and
  can overflow float32 in deep networks, so the pass runs
  in float64 (every layer's compute dtype is switched for the pass and put back;
  the weights stay float32): exact up to 1e308, where any rescaling of layers
  would change the scores' relative sizes across residual paths of different
  depth.
* `"force"` — FORCE (de Jorge et al., ICLR 2021): SNIP's |∂L/∂c| re-scored at
  the current mask, where a pruned connection can come back (its dense weight
  times the gradient of the pruned network); `prune` iterates it over 60 rounds
  of the same exponential schedule (the authors' published runs).

`saliency` gives one round's scores at the current mask; `prune` runs the rounds.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import data_utils
from sniptf import masked_layer

GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100
FORCE_ROUNDS = 60


@dataclasses.dataclass(frozen=True)
class Data:
    """What a model-level criterion may score on (`saliency`'s arguments)."""

    dataset: object
    num_batches: int
    loss: object
    batch_size: object
    bn_training: bool


def exponential_counts(total, final, rounds):
    """Kept counts after each of `rounds` rounds: total·(final/total)^(r/rounds),
    ending at exactly `final`, never increasing."""
    counts = [int(round(total * (final / total) ** ((r + 1) / rounds))) for r in range(rounds)]
    counts[-1] = final
    for r in range(rounds - 2, -1, -1):
        counts[r] = max(counts[r], counts[r + 1])
    return counts


# --- GraSP -------------------------------------------------------------------

def _tempered(model, prediction):
    from sniptf import scoring  # the loss helpers live there
    if scoring._softmax_output(model):  # probabilities: temper the log-probabilities
        return tf.nn.softmax(tf.math.log(tf.maximum(prediction, 1e-12)) / GRASP_TEMPERATURE)
    return prediction / GRASP_TEMPERATURE


def grasp(model, entries, data):
    """θ ⊙ Hg per masked weight (see the module docstring)."""
    from sniptf import scoring
    variables = [e.weight.value for e in entries]
    loss_fn = scoring.scoring_loss(model, data.loss)

    def mean_loss(x, y, sample_weight):
        pred = keras.tree.map_structure(lambda p: _tempered(model, p),
                                        model(x, training=data.bn_training))
        if loss_fn is scoring.COMPILED:
            return tf.cast(_keras_compat.unscaled_compute_loss(
                model, x, y, pred, sample_weight, data.bn_training), tf.float32)
        total, count = scoring.summed_loss(loss_fn, y, pred, sample_weight)
        return total / count

    @tf.function(reduce_retracing=True)
    def gradient(x, y, sample_weight):
        with tf.GradientTape() as tape:
            loss = mean_loss(x, y, sample_weight)
        return tape.gradient(loss, variables, unconnected_gradients="zero"), loss

    @tf.function(reduce_retracing=True)
    def hessian_gradient(x, y, sample_weight, stopped):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = mean_loss(x, y, sample_weight)
            g = inner.gradient(loss, variables, unconnected_gradients="zero")
            z = tf.add_n([tf.reduce_sum(s * gi) for s, gi in zip(stopped, g)])
        return outer.gradient(z, variables, unconnected_gradients="zero")

    batches = list(data_utils.batches(data.dataset, data.num_batches, data.batch_size))
    if not batches:
        raise ValueError("The dataset yielded no batches; it is empty. Received: a dataset of 0 batches")
    stopped = None
    for index, (x, y, sw) in enumerate(batches):
        g, loss = gradient(x, y, sw)
        if not np.isfinite(float(loss)):
            raise ValueError(f"The loss is not finite on batch {index}; check the inputs for "
                             f"NaN/inf. Received: loss={float(loss)} on batch {index}")
        stopped = g if stopped is None else [a + b for a, b in zip(stopped, g)]
    hg = None
    for x, y, sw in batches:
        h = hessian_gradient(x, y, sw, stopped)
        hg = h if hg is None else [a + b for a, b in zip(hg, h)]
    return [e.weight.numpy() * h.numpy() for e, h in zip(entries, hg)]


# --- SynFlow -----------------------------------------------------------------

def _ones_like_inputs(model, dtype):
    def ones(t):
        shape = [1] + [d for d in t.shape[1:]]
        if any(d is None for d in shape):
            raise ValueError(f"SynFlow feeds an all-ones input and needs the input's full shape. "
                             f"Received: input shape {tuple(t.shape)}")
        kind = tf.as_dtype(t.dtype)
        return tf.ones(shape, dtype if kind.is_floating else kind)
    inputs = model.inputs
    if not inputs:
        raise ValueError(f"SynFlow needs a model with known inputs (build it on a keras.Input). "
                         f"Received: model={model.name!r}")
    return ones(inputs[0]) if len(inputs) == 1 else [ones(t) for t in inputs]


# Normalizations over the features divide out the scale of their input (and the
# centring ones subtract its mean): the network is then not positively homogeneous
# in its weights, R is not 1ᵀ(∏|θ_l|)1 and can be negative (ConvNeXt's is). SynFlow's
# paper and code linearize batch-norm only (eval mode: a fixed affine map).
_FEATURE_NORMS = tuple(getattr(keras.layers, name) for name in (
    "LayerNormalization", "GroupNormalization", "RMSNormalization", "UnitNormalization")
    if hasattr(keras.layers, name))


def _check_linearizable(layers, model):
    norms = [layer for layer in layers if isinstance(layer, _FEATURE_NORMS)]
    if norms:
        raise ValueError(
            f"SynFlow scores the network with |θ| as a product of its layers, which "
            f"{type(norms[0]).__name__} {norms[0].name!r} is not: it normalizes over the "
            f"features (SynFlow is defined for linear layers, ReLUs, pooling and batch-norm). "
            f"Use criterion='snip', 'force' or 'grasp' for this model. Received: model="
            f"{model.name!r} with {len(norms)} such layer(s)")


def synflow(model, entries, data):
    """|c ⊙ ∂R/∂c| per masked weight, R the linearized network's output sum (float64)."""
    del data  # data-free
    layers = _keras_compat.all_layers(model)
    _check_linearizable(layers, model)
    policies = [layer.dtype_policy for layer in layers]
    stand_ins = [tf.cast(e.mask.value, tf.float64) for e in entries]
    # every float parameter (kernels, biases, batch-norm's scale, offset and statistics)
    # replaced by its absolute value, in float64: mapped directly, because
    # `state_mapping=` would convert the values back to the variables' float32
    linear = {id(v): tf.abs(tf.cast(v.value, tf.float64)) for v in model.weights
              if tf.as_dtype(v.dtype).is_floating}
    try:
        for layer in layers:
            layer.dtype_policy = keras.DTypePolicy("float64")
        x = _ones_like_inputs(model, tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(stand_ins)
            scope = keras.StatelessScope(initialize_variables=False)
            scope.state_mapping = linear
            with scope, masked_layer.masks_read_as(zip([e.mask for e in entries], stand_ins)):
                out = model(x, training=False)
            r = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64)) for o in keras.tree.flatten(out)])
        grads = tape.gradient(r, stand_ins, unconnected_gradients="zero")
    finally:
        for layer, policy in zip(layers, policies):
            layer.dtype_policy = policy
    if not np.isfinite(float(r)):
        raise ValueError(f"SynFlow's R overflowed even in float64 (R={float(r)}); the network is "
                         "too deep or its weights too large for the linearized pass. "
                         f"Received: model={model.name!r}")
    if float(r) <= 0:
        # SynFlow assumes every path carries a positive product: a fixed negative offset
        # (e.g. a Rescaling layer mapping [0, 255] to [-1, 1], as MobileNetV3 has) turns
        # the all-ones input negative and a ReLU then zeroes the whole flow
        raise ValueError(
            f"SynFlow's R is {float(r)}: the network with |θ| gives no positive output for an "
            "all-ones input, so there is no synaptic flow to score. A layer with a fixed "
            "negative offset (e.g. a Rescaling to [-1, 1]) before a ReLU does this; prune the "
            f"model without its preprocessing layers. Received: model={model.name!r}")
    # divided by R (the share of the flow through each connection), kept in float64:
    # the ranking is the same, and shares far below float32's range stay distinct
    return [np.abs(c.numpy() * g.numpy()) / float(r) for c, g in zip(stand_ins, grads)]
