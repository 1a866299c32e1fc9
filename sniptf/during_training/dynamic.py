"""Dynamic sparse training: `SET` (Mocanu et al., 2018) and `RigL` (Evci et al., 2020).

At steps `update_every`, 2·`update_every`, ... below `end_step`, after that
step's optimizer update, every mask drops its k smallest-|w| kept weights,
k = floor(f(t) · n_kept) with the cosine decay

    f(t) = drop_fraction / 2 · (1 + cos(π t / end_step)),

and grows k connections among those not kept after the drop: `RigL` the
largest |∂L/∂θ| of the dense gradient (θ = W ⊙ C, on that step's batch at the
weights the step started from, from the step's own backward pass), `SET`
uniformly at random (seeded by `seed`, the step and the tensor). The kept count of every
mask never changes. Ties (equal |w| or |gradient|) go to the lowest index.
As google-research/rigl (`mask_updaters.py`), only
connections whose mask bit changed are touched: a new one starts at exactly 0
with its optimizer slots reset, a removed one is set to 0 with its slots, and
one dropped and regrown in the same update keeps its value and slots (a mask
at density 1 is left as it is).

The update is computed from the weights, the masks and (RigL) a gradient
summed across replicas, identically on every replica and worker, so
`MirroredStrategy` and multi-worker training keep one mask. Start from any
mask: `sniptf.prune(..., criterion="snip")`, an ERK-random mask
(`criterion="random", scope="erk"`, RigL's default), ...
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from sniptf import selection
from sniptf import settings
from sniptf.during_training.base import MaskUpdater
from sniptf.settings import setting


def drop_fraction_at(step, *, drop_fraction, end_step):
    """The cosine-decayed fraction of each mask's kept weights updated at `step`."""
    return drop_fraction / 2.0 * (1.0 + math.cos(math.pi * step / end_step))


def update_mask(weight, mask, k, grow):
    """One drop-and-grow of a mask: the `k` smallest-|w| kept weights dropped (ties: the
    lowest index first), then `k` connections grown among those not kept after the drop
    (which may be some just dropped): `grow(candidates, k)` gives their flat indices
    (`candidates`: a flat boolean array). Returns the new mask and how many were regrown."""
    flat = mask.reshape(-1).astype(bool, copy=False)
    after_drop = flat.copy()
    after_drop[selection.flat_top_k(selection.magnitude_keys(weight, flat, smallest=True), k)] = False
    grown = grow(~after_drop, k)
    new = after_drop
    new[grown] = True
    return new.reshape(mask.shape), int(np.count_nonzero(flat[grown]))


@dataclasses.dataclass
class DynamicSparsitySettings:
    """The `TrainConfig` fields of SET and RigL (`sniptf-train --during_training=set|rigl`)."""

    update_every: int = setting(100, "set/rigl: steps between mask updates.", lower_bound=1)
    dst_end_step: int = setting(0, "set/rigl: no update from this step on (0: 3/4 of --train_steps, "
                                   "RigL's default).", lower_bound=0)
    drop_fraction: float = setting(0.3, "set/rigl: fraction of each mask's kept weights changed at "
                                        "the decay's start, in (0, 1].")


