"""The criteria compared on one recipe: dense, random, magnitude, SNIP, FORCE, GraSP
and SynFlow on LeNet-300-100 and LeNet-5-Caffe at several sparsities and seeds.

Every run is `training.run` with the same recipe and step budget (standardized
inputs, SGD with momentum 0.9, piecewise x0.1 decay, weight decay 5e-4), one
scoring batch of 100 for the data-driven criteria (SynFlow uses none), and the
test error of the best-validation checkpoint. Runs go through
`common.run_table`: resumable (a finished run's metrics.json is kept) and in a
worker process replaced every few runs.
"""

import json
import os

import numpy as np

from sniptf import run_dir
from sniptf import training
from sniptf.studies.common import error_cell
from sniptf.studies.common import markdown_table
from sniptf.studies.common import run_table
from sniptf.studies.common import summarize

CRITERIA = ("random", "magnitude", "snip", "force", "grasp", "synflow")
MODELS = ("lenet_300_100", "lenet5_caffe")
SPARSITIES = (0.95, 0.99, 0.999)
# (train_steps, eval_every, lr_decay_every) per model, sized for the whole comparison
# (114 runs) to take about 85 minutes on this 2-core VM: measured 2026-11-29, one
# Fashion-MNIST run took ~42 s for LeNet-300-100 at 4000 steps and 52-89 s for
# LeNet-5-Caffe at 2000 steps (FORCE's 60 scoring rounds the slowest)
BUDGETS = {"lenet_300_100": (3500, 500, 1750), "lenet5_caffe": (1600, 400, 800)}


def configs(*, dataset, models, sparsities, seeds, budgets, output_dir, criteria=CRITERIA):
    """One `TrainConfig` per (model, criterion, sparsity, seed), dense runs included."""
    out = []
    for model in models:
        steps, every, decay = budgets[model]
        runs = [(training.NO_PRUNING, 1.0)] + [(c, round(1.0 - s, 6)) for s in sparsities
                                                for c in criteria]
        for criterion, kappa in runs:
            for seed in seeds:
                name = "dense" if criterion == training.NO_PRUNING else f"{criterion}_{kappa:g}"
                out.append(training.TrainConfig(
                    model=model, dataset=dataset, standardize=True, kappa=kappa,
                    criterion=criterion, batch_size=100, train_steps=steps, eval_every=every,
                    optimizer="momentum", learning_rate=0.03, momentum=0.9,
                    lr_schedule="piecewise", lr_decay_every=decay, lr_decay_factor=0.1,
                    weight_decay=5e-4, seed=seed,
                    output_dir=os.path.join(output_dir, dataset, model, name, f"seed{seed}")))
    return out


def by_criterion(rows, criteria=CRITERIA):
    """Test error (%, mean ± std) with one row per (model, sparsity) and one column per
    criterion; the lowest mean of a row in bold (among criteria with no diverged seed),
    the dense error in its own column."""
    dense = {r["model"]: r for r in rows if r["criterion"] == training.NO_PRUNING}
    cells = {(r["model"], r["kappa"], r["criterion"]): r for r in rows}
    lines = []
    for model, kappa in sorted({(r["model"], r["kappa"]) for r in rows
                                if r["criterion"] != training.NO_PRUNING},
                               key=lambda mk: (mk[0], -mk[1])):
        found = [cells.get((model, kappa, c)) for c in criteria]
        # the best: the lowest mean among the criteria whose every seed trained
        best = min((r["test_error_mean"] for r in found if r and not r.get("diverged")
                    and np.isfinite(r["test_error_mean"])), default=None)
        row = [model, f"{1 - kappa:.1%}", error_cell(dense.get(model))]
        for r in found:
            text = error_cell(r)
            row.append(f"**{text}**" if r and not r.get("diverged") and r["test_error_mean"] == best
                       else text)
        lines.append(row)
    return markdown_table(["model", "sparsity", "dense"] + list(criteria), lines)


def run(*, output_dir, figures_dir, dataset="fashion_mnist", models=MODELS,
        sparsities=SPARSITIES, seeds=(0, 1, 2), budgets=None, criteria=CRITERIA, log=print):
    """Runs what is missing, writes results.json, table.md and the figure; returns the table."""
    from sniptf.studies import plots
    budgets = budgets or BUDGETS
    runs = configs(dataset=dataset, models=models, sparsities=sparsities, seeds=seeds,
                   budgets=budgets, output_dir=os.path.join(output_dir, "runs"), criteria=criteria)
    rows = summarize(run_table(runs, log=log))
    table = by_criterion(rows, criteria) + "\n" + markdown_table(
        ["model", "criterion", "sparsity", "test error % (mean ± std)", "seeds", "wall s"],
        [[r["model"], r["criterion"], f"{r['sparsity']:.3%}", error_cell(r), r["seeds"],
          f"{r['wall_time_seconds']:.0f}"] for r in rows])
    os.makedirs(output_dir, exist_ok=True)
    run_dir.write_text(os.path.join(output_dir, "results.json"), json.dumps(rows, indent=2))
    run_dir.write_text(os.path.join(output_dir, "table.md"), table)
    plots.error_vs_sparsity(rows, os.path.join(figures_dir, "criteria_error_vs_sparsity.png"),
                            title=f"{dataset} (standardized), {len(seeds)} seeds, best-validation "
                                  "checkpoint")
    return table

