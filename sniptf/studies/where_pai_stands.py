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
  50 updates);
- SET and RigL from an ERK-random mask (`set`, `rigl`: every 100 steps to 3/4 of
  the budget, drop fraction 0.3).
Every run is one `training.run` (resumable: a finished run's metrics.json is
kept). Iterative magnitude pruning with rewinding (`studies/imp.py`) is not in
this table yet.
"""

import json
import os

import numpy as np

from sniptf import run_dir
from sniptf import training
from sniptf.studies.common import markdown_table
from sniptf.studies.common import run_table
from sniptf.studies.criteria_comparison import BUDGETS

PAI = ("snip", "grasp", "synflow", "random_erk")
METHODS = (PAI + tuple(f"{m}_{check}" for m in PAI for check in ("shuffle", "reinit", "invert")
                       if not (m == "random_erk" and check == "invert"))
           + ("gmp", "set", "rigl"))
SPARSITIES = {"lenet_300_100": (0.9, 0.95, 0.98, 0.99), "lenet5_caffe": (0.95, 0.99)}


def method_fields(method, sparsity, steps):
    """The `TrainConfig` fields that make `method` at `sparsity` with a budget of `steps`."""
    kappa = round(1.0 - sparsity, 6)
    if method == "gmp":
        return {"criterion": training.NO_PRUNING, "gradual_pruning_final_sparsity": sparsity,
                "gradual_pruning_begin_step": steps // 10, "gradual_pruning_end_step": (2 * steps) // 3,
                "gradual_pruning_frequency": max(1, ((2 * steps) // 3 - steps // 10) // 50)}
    if method in ("set", "rigl"):
        return {"criterion": "random", "scope": "erk", "kappa": kappa, "dst": method,
                "update_every": min(100, max(1, steps // 8)), "dst_end_step": (3 * steps) // 4,
                "drop_fraction": 0.3}
    base, check = method, ""
    for name in ("shuffle", "reinit", "invert"):
        if method.endswith("_" + name):
            base, check = method[:-len(name) - 1], name
    fields = {"criterion": "random", "scope": "erk"} if base == "random_erk" else {"criterion": base}
    fields.update(kappa=kappa, sanity=check)
    return fields


def configs(*, output_dir, models=tuple(SPARSITIES), sparsities=None, seeds=(0, 1), methods=METHODS,
            budgets=None, dataset="fashion_mnist"):
    """`(method, sparsity, TrainConfig)` for every run, dense ones (`method="dense"`) included.
    `sparsities`: `{model: (sparsity, ...)}` (default `SPARSITIES`)."""
    budgets = budgets or BUDGETS
    sparsities = sparsities or SPARSITIES
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown methods. Expected some of {list(METHODS)}. Received: {unknown}")
    out = []
    for model in models:
        steps, every, decay = budgets[model]
        recipe = dict(model=model, dataset=dataset, standardize=True, batch_size=100, train_steps=steps,
                      eval_every=every, optimizer="momentum", learning_rate=0.03, momentum=0.9,
                      lr_schedule="piecewise", lr_decay_every=decay, lr_decay_factor=0.1, weight_decay=5e-4)
        for seed in seeds:
            out.append(("dense", 0.0, training.TrainConfig(
                criterion=training.NO_PRUNING, kappa=1.0, seed=seed, **recipe,
                output_dir=os.path.join(output_dir, dataset, model, "dense", f"seed{seed}"))))
        for sparsity in sparsities[model]:
            for method in methods:
                for seed in seeds:
                    out.append((method, sparsity, training.TrainConfig(
                        seed=seed, **recipe, **method_fields(method, sparsity, steps),
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
        rows.append({"model": model, "method": method, "sparsity": sparsity, "seeds": len(ms),
                     "final_sparsity": float(np.mean([m.get("final_sparsity", m["sparsity"]) for m in ms])),
                     "test_error_mean": float(finite.mean()) if finite.size else float("nan"),
                     "test_error_std": float(finite.std()) if finite.size else float("nan"),
                     "wall_time_seconds": float(sum(m["wall_time_seconds"] for m in ms))})
    return rows


def table(rows):
    """One row per (model, sparsity), one column per method."""
    methods = [m for m in ("dense",) + METHODS if any(r["method"] == m for r in rows)]
    cells = {(r["model"], r["sparsity"], r["method"]): r for r in rows}
    dense = {r["model"]: r for r in rows if r["method"] == "dense"}
    lines = []
    for model, sparsity in sorted({(r["model"], r["sparsity"]) for r in rows if r["method"] != "dense"}):
        line = [model, f"{sparsity:.0%}"]
        for method in methods:
            r = dense.get(model) if method == "dense" else cells.get((model, sparsity, method))
            line.append("–" if r is None else f"{r['test_error_mean']:.2f} ± {r['test_error_std']:.2f}")
        lines.append(line)
    return markdown_table(["model", "sparsity"] + methods, lines)


def run(*, output_dir, models=tuple(SPARSITIES), sparsities=None, seeds=(0, 1), methods=METHODS,
        budgets=None, dataset="fashion_mnist", log=print):
    """Runs what is missing; writes results.json and table.md; returns the table."""
    planned = configs(output_dir=os.path.join(output_dir, "runs"), models=models, sparsities=sparsities,
                      seeds=seeds, methods=methods, budgets=budgets, dataset=dataset)
    rows = summarize(planned, run_table([c for _, _, c in planned], log=log))
    text = table(rows)
    os.makedirs(output_dir, exist_ok=True)
    run_dir.write_text(os.path.join(output_dir, "results.json"), json.dumps(rows, indent=2))
    run_dir.write_text(os.path.join(output_dir, "table.md"), text)
    return text
