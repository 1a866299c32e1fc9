"""Every scoring criterion and the registry that names them.

A criterion is a small pure function `fn(weight, gradient, rng) -> scores` on
numpy arrays, where `gradient` is ∂L/∂c for the weight's mask (at the current
mask; c = 1 after `wrap`), summed over the scored batches, or None for
criteria registered with `needs_gradient=False`; or, with `model_level=True`,
`fn(model, entries, data) -> [scores per entry]` running passes of its own.
`sniptf.scoring` is the engine that feeds them.

* `"snip"` — SNIP (Lee et al., ICLR 2019): |∂L/∂c| at c = 1.
* `"magnitude"` — |w| at initialization. `"random"` — uniform random scores.
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
from sniptf import scoring_batches
from sniptf import losses
from sniptf import masked_layer

GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100
FORCE_ROUNDS = 60


@dataclasses.dataclass(frozen=True)
class Data:
    """One scoring request: what the gradient pass and a model-level criterion
    score on (`saliency`'s arguments)."""

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


# --- the registry ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Criterion:
    """A scoring criterion: `fn(weight, gradient, rng) -> scores`.

    `needs_gradient`: whether `fn` gets ∂L/∂c (else `gradient` is None and
    no data pass runs). `model_level`: `fn(model, entries, data)` returns one
    score array per masked weight itself (GraSP, SynFlow: passes of their
    own). `needs_data`: False for data-free criteria (`dataset=None` is then
    accepted). `rounds`: `prune` re-scores at the current mask this many
    times, keeping an exponentially shrinking count (SynFlow, FORCE).
    """

    name: str
    fn: object
    needs_gradient: bool
    model_level: bool = False
    needs_data: bool = True
    rounds: int = 1


CRITERIA = {}  # name -> Criterion


def register_criterion(name, fn, *, needs_gradient, model_level=False, needs_data=None, rounds=1):
    """Adds (or replaces) a scoring criterion under `name`.

    Args:
        name: the name `prune`, `saliency` and `--criterion` take.
        fn: `fn(weight, gradient, rng) -> scores` on numpy arrays (higher =
            kept), or with `model_level=True`, `fn(model, entries, data) ->
            [scores per entry]` (`entries`: `transform.masked_entries(model)`,
            `data`: a `Data` request).
        needs_gradient: `fn` gets ∂L/∂c summed over the scored batches (else
            `gradient` is None and no data pass runs).
        model_level: `fn` scores the whole model itself (GraSP, SynFlow).
        needs_data: False for data-free criteria (`dataset=None` accepted);
            defaults to `needs_gradient or model_level`.
        rounds: `prune` re-scores at the current mask this many times, keeping an
            exponentially shrinking count (SynFlow 100, FORCE 60).

    Raises:
        TypeError / ValueError: a bad name, a non-callable `fn`, or `rounds` < 1.

    Example:

    ```python
    sniptf.register_criterion("grad_norm", lambda w, g, rng: np.abs(g) / (np.abs(w) + 1e-8),
                              needs_gradient=True)
    sniptf.prune(model, data, kappa=0.05, criterion="grad_norm")
    ```
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"Expected a non-empty string name. Received: name={name!r}")
    if not callable(fn):
        raise TypeError(f"Expected a callable criterion. Received: fn={fn!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"Expected `rounds` to be an int >= 1. Received: rounds={rounds!r}")
    needs_data = bool(needs_gradient or model_level) if needs_data is None else bool(needs_data)
    CRITERIA[name] = Criterion(name, fn, bool(needs_gradient), bool(model_level), needs_data, rounds)


def get_criterion(name):
    """The registered `Criterion` called `name`; the one check of a criterion name.

    Raises:
        ValueError: no criterion has that name (the message lists them).
    """
    try:
        return CRITERIA[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown criterion. Expected one of {sorted(CRITERIA)} (add others with "
            f"sniptf.register_criterion). Received: criterion={name!r}") from None


def snip(weight, gradient, rng):
    """|∂L/∂c| at the current mask: SNIP's connection sensitivity."""
    del weight, rng
    return np.abs(gradient)


def magnitude(weight, gradient, rng):
    """|w|: magnitude pruning at initialization."""
    del gradient, rng
    return np.abs(weight)


def random(weight, gradient, rng):
    """Uniform random scores: random pruning."""
    del gradient
    return rng.random(weight.shape, dtype=np.float32)


# --- GraSP -------------------------------------------------------------------

def _tempered(model, prediction):
    if losses.softmax_output(model):  # probabilities: temper the log-probabilities
        return tf.nn.softmax(tf.math.log(tf.maximum(prediction, 1e-12)) / GRASP_TEMPERATURE)
    return prediction / GRASP_TEMPERATURE


def grasp(model, entries, data):
    """θ ⊙ Hg per masked weight (see the module docstring)."""
    variables = [e.weight.value for e in entries]
    loss_fn = losses.scoring_loss(model, data.loss)

    def mean_loss(x, y, sample_weight):
        pred = keras.tree.map_structure(lambda p: _tempered(model, p),
                                        model(x, training=data.bn_training))
        if loss_fn is losses.COMPILED:
            return tf.cast(_keras_compat.unscaled_compute_loss(
                model, x, y, pred, sample_weight, data.bn_training), tf.float32)
        total, count = losses.summed_loss(loss_fn, y, pred, sample_weight)
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

    batches = list(scoring_batches.batches(data.dataset, data.num_batches, data.batch_size))
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


register_criterion("snip", snip, needs_gradient=True)
register_criterion("magnitude", magnitude, needs_gradient=False)
register_criterion("random", random, needs_gradient=False)
register_criterion("grasp", grasp, needs_gradient=False, model_level=True)
register_criterion("synflow", synflow, needs_gradient=False, model_level=True, needs_data=False,
                   rounds=SYNFLOW_ROUNDS)
register_criterion("force", snip, needs_gradient=True, rounds=FORCE_ROUNDS)
