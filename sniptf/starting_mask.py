"""The mask a training run starts from: dense, a criterion's at initialization, one
round of iterative magnitude pruning, and the sanity checks of a mask.

`StartSettings` are the `TrainConfig` fields that choose it; `check` checks how
they go together (each value itself is checked by the function that uses it);
`start` builds the model to train from the dense one.
"""

import dataclasses
import os

from sniptf import criteria
from sniptf import sanity as sanity_lib
from sniptf import selection
from sniptf import structure
from sniptf.during_training import rewinding
from sniptf.effective_sparsity_report import effective_sparsity
from sniptf.pruning import prune
from sniptf.settings import setting
from sniptf.transform import wrap

NO_PRUNING = "none"
# the mask of a previous run, pruned further by magnitude and rewound (rewind_from)
IMP = "imp"
SANITY_CHECKS = ("", "shuffle", "reinit", "invert")


def criterion_names():
    """What `criterion` takes: every registered criterion, `none` and `imp`."""
    return tuple(sorted(criteria.CRITERIA)) + (NO_PRUNING, IMP)


@dataclasses.dataclass
class StartSettings:
    """The `TrainConfig` fields that choose the starting mask."""

    kappa: float = setting(0.05, "Fraction of prunable weights kept, in (0, 1].")
    criterion: str = setting("snip", "Pruning criterion; 'none' trains the dense model; 'imp' prunes the "
                             "final weights of --rewind_from by magnitude and rewinds (iterative magnitude "
                             "pruning, one round).", choices=criterion_names)
    scope: str = setting("global", "Selection: global ranking, the same fraction per layer, or ERK budgets.",
                         choices=selection.SCOPES)
    structure: str = setting("unstructured", "Which weights are kept or removed together: unstructured, "
                                             "N:M (e.g. 2:4, with --kappa=N/M), blocks:K (e.g. blocks:4) or "
                                             "channels; --during_training=gmp prunes with it too.")
    min_kept_per_layer: int = setting(0, "Collapse guard: weights every layer keeps at least.", lower_bound=0)
    score_batches: int = setting(1, "Batches the criterion scores on (gradients summed).", lower_bound=1)
    isometry_steps: int = setting(0, "Approximate isometry on the pruned kernels for this many steps "
                                     "(Lee et al., ICLR 2020; 0: off).", lower_bound=0)
    include_biases: bool = setting(False, "As the SNIP authors' code: biases are scored and masked too "
                                          "(zero at init, they are pruned first).")
    reinitialize: bool = setting(False, "As the SNIP authors' code: the weights are re-drawn (same "
                                        "initializers) after scoring, then masked.")
    sanity: str = setting("", "A sanity check of the mask (Frankle et al. 2021): shuffle within layers, "
                              "reinitialize, or keep the lowest scores.", choices=SANITY_CHECKS)
    rewind_step: int = setting(-1, "Keep the weights after this step in <output_dir>/rewind.npz (for "
                                   "sniptf.rewind; -1: off) and the final ones in final.npz (for "
                                   "--rewind_from).", lower_bound=-1)
    rewind_from: str = setting("", "--criterion=imp: a finished run's directory (final.npz, rewind.npz): "
                                   "start from its final mask pruned by magnitude to 1 - --kappa, kept "
                                   "weights rewound.")


def check(config):
    """The starting-mask fields of `config`, each checked where it is used and how
    they go together. Raises ValueError naming the first bad one."""
    at_init = config.criterion not in (NO_PRUNING, IMP)
    for name in ("include_biases", "reinitialize"):
        if getattr(config, name) and not at_init:
            raise ValueError(f"{name} is a switch of pruning at init; pick a criterion. "
                             f"Received: {name}=True with criterion={config.criterion!r}")
    if at_init:
        criteria.get_criterion(config.criterion)
    shape = structure.parse(config.structure)
    if config.criterion != NO_PRUNING:
        shape.check_kappa(config.kappa)
    if shape.structured and (config.criterion == IMP or config.sanity == "shuffle"):
        what = f"criterion={config.criterion!r}" if config.criterion == IMP else f"sanity={config.sanity!r}"
        raise ValueError(f"{what} chooses single weights and would break structure={config.structure!r}. "
                         f"Received: {what} with structure={config.structure!r}")
    _check_rewind_from(config)
    shape.check_scope(config.scope)
    selection.check_min_kept(config.min_kept_per_layer)
    if config.sanity not in SANITY_CHECKS:
        raise ValueError(f"Expected sanity to be one of {SANITY_CHECKS}. Received: sanity={config.sanity!r}")
    if config.sanity and config.criterion == NO_PRUNING:
        raise ValueError(f"A sanity check changes a mask found at init; pick a criterion. "
                         f"Received: sanity={config.sanity!r} with criterion={config.criterion!r}")
    if config.sanity == "invert" and config.criterion == IMP:
        raise ValueError(f"sanity='invert' keeps the lowest scores of a criterion at init; an IMP mask "
                         f"takes 'shuffle' or 'reinit'. Received: sanity={config.sanity!r} with "
                         f"criterion={config.criterion!r}")
    if config.isometry_steps and not at_init:
        raise ValueError(f"isometry_steps restores signal propagation after pruning at init; pick a "
                         f"criterion. Received: isometry_steps={config.isometry_steps!r} with "
                         f"criterion={config.criterion!r}")


