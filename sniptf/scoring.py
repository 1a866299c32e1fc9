"""The saliency engine: scores every masked weight with a criterion.

The criteria themselves and their registry live in `sniptf.criteria`, the
loss they score with in `sniptf.losses`. This module runs the passes: one
compiled `tf.GradientTape` pass gives ∂L/∂c for every mask at once (summed
over batches and replicas), then each criterion maps (weight, gradient) to
scores; model-level criteria (GraSP, SynFlow) run passes of their own.
"""

import functools
import warnings
import weakref

import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import criteria
from sniptf import scoring_batches
from sniptf import losses
from sniptf import masked_layer
from sniptf import selection
from sniptf import transform
# the registry, as it was reachable here before it moved to `sniptf.criteria`
from sniptf.criteria import CRITERIA  # noqa: F401
from sniptf.criteria import Criterion  # noqa: F401
from sniptf.criteria import get_criterion
from sniptf.criteria import register_criterion  # noqa: F401
# the loss helpers, likewise (now `sniptf.losses`)
from sniptf.losses import COMPILED  # noqa: F401
from sniptf.losses import resolve_loss  # noqa: F401
from sniptf.losses import scoring_loss  # noqa: F401
from sniptf.losses import summed_loss  # noqa: F401

# model -> {(strategy, loss, training, masks): compiled pass}; saves a retrace per call
_PASSES = weakref.WeakKeyDictionary()


