"""`GradualPruning`: gradual magnitude pruning during training (Zhu & Gupta, 2017),
the schedule TF-MOT's `PolynomialDecay` applies, for Keras 3 wrapped models.

At step t in [begin_step, end_step] the target sparsity is

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power

and the masks are updated every `frequency` steps from `begin_step` and
always at `end_step`: among the weights still kept, the smallest |w| are
pruned until exactly round(s_t * N) of the N masked weights are pruned — per
tensor by default (`scope="layerwise"`, as Zhu & Gupta and TF-MOT: each layer to
s_t), or over all of them (`scope="global"`, one threshold). Masks only shrink;
a pruned weight and its optimizer slots are set to exactly 0
(`MaskUpdater`), so momentum cannot move it off 0.
Step t is the optimizer's step count after that step's update, so a `fit` of
t steps has applied every update at steps <= t, and the schedule continues
across `fit` calls (and across a `.keras` save and load, which keeps the
optimizer's count and the masks). A `fit` that starts at step t first applies
the latest update at a step <= t if the masks are not that sparse yet (the
update at step 0 when `begin_step=0`; a model trained that far without the
callback), so from `end_step` on the model is always at `final_sparsity`.
"""

import dataclasses

from sniptf import magnitude
from sniptf import settings
from sniptf import structure as structure_lib
from sniptf import transform
from sniptf.during_training.base import MaskUpdater
from sniptf.settings import setting


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


@dataclasses.dataclass
class GradualPruningSettings:
    """The `TrainConfig` fields of `GradualPruning` (`sniptf-train --during_training=gmp`)."""

    gradual_pruning_final_sparsity: float = setting(
        0.9, "gmp: the sparsity from the schedule's end step on, in [0, 1). With --criterion=none the "
             "model starts dense.")
    gradual_pruning_initial_sparsity: float = setting(0.0, "gmp: the schedule's sparsity at its begin step.")
    gradual_pruning_begin_step: int = setting(0, "gmp: the schedule's first update step.", lower_bound=0)
    gradual_pruning_end_step: int = setting(0, "gmp: the schedule's last update step (0: --train_steps).",
                                            lower_bound=0)
    gradual_pruning_frequency: int = setting(100, "gmp: steps between the schedule's updates.", lower_bound=1)
    gradual_pruning_scope: str = setting("layerwise", "gmp: each layer to the schedule's sparsity "
                                         "(Zhu & Gupta, TF-MOT) or one global threshold.",
                                         choices=magnitude.PRUNING_SCOPES)
    # its structure is --structure (StartSettings), the one the starting mask takes