class DynamicSparsity(MaskUpdater):
    """Drop the smallest |w|, then `grow` (SET: at random, RigL: by gradient; see the module)."""

    Settings = DynamicSparsitySettings

    def __init__(self, update_every, end_step, drop_fraction):
        super().__init__()
        self.update_every = settings.check_int("update_every", update_every, minimum=1)
        self.end_step = settings.check_int("end_step", end_step, minimum=1)
        self.drop_fraction = settings.check_fraction("drop_fraction", drop_fraction, low_open=True)

    @classmethod
    def end_step_of(cls, config):
        """The config's end step: `dst_end_step`, or 3/4 of `train_steps` when 0."""
        return config.dst_end_step or max(1, (3 * config.train_steps) // 4)

    @classmethod
    def _from_config(cls, config, **kwargs):
        try:
            return cls(config.update_every, cls.end_step_of(config),
                       drop_fraction=config.drop_fraction, **kwargs)
        except settings.BadSetting as e:
            raise e.renamed({"end_step": "dst_end_step"}) from None

    def settings_record(self):
        return {"update_every": self.update_every, "end_step": self.end_step,
                "drop_fraction": self.drop_fraction}

    def is_update_step(self, step):
        return step % self.update_every == 0 and 0 < step < self.end_step

    def _due_tensor(self, step):
        return tf.logical_and(tf.equal(step % self.update_every, 0), step < self.end_step)

    def grow(self, index, entry, step, candidates, k):
        """The flat indices of the `k` connections tensor `index` (`entry`) grows at `step`
        among `candidates` (a flat boolean array: not kept after the drop)."""
        raise NotImplementedError

    def new_masks(self, step, masks):
        fraction = drop_fraction_at(step, drop_fraction=self.drop_fraction, end_step=self.end_step)
        out, regrown = [], 0
        for i, (e, mask) in enumerate(zip(self.entries, masks)):
            k = int(math.floor(fraction * int(mask.sum())))
            if k == 0:
                out.append(mask)
                continue
            new, again = update_mask(e.weight.numpy(), mask, k,
                                     lambda candidates, k, i=i, e=e: self.grow(i, e, step, candidates, k))
            out.append(new)
            regrown += again
        self.extra = {"regrown": regrown}  # dropped and grown again in this update: unchanged
        return out


class SET(DynamicSparsity):
    """Sparse Evolutionary Training: drop the smallest |w|, regrow at random.

    Args:
        update_every: steps between mask updates.
        end_step: no update at or after this step (the cosine decay's end).
        drop_fraction: the fraction of each mask's kept weights changed at step 0
            of the decay (0.3).
        seed: seeds the random regrowth (with the step: the same on every worker).
    """

    name = "set"

    def __init__(self, update_every, end_step, *, drop_fraction=0.3, seed=0):
        super().__init__(update_every, end_step, drop_fraction)
        self.seed = settings.check_int("seed", seed, minimum=0)

    @classmethod
    def from_config(cls, config):
        return cls._from_config(config, seed=config.seed)

    def settings_record(self):
        return {**super().settings_record(), "seed": self.seed}

    def grow(self, index, entry, step, candidates, k):
        # k of the candidates uniformly at random, without replacement
        return selection.random_flat_indices(candidates, k, np.random.default_rng([self.seed, step, index]))


class RigL(DynamicSparsity):
    """Rigging the Lottery: drop the smallest |w|, regrow the largest dense |gradient|.

    The dense gradient ∂L/∂θ (θ = W ⊙ C) is that of the update step's batch, at
    the weights the step started from, taken from the step's own backward pass
    (`sniptf.masked_layer.DenseGradient`), summed across replicas: the gradient
    of the global batch's loss (under a `LossScaleOptimizer`, times its scale:
    the ranking is the same).

    Args:
        update_every: steps between mask updates.
        end_step: no update at or after this step.
        drop_fraction: the fraction of each mask's kept weights changed at step 0
            of the decay (0.3).
    """

    name = "rigl"
    needs_dense_gradient = True

    def __init__(self, update_every, end_step, *, drop_fraction=0.3):
        super().__init__(update_every, end_step, drop_fraction)

    @classmethod
    def from_config(cls, config):
        return cls._from_config(config)

    def grow(self, index, entry, step, candidates, k):
        if self.dense_gradients is None:  # an update made outside fit: no gradient there
            raise ValueError(f"RigL grows from the dense gradient of an update step's batch, taken "
                             f"while fit runs. Received: an update at step {step} outside fit")
        return selection.flat_top_k(selection.magnitude_keys(self.dense_gradients[index].numpy(), candidates), k)