def _check_rewind_from(config):
    """`rewind_from` goes with `criterion="imp"` (and only with it), names a finished run
    that kept a rewind point, and replaces `rewind_step`; the scope is global or layerwise."""
    if config.criterion != IMP:
        if config.rewind_from:
            raise ValueError(f"rewind_from starts a round of iterative magnitude pruning: set criterion="
                             f"'{IMP}'. Received: rewind_from={config.rewind_from!r} with "
                             f"criterion={config.criterion!r}")
        return
    if not config.rewind_from:
        raise ValueError(f"criterion='{IMP}' prunes the masks of a previous run: name its directory. "
                         f"Received: rewind_from={config.rewind_from!r}")
    if os.path.abspath(config.rewind_from) == os.path.abspath(config.output_dir):
        raise ValueError(f"A round writes a new run: rewind_from must name another directory than "
                         f"output_dir. Received: rewind_from={config.rewind_from!r}")
    if not isinstance(config.kappa, float):
        raise ValueError(f"criterion='{IMP}' takes kappa as the fraction of weights a round keeps (a float "
                         f"in (0, 1]). Received: kappa={config.kappa!r}")
    source = rewinding.source_sparsity(config.rewind_from)
    if 1.0 - config.kappa < source - 1e-9:  # rewinding.next_round counts it exactly
        raise ValueError(f"A round prunes further (masks only shrink): kappa must be at most the fraction "
                         f"the run in rewind_from kept ({1.0 - source:.6g}). Received: kappa={config.kappa!r}")
    if config.rewind_step != -1:
        raise ValueError(f"A criterion='{IMP}' run rewinds to the rewind point of the run it starts from "
                         f"(and keeps it for the next round). Received: rewind_step={config.rewind_step!r} "
                         f"with rewind_from={config.rewind_from!r}")
    if config.scope not in ("global", "layerwise"):
        raise ValueError(f"Magnitude pruning for criterion='{IMP}' is global or layerwise. "
                         f"Received: scope={config.scope!r}")


def start(config, dense, score_data, *, masks_change):
    """The model to train, from the freshly built `dense` one (under the strategy's
    scope): pruned at init by the criterion, or one IMP round from `rewind_from`, or
    `dense` itself (wrapped with dense masks when `masks_change` during training or a
    rewind point is kept); then the sanity check, if any."""
    if config.criterion == NO_PRUNING:
        model = wrap(dense) if masks_change or config.rewind_step >= 0 else dense
    elif config.criterion == IMP:
        model = rewinding.next_round(wrap(dense), config.rewind_from, 1.0 - config.kappa, scope=config.scope)
    else:
        model = prune(dense, score_data, kappa=config.kappa, criterion=config.criterion, seed=config.seed,
                      scope=config.scope, min_kept_per_layer=config.min_kept_per_layer,
                      structure=config.structure, num_batches=config.score_batches, invert=config.sanity == "invert",
                      include_biases=config.include_biases, reinitialize=config.reinitialize,
                      isometry={"steps": config.isometry_steps} if config.isometry_steps else False)
    if config.sanity == "shuffle":  # check refused a sanity check without a mask
        model = sanity_lib.shuffle_within_layers(model, seed=config.seed)
    elif config.sanity == "reinit":
        model = sanity_lib.reinitialize(model, seed=config.seed)
    return model


def effective(model):
    """Effective sparsity of the starting mask: kept weights on an input-to-output path,
    dead units; None for a model without a layer graph."""
    try:
        report = effective_sparsity(model)
    except ValueError:
        return None
    return {"kept_weights": report.kept, "sparsity": report.sparsity,
            "sparsity_per_layer": {c.name: c.sparsity for c in report.layers},
            "dead_units": {d.name: {"constant": d.constant, "unused": d.unused, "dead": d.dead,
                                    "total": d.total} for d in report.dead_units},
            "taken_whole": [name for name, _ in report.whole]}
