"""Where pruning at initialization stands (issue 25): PaI masks against their sanity
checks, gradual magnitude pruning and dynamic sparse training, on one recipe.

On full Fashion-MNIST (standardized), the criteria comparison's recipe and budgets
(SGD momentum 0.9, lr 0.03, x0.1 decay at half the budget, weight decay 5e-4; the
test error of the best-validation checkpoint), 2 seeds, for LeNet-300-100 at
90/95/98/99% and LeNet-5-Caffe at 95/99%:
- at init: SNIP, GraSP, SynFlow, random with ERK proportions (`random_erk`);
- each of those masks shuffled within layers, reinitialized, and (not random's)
  inverted (`<mask>_shuffle`, `_reinit`, `_invert`: Frankle et al. 2021);
- gradual magnitude pruning from dense (`gmp`: from 10% to 2/3 of the budget,
  50 updates, one global threshold);
- SET and RigL from an ERK-random mask (`set`, `rigl`: every 100 steps to 3/4 of
  the budget, drop fraction 0.3).
- iterative magnitude pruning with rewinding (`imp`, Frankle et al. 2020), one
  trajectory per (model, seed): dense training for half the budget keeps its
  weights at a twentieth of the budget, then each round prunes the kept weights
  by magnitude (global) and trains from the rewound weights for half the budget;
  the rounds go geometrically from one of the model's sparsities to the next,
  pruning at most 40% of the kept per round (`imp_levels`). Each sparsity of the
  table is evaluated by a full-budget run from its round's rewound ticket.
Every run is one `training.run` (resumable: a finished run's metrics.json is
kept; an IMP round starts from the previous round's directory, `rewind_from`).
"""

import json
import math
import os

import numpy as np

from sniptf import run_dir
from sniptf import training
from sniptf.during_training import registry
from sniptf.studies.common import error_cell
from sniptf.studies.common import markdown_table
from sniptf.studies.common import run_stages
from sniptf.studies.criteria_comparison import BUDGETS

PAI = ("snip", "grasp", "synflow", "random_erk")
METHODS = (PAI + tuple(f"{m}_{check}" for m in PAI for check in ("shuffle", "reinit", "invert")
                       if not (m == "random_erk" and check == "invert"))
           + tuple(registry.METHODS) + ("imp",))  # the during-training methods by their registry names
SPARSITIES = {"lenet_300_100": (0.9, 0.95, 0.98, 0.99), "lenet5_caffe": (0.95, 0.99)}
IMP_MAX_FRACTION = 0.4  # of the kept weights pruned per round (Frankle et al.: 20-40%)


def imp_levels(sparsities, max_fraction=IMP_MAX_FRACTION):
    """Kept fractions after each IMP round: from 1 to each of `sparsities` in turn, in
    the fewest equal-ratio rounds that prune at most `max_fraction` of the kept per round;
    each target lands exactly."""
    levels, kept = [], 1.0
    for sparsity in sorted(sparsities):
        target = 1.0 - sparsity
        rounds = max(1, math.ceil(math.log(target / kept) / math.log(1.0 - max_fraction) - 1e-9))
        ratio = (target / kept) ** (1.0 / rounds)
        levels += [round(kept * ratio ** i, 6) for i in range(1, rounds)] + [round(target, 6)]
        kept = target
    return levels


