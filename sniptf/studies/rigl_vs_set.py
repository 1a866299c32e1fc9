"""RigL against SET once both are faithful (issue 38): LeNet-300-100 on full
Fashion-MNIST at 90% and 95%, 5 seeds, the where-PaI recipe (`where_pai_stands`:
ERK-random start, an update every 100 steps to 3/4 of the 3,500-step budget, drop
fraction 0.3, SGD momentum 0.9, lr 0.03, weight decay 5e-4).

Each run's `metrics.json` keeps every mask update (`mask_updates.updates`: the
connections added, how many of the previous update's additions are still kept
after this one — `survived` — and Keras's running training loss). RigL's claim is
that the connections it grows are useful: more of them survive the next drop than
SET's random ones. `summarize` gives per (method, sparsity) the test error, the
survival fraction (survived / the previous update's added, summed over updates and
seeds) and the training loss at the last update.
"""

import json
import os

import numpy as np

from sniptf import run_dir
from sniptf import training
from sniptf.studies import where_pai_stands
from sniptf.studies.common import markdown_table
from sniptf.studies.common import run_stages
from sniptf.studies.criteria_comparison import BUDGETS

MODEL = "lenet_300_100"
METHODS = ("set", "rigl")
SPARSITIES = (0.9, 0.95)
SEEDS = (0, 1, 2, 3, 4)


def configs(*, output_dir, sparsities=SPARSITIES, seeds=SEEDS, budget=None, dataset="fashion_mnist"):
    """`(method, sparsity, TrainConfig)` of every run."""
    budget = budget or BUDGETS[MODEL]
    recipe = where_pai_stands.recipe(MODEL, dataset, budget)
    return [(method, sparsity, training.TrainConfig(
                seed=seed, **recipe, **where_pai_stands.method_fields(method, sparsity, budget[0]),
                output_dir=os.path.join(output_dir, f"{method}_{sparsity:g}", f"seed{seed}")))
            for sparsity in sparsities for method in METHODS for seed in seeds]


def survival(updates):
    """(survived, previous added) summed over the updates that follow another one."""
    pairs = [(u["survived"], p["added"]) for p, u in zip(updates, updates[1:]) if u["survived"] is not None]
    return sum(s for s, _ in pairs), sum(a for _, a in pairs)


def summarize(planned, metrics):
    """One row per (method, sparsity) from the runs' metrics (in `planned`'s order)."""
    cells = {}
    for (method, sparsity, _), m in zip(planned, metrics):
        cells.setdefault((method, sparsity), []).append(m)
    rows = []
    for (method, sparsity), runs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        errors = [100.0 * r["test_error"] for r in runs]
        kept = [survival(r["mask_updates"]["updates"]) for r in runs]
        per_update = np.array([[u["survived"] / p["added"] if p["added"] else np.nan
                                for p, u in zip(r["mask_updates"]["updates"], r["mask_updates"]["updates"][1:])]
                               for r in runs], dtype=float)
        rows.append({"method": method, "sparsity": sparsity, "seeds": len(runs),
                     "test_error_mean": float(np.mean(errors)), "test_error_std": float(np.std(errors)),
                     "test_errors": errors,
                     "survival": sum(s for s, _ in kept) / max(1, sum(a for _, a in kept)),
                     "survival_per_seed": [s / a if a else None for s, a in kept],
                     "survival_per_update": np.nanmean(per_update, axis=0).tolist(),
                     "added_per_update": np.mean([[u["added"] for u in r["mask_updates"]["updates"]]
                                                  for r in runs], axis=0).tolist(),
                     "loss_at_last_update": float(np.mean([r["mask_updates"]["updates"][-1]["loss"]
                                                           for r in runs])),
                     "loss_per_update": np.mean([[u["loss"] for u in r["mask_updates"]["updates"]]
                                                 for r in runs], axis=0).tolist(),
                     "updates": len(runs[0]["mask_updates"]["updates"])})
    return rows


def table(rows):
    """The markdown table of `summarize`'s rows."""
    return markdown_table(
        ["sparsity", "method", "test error % (mean ± std)", "grown that survive the next update",
         "per seed", "train loss at last update", "updates"],
        [[f"{r['sparsity']:.0%}", r["method"], f"{r['test_error_mean']:.2f} ± {r['test_error_std']:.2f}",
          f"{r['survival']:.1%}", " ".join(f"{s:.1%}" for s in r["survival_per_seed"]),
          f"{r['loss_at_last_update']:.4f}", r["updates"]] for r in rows])


def run(*, output_dir, sparsities=SPARSITIES, seeds=SEEDS, budget=None, dataset="fashion_mnist",
        processes=1, log=print):
    """Runs what is missing (finished runs are kept); writes results.json and table.md."""
    planned = configs(output_dir=os.path.join(output_dir, "runs"), sparsities=sparsities, seeds=seeds,
                      budget=budget, dataset=dataset)
    metrics = run_stages([[c for _, _, c in planned]], log=log, processes=processes)[-1]
    rows = summarize(planned, metrics)
    text = table(rows)
    run_dir.write_text(os.path.join(output_dir, "results.json"), json.dumps(rows, indent=2))
    run_dir.write_text(os.path.join(output_dir, "table.md"), text)
    return text
