"""Dynamic sparse training: `SET` (Mocanu et al., 2018) and `RigL` (Evci et al., 2020).

Callbacks on a wrapped (pruned) model. At steps `update_every`, 2·`update_every`,
... below `end_step`, after that step's optimizer update, every mask drops its
k smallest-|w| kept weights, k = floor(f(t) · n_kept) with the cosine decay

    f(t) = drop_fraction / 2 · (1 + cos(π t / end_step)),

and grows k connections among those not kept after the drop: `RigL` the
largest |∂L/∂θ| of the dense gradient (θ = W ⊙ C, computed with every mask
read as ones, on that step's batch at the weights the step started from),
`SET` at random (seeded by `seed` and the step). Grown weights start at
exactly 0, the kept count of every mask never changes, and the optimizer's
slots (momentum, Adam's moments) of every changed connection are reset to 0.

With `steps_per_execution` > 1 Keras runs callbacks once per execution: an
update due inside one is applied at its end, from the weights there (RigL's
gradient is still that of the due step's batch); if several are due in one
execution, only the latest is made.

The update is computed from the weights, the masks and (RigL) a gradient
all-reduced across replicas, identically on every replica and worker, so
`MirroredStrategy` and multi-worker training keep one mask. Start from any
mask: `sniptf.prune(..., criterion="snip")`, an ERK-random mask
(`criterion="random", scope="erk"`, RigL's default), ...
"""

import math

import keras
import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import data_utils
from sniptf import transform
from sniptf.masked_layer import masks_read_as


def drop_fraction_at(step, *, drop_fraction, end_step):
    """The cosine-decayed fraction of each mask's kept weights updated at `step`."""
    return drop_fraction / 2.0 * (1.0 + math.cos(math.pi * step / end_step))


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be an int >= 1. Received: {name}={value!r}")
    return int(value)


def _smallest(values, candidates, k):
    """Flat indices of the `k` smallest `values` among `candidates` (ties: lowest index)."""
    idx = np.flatnonzero(candidates)
    order = np.argsort(values.reshape(-1)[idx], kind="stable")
    return idx[order[:k]]


def update_mask(weight, mask, k, grow_scores):
    """One drop-and-grow of a mask: the `k` smallest-|w| kept weights dropped, then
    the `k` largest `grow_scores` among the not-kept grown. Returns the new mask
    and the flat indices that changed (dropped or grown)."""
    mask = mask.astype(bool)
    flat = mask.reshape(-1).copy()
    dropped = _smallest(np.abs(weight), flat, k)
    flat[dropped] = False
    grown = _smallest(-np.asarray(grow_scores, np.float64), ~flat, k)
    flat[grown] = True
    changed = np.union1d(dropped, grown)
    return flat.reshape(mask.shape), changed


class _DynamicSparsity(keras.callbacks.Callback):
    def __init__(self, update_every, end_step, drop_fraction):
        super().__init__()
        self.update_every = _check_positive_int("update_every", update_every)
        self.end_step = _check_positive_int("end_step", end_step)
        if isinstance(drop_fraction, bool) or not isinstance(drop_fraction, (int, float)) \
                or not 0.0 < drop_fraction <= 1.0:
            raise ValueError(f"Expected `drop_fraction` to be a float in (0, 1]. "
                             f"Received: drop_fraction={drop_fraction!r}")
        self.drop_fraction = float(drop_fraction)
        self._seen = None
        self.updates = []  # (step, connections changed)

    def is_update_step(self, step):
        return step % self.update_every == 0 and 0 < step < self.end_step

    def on_train_begin(self, logs=None):
        self._entries = transform.masked_entries(self.model)
        if not self._entries:
            raise ValueError(f"{type(self).__name__} needs a wrapped model (sniptf.prune or sniptf.wrap). "
                             f"Received: model '{self.model.name}' without MaskedLayers")
        self._seen = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        due = [t for t in range(self._seen + 1, step + 1) if self.is_update_step(t)]
        self._seen = step
        if due:
            self._update(due[-1])

    def _grow_scores(self, index, entry, step):
        raise NotImplementedError

    def _update(self, step):
        fraction = drop_fraction_at(step, drop_fraction=self.drop_fraction, end_step=self.end_step)
        changed_total = 0
        for i, e in enumerate(self._entries):
            mask = e.mask.numpy().astype(bool)
            k = int(math.floor(fraction * int(mask.sum())))
            if k == 0:
                continue
            weight = e.weight.numpy()
            new, changed = update_mask(weight, mask, k, self._grow_scores(i, e, step))
            flat = weight.reshape(-1).copy()
            flat[changed] = 0.0  # grown start at 0; dropped are pruned
            e.weight.assign((flat.reshape(weight.shape) * new).astype(weight.dtype))
            e.mask.assign(new)
            for slot in _keras_compat.optimizer_slots(self.model.optimizer, e.weight):
                values = slot.numpy().reshape(-1).copy()
                values[changed] = 0
                slot.assign(values.reshape(slot.shape))
            changed_total += len(changed)
        self.updates.append((step, changed_total))