def _gradient_pass(model, masks, loss_fn, training):
    """A compiled step: ∂(mean loss)/∂c over the global batch, reduced over replicas
    (`masks`: the mask variables, read as float32 stand-ins to differentiate)."""
    strategy = tf.distribute.get_strategy()

    def replica_step(x, y, sample_weight):
        with tf.GradientTape() as tape:
            stand_ins = [tf.cast(m.value, tf.float32) for m in masks]
            tape.watch(stand_ins)
            with masked_layer.masks_read_as(zip(masks, stand_ins)):
                pred = model(x, training=training)
            if loss_fn is losses.COMPILED:
                # compute_loss is a mean over this replica's examples: times their
                # count, summed over replicas, over the global count = the global mean
                count = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
                mean = tf.cast(_keras_compat.unscaled_compute_loss(model, x, y, pred, sample_weight,
                                                                   training), tf.float32)
                total = tf.cond(count > 0, lambda: mean * count, lambda: tf.zeros(()))
            else:
                total, count = losses.summed_loss(loss_fn, y, pred, sample_weight)
        grads = tape.gradient(total, stand_ins, unconnected_gradients="zero")
        return grads, total, count

    @tf.function(reduce_retracing=True)
    def step(x, y, sample_weight):
        grads, total, count = strategy.run(replica_step, args=(x, y, sample_weight))
        reduce = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
        count = reduce(count)  # examples seen over all replicas: the global batch
        return [reduce(g) / count for g in grads], reduce(total) / count, count

    def split(value):
        if value is None:
            return None

        def part(ctx):
            n, i = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
            cut = lambda t: t[(tf.shape(t)[0] * i) // n:(tf.shape(t)[0] * (i + 1)) // n]
            return tf.nest.map_structure(cut, value)
        return strategy.experimental_distribute_values_from_function(part)

    def run(batch):
        if loss_fn is losses.COMPILED:  # traced once, not twice (see the compat note)
            _keras_compat.build_compiled_loss(model, batch)
        # one replica (no strategy, or a single device) takes the batch as it is
        if strategy.num_replicas_in_sync > 1:
            batch = tuple(split(v) for v in batch)
        return step(*batch)

    @tf.function(reduce_retracing=True)
    def over_dataset(dataset, num_batches):
        # One replica: the batches are iterated inside the compiled function, so
        # a call costs no Python iterator and no per-batch Python (issue 11).
        # An iterator and a while loop in this function's own graph: the step
        # then runs as any compiled step does (inside Dataset.reduce it would
        # run as a tf.data function, about 2x slower on CPU).
        iterator = iter(dataset)

        def body(seen, finite, more, sums):
            element = iterator.get_next_as_optional()

            def take():
                grads, total, count = replica_step(*scoring_batches.unpack(element.get_value()))
                return (seen + 1, tf.logical_and(finite, tf.math.is_finite(total / count)),
                        tf.constant(True), tuple(a + g / count for a, g in zip(sums, grads)))

            return tf.cond(element.has_value(), take,
                           lambda: (seen, finite, tf.constant(False), sums))

        start = (tf.constant(0, tf.int64), tf.constant(True), tf.constant(True),
                 tuple(tf.zeros(m.shape, tf.float32) for m in masks))
        seen, finite, _, sums = tf.while_loop(
            lambda seen, finite, more, sums: tf.logical_and(more, seen < num_batches),
            body, start)
        return sums, seen, finite

    run.step, run.over_dataset = step, over_dataset
    run.compiled_loss = loss_fn is losses.COMPILED
    return run


def saliency(model, dataset, *, criterion="snip", num_batches=1, loss=None,
             batch_size=None, seed=0, bn_training=False):
    """Scores every masked weight of a wrapped model.

    For `snip`, one `tf.GradientTape` pass per batch gives ∂L/∂c for every
    mask at once; with `num_batches > 1` the signed gradients of the batch
    means are summed over batches before taking |·|. Inside a
    `tf.distribute` strategy scope the batch is split over replicas and the
    gradients are summed across them, so every replica and worker gets the
    same scores.

    Args:
        model: a model with `MaskedLayer`s (see `sniptf.wrap`).
        dataset: what `model.fit` takes: a `tf.data.Dataset` of batches or
            arrays, as `x`, `(x, y)` or `(x, y, sample_weight)`; `x` and `y` may
            be tensors, tuples or dicts (one batch, or batches of `batch_size`).
        criterion: a name in `sniptf.scoring.CRITERIA`.
        num_batches: how many batches to score on.
        loss: overrides the loss. Default: a compiled model's own
            `compute_loss` (all compiled losses with their `loss_weights`,
            sample weights, added losses), else sparse categorical
            cross-entropy. A function gets `(y_true, y_pred)` in the model's
            structures (dicts for dict outputs) and returns per-example losses.
        batch_size: splits an `(x, y)` pair into batches of this size.
        seed: seeds the `random` criterion.
        bn_training: run the model in training mode (batch-norm uses batch
            statistics); its non-trainable state is restored afterwards.

    Returns:
        A dict `key -> np.ndarray` of scores, one per mask, in model order;
        the key is `"<layer path>/<weight path>"` as in `sniptf.sparsity`.

    Raises:
        ValueError: no `MaskedLayer`, an unknown criterion, bad data, or a
            non-finite loss (the message names the batch).
    """
    request = criteria.Data(dataset, num_batches, loss, batch_size, bn_training)
    return {e.key: scores for e, _, scores in _in_turn(model, criterion, request, seed)}


def score_sources(model, dataset, *, criterion="snip", num_batches=1, loss=None,
                  batch_size=None, seed=0, bn_training=False):
    """What `saliency` returns, as zero-argument callables that compute each
    array when called: for selection at scale (`sniptf.select` takes them), so
    that the scores are never all held at once. Each callable returns exactly
    `saliency(...)[key]` (the criterion's generator restarts from the state it
    had at that weight); the gradients of a data pass are held, as `saliency`
    holds them. Arguments as `saliency`."""
    # one pass, to know each weight's generator state (its scores are dropped)
    request = criteria.Data(dataset, num_batches, loss, batch_size, bn_training)
    return {e.key: remake for e, remake, _ in _in_turn(model, criterion, request, seed)}


def check_num_batches(num_batches):
    """Validates `num_batches`: an int >= 1."""
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(
            f"Expected `num_batches` to be an int >= 1. Received: num_batches={num_batches!r}")
    return num_batches


def _in_turn(model, criterion, data, seed):
    """Yields `(entry, remake, scores)` for every masked weight in model order:
    `remake()` computes the same scores again. `data`: a `criteria.Data` request."""
    criterion = get_criterion(criterion)
    selection.check_seed(seed)
    check_num_batches(data.num_batches)
    entries = transform.masked_entries(model)
    if not entries:
        raise ValueError(
            f"Model '{model.name}' has no MaskedLayer; call sniptf.wrap(model) "
            "first, or sniptf.prune(model, ...) to wrap and prune in one call. "
            f"Received: model={model.name!r} ({type(model).__name__}, not wrapped)"
        )
    if criterion.needs_data and data.dataset is None:
        raise ValueError(
            f"Criterion {criterion.name!r} scores on data; dataset=None is accepted only by the "
            f"data-free criteria {sorted(n for n, c in criteria.CRITERIA.items() if not c.needs_data)}. "
            "Received: dataset=None")
    rng = np.random.default_rng(seed)
    if criterion.model_level:
        for e, scores in zip(entries, criterion.fn(model, entries, data)):
            # float64 scores stay float64: SynFlow's shares of R can span more than
            # float32 holds (a residual shortcut carries a tiny share of the flow)
            scores = np.asarray(scores)
            scores = scores.astype(np.float64 if scores.dtype == np.float64 else np.float32,
                                   copy=False).reshape(e.weight.shape)
            yield e, (lambda scores=scores: scores), scores
        return
    grads = None
    if criterion.needs_gradient:
        grads = _accumulated_gradients(model, entries, data)

    def score(weight, gradient, rng):
        scores = criterion.fn(weight.numpy(), gradient, rng)
        return np.asarray(scores, dtype=np.float32).reshape(weight.shape)

    def remake(weight, gradient, state):
        again = np.random.Generator(np.random.PCG64())
        again.bit_generator.state = state
        return score(weight, gradient, again)

    for i, e in enumerate(entries):
        g = None if grads is None else grads[i]
        yield e, functools.partial(remake, e.weight, g, rng.bit_generator.state), score(e.weight, g, rng)


def _cause(error):
    """The message of an error raised inside a traced function: the line that says
    what went wrong, without the trace around it."""
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    if lines and lines[0] == "in user code:":
        return lines[-1]
    if lines and lines[0].startswith("Graph execution error"):
        # TensorFlow: "Detected at node ...", the Python frames, then the op's own message
        told = [l for l in lines[1:] if not l.startswith(("Detected at node", "File ", "[["))]
        if told:
            return told[-1]
    return lines[0] if lines else repr(error)


def _accumulated_gradients(model, entries, data):
    """∂(mean loss)/∂c per entry's mask, summed over `data`'s batches (a `criteria.Data`)."""
    masks = [e.mask for e in entries]
    loss, bn_training = data.loss, data.bn_training
    state = [(v, v.numpy()) for v in model.non_trainable_variables] if bn_training else []
    try:
        compiled = id(getattr(model, "loss", None)) if getattr(model, "compiled", False) else None
        key = (id(tf.distribute.get_strategy()), loss, compiled, bool(bn_training),
               tuple(id(m) for m in masks))
        hash(key)
    except TypeError:
        key = None
    cached = _PASSES.setdefault(model, {})
    if key is None or key not in cached:
        run = _gradient_pass(model, masks, losses.scoring_loss(model, loss), bn_training)
        if key is not None:
            cached[key] = run
    else:
        run = cached[key]
    try:
        if (isinstance(data.dataset, tf.data.Dataset)
                and tf.distribute.get_strategy().num_replicas_in_sync == 1):
            fast = _dataset_gradients(model, run, data)
            if fast is not None:
                return fast
        # arrays, several replicas, or a dataset whose fast pass failed: batch by
        # batch, which names the batch at fault
        return _batch_gradients(model, run, data)
    finally:
        for v, value in state:
            v.assign(value)


def _check_batch(model, x, y, index, loss):
    scoring_batches.check_fits(model, x, y, index)
    if y is None and not getattr(model, "compiled", False) and loss is None:
        hint = (" For tfds, load with as_supervised=True." if isinstance(x, dict) else "")
        raise ValueError(
            f"Batch {index} has inputs but no targets, and the model is not compiled: "
            f"there is nothing to score with. Give (x, y) batches.{hint} "
            f"Received: batch {index} with structure {scoring_batches.shape_of(x)}")


def _warn_short(seen, num_batches):
    if seen == 0:
        raise ValueError("The dataset yielded no batches; it is empty. "
                         "Received: a dataset of 0 batches")
    if seen < num_batches:
        warnings.warn(f"sniptf: asked for num_batches={num_batches} but the dataset "
                      f"had only {seen}; scored on {seen}.", stacklevel=5)


def _dataset_gradients(model, run, data):
    """The summed gradients from one compiled pass over the dataset's batches, or
    None if the pass failed or met a non-finite loss (the caller then goes batch
    by batch to say which batch)."""
    num_batches = data.num_batches
    x, y, _ = scoring_batches.unpack(data.dataset.element_spec)  # checked from the spec: no batch is read
    _check_batch(model, x, y, 0, data.loss)
    if run.compiled_loss:
        _keras_compat.build_compiled_loss(model, scoring_batches.unpack(data.dataset.element_spec))
    try:
        sums, seen, finite = run.over_dataset(data.dataset, tf.constant(num_batches, tf.int64))
    except (tf.errors.InvalidArgumentError, ValueError, TypeError):
        return None
    if not bool(finite):
        return None
    _warn_short(int(seen), num_batches)
    return [g.numpy() for g in sums]


def _batch_gradients(model, run, data):
    total = None
    seen = 0
    num_batches = data.num_batches
    for index, (x, y, sample_weight) in enumerate(
            scoring_batches.batches(data.dataset, num_batches, data.batch_size)):
        _check_batch(model, x, y, index, data.loss)
        try:
            grads, mean, _ = run((x, y, sample_weight))
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            raise ValueError(
                f"Scoring failed on batch {index}: {_cause(e)} Received: x of shape "
                f"{scoring_batches.shape_of(x)}, y of shape {scoring_batches.shape_of(y)}"
            ) from e
        mean = float(mean)
        if not np.isfinite(mean):
            raise ValueError(
                f"The loss is not finite on batch {index}; check the inputs for NaN/inf "
                f"and the model's initialization. Received: loss={mean} on batch {index}")
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
        seen += 1
    _warn_short(seen, num_batches)
    return [g.numpy() for g in total]
