"""`GradualPruning`: gradual magnitude pruning during training (Zhu & Gupta, 2017),
the schedule TF-MOT's `PolynomialDecay` applies, for Keras 3 wrapped models.

At step t in [begin_step, end_step] the target sparsity is

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power

and the masks are updated every `frequency` steps from `begin_step` and
always at `end_step`: among the weights still kept, the smallest |w| are
pruned until exactly round(s_t * N) of the N masked weights are pruned
(over all of them, or per tensor with `scope="layerwise"`); masks only
shrink, and the stored weights of pruned connections are set to exactly 0.
Step t is the optimizer's step count after that step's update, so a `fit` of
t steps has applied every update at steps <= t, and the schedule continues
across `fit` calls (and across a `.keras` save and load, which keeps the
optimizer's count and the masks). A `fit` that starts at step t first applies
the latest update at a step <= t if the masks are not that sparse yet (the
update at step 0 when `begin_step=0`; a model trained that far without the
callback), so from `end_step` on the model is always at `final_sparsity`.
"""

import keras
import numpy as np

from sniptf import selection
from sniptf import transform


PRUNING_SCOPES = ("global", "layerwise")


def check_scope(scope):
    """The scopes magnitude pruning of kept weights takes (ERK's budgets are for a mask
    drawn at init, not for a schedule)."""
    if scope not in PRUNING_SCOPES:
        raise ValueError(f"Expected `scope` to be one of {PRUNING_SCOPES}. Received: scope={scope!r}")
    return scope


def _check_step(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"Expected `{name}` to be an int >= 0. Received: {name}={value!r}")
    return int(value)


def _check_sparsity(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Expected `{name}` to be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def polynomial_sparsity(step, *, initial_sparsity, final_sparsity, begin_step, end_step, power):
    """Zhu & Gupta's target sparsity at `step` (clipped to [begin_step, end_step])."""
    t = min(max(step, begin_step), end_step)
    fraction = (t - begin_step) / (end_step - begin_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - fraction) ** power


def latest_update_step(step, *, begin_step, end_step, frequency):
    """The last update step at or before `step` (None before `begin_step`): updates are
    at begin_step + k * frequency within [begin_step, end_step], and at end_step."""
    if step < begin_step:
        return None
    if step >= end_step:
        return end_step
    return begin_step + (step - begin_step) // frequency * frequency


def prune_to(model, sparsity, *, scope="global", seed=0):
    """Prunes the smallest-|w| kept weights of a wrapped model until exactly
    round(sparsity * N) of its N masked weights are pruned (per tensor with
    `scope="layerwise"`). Masks only shrink: a model already sparser is left as
    it is. Returns the number of weights pruned by this call."""
    entries = transform.masked_entries(model)
    masks = [e.mask.numpy().astype(bool) for e in entries]
    before = sum(int(m.sum()) for m in masks)
    # kept weights score |w|, pruned ones -1: never chosen over a kept one
    scores = [np.where(m, np.abs(e.weight.numpy()), -1.0).astype(np.float32) for e, m in zip(entries, masks)]
    if scope == "global":
        total = sum(m.size for m in masks)
        keep = total - int(round(sparsity * total))
        if keep >= before:
            return 0
        new = selection.select_count(scores, max(keep, 1), scope="global", seed=seed, min_kept_per_layer=0)
    else:
        new = []
        for s, m in zip(scores, masks):
            keep = m.size - int(round(sparsity * m.size))
            new.append(m if keep >= m.sum() else selection.select_count(
                [s], max(keep, 1), scope="global", seed=seed, min_kept_per_layer=0)[0])
    new = [n & m for n, m in zip(new, masks)]
    transform.apply_masks(entries, new)
    return before - sum(int(n.sum()) for n in new)


class GradualPruning(keras.callbacks.Callback):
    """Gradual magnitude pruning of a wrapped model during `fit` (see the module).

    Args:
        final_sparsity: the sparsity from `end_step` on, in [0, 1).
        begin_step: the first update step.
        end_step: the last update step (> begin_step).
        initial_sparsity: the schedule's sparsity at `begin_step`.
        frequency: steps between updates.
        power: the polynomial's exponent (3: Zhu & Gupta).
        scope: `"global"` (one threshold over all masked weights) or
            `"layerwise"` (each tensor to the same sparsity).

    Example:

    ```python
    model = sniptf.wrap(keras_model)     # dense masks, or sniptf.prune(...) first
    model.compile(...)
    model.fit(ds, epochs=10, callbacks=[sniptf.GradualPruning(0.9, 1000, 8000)])
    ```
    """

    def __init__(self, final_sparsity, begin_step, end_step, *, initial_sparsity=0.0, frequency=100,
                 power=3, scope="global"):
        super().__init__()
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.begin_step = _check_step("begin_step", begin_step)
        self.end_step = _check_step("end_step", end_step)
        if self.end_step <= self.begin_step:
            raise ValueError(f"Expected end_step > begin_step. Received: begin_step={begin_step!r}, "
                             f"end_step={end_step!r}")
        if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
            raise ValueError(f"Expected `frequency` to be an int >= 1. Received: frequency={frequency!r}")
        self.frequency = frequency
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f"Expected `power` to be a number > 0. Received: power={power!r}")
        self.power = power
        self.scope = check_scope(scope)
        self._seen = None

    def target(self, step):
        """The schedule's sparsity at `step`."""
        return polynomial_sparsity(step, initial_sparsity=self.initial_sparsity,
                                   final_sparsity=self.final_sparsity, begin_step=self.begin_step,
                                   end_step=self.end_step, power=self.power)

    def on_train_begin(self, logs=None):
        if not transform.masked_entries(self.model):
            raise ValueError(f"GradualPruning needs a wrapped model (sniptf.wrap or sniptf.prune). "
                             f"Received: model '{self.model.name}' without MaskedLayers")
        self._seen = int(self.model.optimizer.iterations.numpy())
        # a fit that starts past update steps this callback never saw (a model trained
        # without it, or begin_step=0: the update "after step 0") applies the latest one
        # first; a model that has applied it (a resumed schedule) is left as it is
        latest = latest_update_step(self._seen, begin_step=self.begin_step, end_step=self.end_step,
                                    frequency=self.frequency)
        if latest is not None:
            prune_to(self.model, self.target(latest), scope=self.scope)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        # with steps_per_execution > 1 several steps pass per call: the latest update step counts
        latest = latest_update_step(step, begin_step=self.begin_step, end_step=self.end_step,
                                    frequency=self.frequency)
        seen, self._seen = self._seen, step
        if latest is not None and latest > seen:
            prune_to(self.model, self.target(latest), scope=self.scope)