class GradualPruning(MaskUpdater):
    """Gradual magnitude pruning of a wrapped model during `fit` (see the module).

    Args:
        final_sparsity: the sparsity from `end_step` on, in [0, 1).
        begin_step: the first update step.
        end_step: the last update step (> begin_step).
        initial_sparsity: the schedule's sparsity at `begin_step`.
        frequency: steps between updates.
        power: the polynomial's exponent (3: Zhu & Gupta).
        scope: `"layerwise"` (each tensor to the same sparsity: Zhu & Gupta's
            and TF-MOT's) or `"global"` (one threshold over all masked weights).
        structure: what is pruned together (`sniptf/structure.py`), scored by the
            kept weights' |w|: `"blocks:K"` (TF-MOT's `block_size` (1, K), blocks
            by their summed |w|) and `"channels"` (whole units by their mean |w|;
            mask biases, `sniptf.wrap(model, include_biases=True)`, for a unit's
            bias to go with it) prune whole groups to the schedule's sparsity;
            `"N:M"` (TF-MOT's `sparsity_m_by_n`) makes every mask N:M of |w| at
            the first update and needs `final_sparsity` = 1 − N/M.

    Example:

    ```python
    model = sniptf.wrap(keras_model)     # dense masks, or sniptf.prune(...) first
    model.compile(...)
    model.fit(ds, epochs=10, callbacks=[sniptf.GradualPruning(0.9, 1000, 8000)])
    ```
    """

    name = "gmp"
    Settings = GradualPruningSettings
    takes_structure = True

    def __init__(self, final_sparsity, begin_step, end_step, *, initial_sparsity=0.0, frequency=100,
                 power=3, scope="layerwise", structure="unstructured"):
        super().__init__()
        self.final_sparsity = settings.check_fraction("final_sparsity", final_sparsity, high_open=True)
        self.initial_sparsity = settings.check_fraction("initial_sparsity", initial_sparsity, high_open=True)
        self.begin_step = settings.check_int("begin_step", begin_step)
        self.end_step = settings.check_int("end_step", end_step)
        if self.end_step <= self.begin_step:
            raise settings.BadSetting("end_step", end_step, f"an int > begin_step ({begin_step!r})")
        self.frequency = settings.check_int("frequency", frequency, minimum=1)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise settings.BadSetting("power", power, "a number > 0")
        self.power = power
        self.scope = magnitude.check_scope(scope)
        self.structure = structure_lib.parse(structure)
        if self.structure.kind == "nm" and abs(self.final_sparsity - (1 - self.structure.n / self.structure.m)) > 1e-9:
            raise ValueError(f"structure={str(self.structure)!r} keeps {self.structure.n} of every "
                             f"{self.structure.m} weights: final_sparsity must be "
                             f"{1 - self.structure.n / self.structure.m:g}. Received: "
                             f"final_sparsity={final_sparsity!r} with structure={str(self.structure)!r}")

    @classmethod
    def from_config(cls, config):
        names = {n: f"gradual_pruning_{n}" for n in ("final_sparsity", "initial_sparsity", "begin_step",
                                                      "end_step", "frequency", "scope")}
        try:
            return cls(config.gradual_pruning_final_sparsity, config.gradual_pruning_begin_step,
                       config.gradual_pruning_end_step or config.train_steps,
                       initial_sparsity=config.gradual_pruning_initial_sparsity,
                       frequency=config.gradual_pruning_frequency, scope=config.gradual_pruning_scope,
                       structure=config.structure)
        except settings.BadSetting as e:
            raise e.renamed(names) from None

    def settings_record(self):
        return {"final_sparsity": self.final_sparsity, "initial_sparsity": self.initial_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step, "frequency": self.frequency,
                "power": self.power, "scope": self.scope, "structure": str(self.structure)}

    def target(self, step):
        """The schedule's sparsity at `step`."""
        return polynomial_sparsity(step, initial_sparsity=self.initial_sparsity,
                                   final_sparsity=self.final_sparsity, begin_step=self.begin_step,
                                   end_step=self.end_step, power=self.power)

    def is_update_step(self, step):
        return latest_update_step(step, begin_step=self.begin_step, end_step=self.end_step,
                                  frequency=self.frequency) == step

    def latest_due(self, after, upto):
        latest = latest_update_step(upto, begin_step=self.begin_step, end_step=self.end_step,
                                    frequency=self.frequency)
        return latest if latest is not None and latest > after else None

    def begin(self, step):
        self.structure.check_model(self.model)
        # a fit that starts past update steps this callback never saw (a model trained
        # without it, or begin_step=0: the update "after step 0") applies the latest one
        # first; a model that has applied it (a resumed schedule) is left as it is
        latest = latest_update_step(step, begin_step=self.begin_step, end_step=self.end_step,
                                    frequency=self.frequency)
        if latest is not None and self._changes(latest):
            self.update(latest)

    def _changes(self, step):
        """Whether the update at `step` would change a mask (not when already that sparse)."""
        new = self.new_masks(step, None)
        return any((n != transform.mask_bits(e)).any() for n, e in zip(new, self.entries))

    def update(self, step, logs=None):
        super().update(step, logs)
        if self.structure.structured:  # the masks have it now (the report checks it holds)
            transform.set_structure(self.model, str(self.structure))

    def new_masks(self, step, masks):
        return magnitude.magnitude_masks(self.entries, self.target(step), scope=self.scope,
                                         structure=self.structure, model=self.model, masks=masks)