def method_fields(method, sparsity, steps):
    """The `TrainConfig` fields that make `method` at `sparsity` with a budget of `steps`."""
    kappa = round(1.0 - sparsity, 6)
    if method == "gmp":
        # global, as the recorded table was made (GradualPruning's default is layerwise since)
        return {"criterion": training.NO_PRUNING, "during_training": "gmp", "gradual_pruning_scope": "global",
                "gradual_pruning_final_sparsity": sparsity,
                "gradual_pruning_begin_step": steps // 10, "gradual_pruning_end_step": (2 * steps) // 3,
                "gradual_pruning_frequency": max(1, ((2 * steps) // 3 - steps // 10) // 50)}
    if method in ("set", "rigl"):
        return {"criterion": "random", "scope": "erk", "kappa": kappa, "during_training": method,
                "update_every": min(100, max(1, steps // 8)), "dst_end_step": (3 * steps) // 4,
                "drop_fraction": 0.3}
    base, check = method, ""
    for name in ("shuffle", "reinit", "invert"):
        if method.endswith("_" + name):
            base, check = method[:-len(name) - 1], name
    fields = {"criterion": "random", "scope": "erk"} if base == "random_erk" else {"criterion": base}
    fields.update(kappa=kappa, sanity=check)
    return fields


def recipe(model, dataset, budget):
    steps, every, decay = budget
    return dict(model=model, dataset=dataset, standardize=True, batch_size=100, train_steps=steps,
                eval_every=every, optimizer="momentum", learning_rate=0.03, momentum=0.9,
                lr_schedule="piecewise", lr_decay_every=decay, lr_decay_factor=0.1, weight_decay=5e-4)


def _imp_dir(output_dir, dataset, model, seed, r):
    return os.path.join(output_dir, dataset, model, "imp_rounds", f"seed{seed}", f"round{r:02d}")


def imp_rounds(*, output_dir, models=tuple(SPARSITIES), sparsities=None, seeds=(0, 1), budgets=None,
               dataset="fashion_mnist"):
    """The IMP trajectories' training rounds, as stages: stage r holds round r of every
    (model, seed) and reads stage r - 1 (round 0: dense, keeping the rewind point).
    The last level needs no round of its own (its full-budget run starts from the
    round before)."""
    budgets = budgets or BUDGETS
    sparsities = sparsities or SPARSITIES
    stages = []
    for model in models:
        steps, every, decay = budgets[model]
        half = max(1, steps // 2)
        shared = recipe(model, dataset, (half, min(every, half), max(1, decay // 2)))
        levels = imp_levels(sparsities[model])
        for seed in seeds:
            for r, kept in enumerate([1.0] + levels[:-1]):
                if r == len(stages):
                    stages.append([])
                fields = (dict(criterion=training.NO_PRUNING, kappa=1.0, rewind_step=max(0, steps // 20))
                          if r == 0 else
                          dict(criterion=training.IMP, kappa=kept,
                               rewind_from=_imp_dir(output_dir, dataset, model, seed, r - 1)))
                stages[r].append(training.TrainConfig(
                    seed=seed, **shared, **fields, output_dir=_imp_dir(output_dir, dataset, model, seed, r)))
    return stages


def configs(*, output_dir, models=tuple(SPARSITIES), sparsities=None, seeds=(0, 1), methods=METHODS,
            budgets=None, dataset="fashion_mnist"):
    """`(method, sparsity, TrainConfig)` for every run of the table, dense ones
    (`method="dense"`) included (`imp`'s read `imp_rounds`' directories).
    `sparsities`: `{model: (sparsity, ...)}` (default `SPARSITIES`)."""
    budgets = budgets or BUDGETS
    sparsities = sparsities or SPARSITIES
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown methods. Expected some of {list(METHODS)}. Received: {unknown}")
    out = []
    for model in models:
        steps = budgets[model][0]
        shared = recipe(model, dataset, budgets[model])
        levels = imp_levels(sparsities[model])
        for seed in seeds:
            out.append(("dense", 0.0, training.TrainConfig(
                criterion=training.NO_PRUNING, kappa=1.0, seed=seed, **shared,
                output_dir=os.path.join(output_dir, dataset, model, "dense", f"seed{seed}"))))
        for sparsity in sparsities[model]:
            for method in methods:
                for seed in seeds:
                    fields = (dict(criterion=training.IMP, kappa=round(1.0 - sparsity, 6),
                                   rewind_from=_imp_dir(output_dir, dataset, model, seed,
                                                        levels.index(round(1.0 - sparsity, 6))))
                              if method == "imp" else method_fields(method, sparsity, steps))
                    out.append((method, sparsity, training.TrainConfig(
                        seed=seed, **shared, **fields,
                        output_dir=os.path.join(output_dir, dataset, model, f"{method}_{sparsity:g}",
                                                f"seed{seed}"))))
    return out


def summarize(planned, metrics):
    """Rows of test error mean ± std per (model, method, sparsity)."""
    groups = {}
    for (method, sparsity, config), m in zip(planned, metrics):
        groups.setdefault((config.model, method, sparsity), []).append(m)
    rows = []
    for (model, method, sparsity), ms in groups.items():
        errors = np.array([m["test_error"] for m in ms], np.float64) * 100
        finite = errors[np.isfinite(errors)]
        # a run that diverged before its first validation has no test error (NaN): the
        # mean and std are over the others, `diverged` counts it
        rows.append({"model": model, "method": method, "sparsity": sparsity, "seeds": len(ms),
                     "diverged": sum(bool(m.get("diverged")) for m in ms),
                     "final_sparsity": float(np.mean([m.get("final_sparsity", m["sparsity"]) for m in ms])),
                     "test_error_mean": float(finite.mean()) if finite.size else float("nan"),
                     "test_error_std": float(finite.std()) if finite.size else float("nan"),
                     "wall_time_seconds": float(sum(m["wall_time_seconds"] for m in ms))})
    return rows


def table(rows):
    """One row per method (dense first), one column per (model, sparsity)."""
    methods = [m for m in ("dense",) + METHODS if any(r["method"] == m for r in rows)]
    cells = {(r["model"], r["sparsity"], r["method"]): r for r in rows}
    dense = {r["model"]: r for r in rows if r["method"] == "dense"}
    order = list(SPARSITIES)  # the study's models in its order, any other after them
    settings = sorted({(r["model"], r["sparsity"]) for r in rows if r["method"] != "dense"},
                      key=lambda s: (order.index(s[0]) if s[0] in order else len(order), s))
    lines = [[method] + [error_cell(dense.get(model) if method == "dense" else cells.get((model, sparsity, method)))
                         for model, sparsity in settings]
             for method in methods]
    return markdown_table(["method"] + [f"{model} {sparsity:.0%}" for model, sparsity in settings], lines)


def _finished(config):
    return os.path.exists(os.path.join(config.output_dir, run_dir.FINISHED))


def needed_rounds(stages, planned):
    """`stages` (`imp_rounds`') cut to the rounds an unfinished IMP run of `planned` still
    reads: for each trajectory, its rounds up to the last one read. A trajectory whose IMP
    runs are all finished needs none (on a fresh machine its rounds' .npz files are gone)."""
    wanted = {c.rewind_from for method, _, c in planned if method == "imp" and not _finished(c)}
    last = {}
    for r, stage in enumerate(stages):
        for c in stage:
            if c.output_dir in wanted:
                last[(c.model, c.seed)] = r
    return [[c for c in stage if last.get((c.model, c.seed), -1) >= r] for r, stage in enumerate(stages)]


def run(*, output_dir, models=tuple(SPARSITIES), sparsities=None, seeds=(0, 1), methods=METHODS,
        budgets=None, dataset="fashion_mnist", report_only=False, processes=1, log=print):
    """Runs what is missing, `processes` runs at once; writes results.json, table.md and
    error_vs_sparsity.png; returns the table. `report_only`: runs nothing, writes them
    from the runs finished so far."""
    runs = os.path.join(output_dir, "runs")
    planned = configs(output_dir=runs, models=models, sparsities=sparsities,
                      seeds=seeds, methods=methods, budgets=budgets, dataset=dataset)
    if report_only:  # the runs finished so far (the study may be running elsewhere)
        planned = [p for p in planned if _finished(p[2])]
        stages = []
    else:  # IMP's rounds first, round by round (each reads the one before), then the table
        stages = needed_rounds(imp_rounds(output_dir=runs, models=models, sparsities=sparsities, seeds=seeds,
                                          budgets=budgets, dataset=dataset), planned) if "imp" in methods else []
    rows = summarize(planned, run_stages(stages + [[c for _, _, c in planned]], log=log,
                                           processes=processes)[-1])
    text = table(rows)
    os.makedirs(output_dir, exist_ok=True)
    run_dir.write_text(os.path.join(output_dir, "results.json"), json.dumps(rows, indent=2))
    run_dir.write_text(os.path.join(output_dir, "table.md"), text)
    if rows:
        from sniptf.studies import plots  # matplotlib only once there is something to draw
        plots.where_pai_stands(rows, os.path.join(output_dir, "error_vs_sparsity.png"),
                               title=f"Where PaI stands ({dataset}, {len(seeds)} seed(s))", models=SPARSITIES)
    return text