class SET(_DynamicSparsity):
    """Sparse Evolutionary Training: drop the smallest |w|, regrow at random.

    Args:
        update_every: steps between mask updates.
        end_step: no update at or after this step (the cosine decay's end).
        drop_fraction: the fraction of each mask's kept weights changed at step 0
            of the decay (0.3).
        seed: seeds the random regrowth (with the step: the same on every worker).
    """

    def __init__(self, update_every, end_step, *, drop_fraction=0.3, seed=0):
        super().__init__(update_every, end_step, drop_fraction)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise TypeError(f"Expected `seed` to be an int >= 0. Received: seed={seed!r}")
        self.seed = int(seed)

    def _grow_scores(self, index, entry, step):
        return np.random.default_rng([self.seed, step, index]).random(entry.mask.shape)


class RigL(_DynamicSparsity):
    """Rigging the Lottery: drop the smallest |w|, regrow the largest dense |gradient|.

    The dense gradient is taken on the batch of the update step (the model's
    train step is wrapped while `fit` runs), at the weights that step started
    from, all-reduced across replicas.

    Args:
        update_every: steps between mask updates.
        end_step: no update at or after this step.
        drop_fraction: the fraction of each mask's kept weights changed at step 0
            of the decay (0.3).
    """

    def __init__(self, update_every, end_step, *, drop_fraction=0.3):
        super().__init__(update_every, end_step, drop_fraction)
        self._grads = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        model = self.model
        # a fit that raised never reached on_train_end: drop the hook it left behind
        # before wrapping, so the train step is the model's own again
        if getattr(model.__dict__.get("train_step"), "_sniptf_rigl_hook", False):
            del model.train_step
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        # on-read: each replica writes its own gradient (no collective inside the cond of
        # the train step); the callback's read in cross-replica context is their mean
        with strategy.scope():
            self._grads = [tf.Variable(tf.zeros(e.weight.shape, tf.float32), trainable=False,
                                       synchronization=tf.VariableSynchronization.ON_READ,
                                       aggregation=tf.VariableAggregation.MEAN,
                                       name=f"rigl_grad_{i}") for i, e in enumerate(self._entries)]
        original = model.train_step
        masks = [e.mask for e in self._entries]
        weights = [e.weight for e in self._entries]
        grads = self._grads
        every, end = self.update_every, self.end_step

        def dense_gradient(data):
            x, y, sample_weight = data_utils.unpack(data)
            ones = [tf.ones(m.shape, tf.float32) for m in masks]
            with masks_read_as(list(zip(masks, ones))):
                with tf.GradientTape() as tape:
                    y_pred = model(x, training=True)
                    loss = _keras_compat.unscaled_compute_loss(model, x, y, y_pred, sample_weight,
                                                               training=True)
                values = tape.gradient(loss, weights)
            return [g.assign(tf.cast(v, tf.float32)) for g, v in zip(grads, values)]

        def train_step(data):
            step = model.optimizer.iterations + 1  # the step this call makes
            due = tf.logical_and(tf.equal(step % every, 0), step < end)
            tf.cond(due, lambda: tf.group(dense_gradient(data)), tf.no_op)
            return original(data)

        train_step._sniptf_rigl_hook = True
        self._original = original
        model.train_step = train_step
        model.make_train_function(force=True)

    def on_train_end(self, logs=None):
        del self.model.train_step  # the class's own again
        self.model.make_train_function(force=True)

    def _grow_scores(self, index, entry, step):
        return np.abs(self._grads[index].numpy())
