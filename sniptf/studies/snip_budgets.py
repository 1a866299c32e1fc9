"""SNIP against training budget: does the gap to dense close when training converges?

Dense, SNIP and random at the SNIP paper's sparsities, each trained at several
step budgets (x4 apart) with one recipe per model whose learning-rate decay
scales with the budget (x0.1 at 40% and 80% of the steps, the LeNet table's
proportions). Every run is `training.run` in its own directory and goes through
`common.run_table`: resumable, finished runs skipped. Dense and SNIP run
`LONG_SEEDS` seeds at a model's longest budget (LeNet-5-Caffe: its two longest),
one seed below it (and random one seed everywhere). The test error is the best-validation checkpoint's.

`results.json`: `{"runs": [{"dataset", "model", "criterion", "sparsity",
"steps", "seed", "test_error"} ...], "plan": ...}` with `test_error` in percent
and `steps` the run's budget (not the step of its best checkpoint).
"""

import dataclasses
import json
import os

import numpy as np

from sniptf import run_dir
from sniptf import training
from sniptf.studies.common import markdown_table
from sniptf.studies.common import run_table

CRITERIA = ("dense", "snip", "random")
LONG_SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One model's share of the study: its data, sparsities, budgets and recipe."""

    dataset: str
    model: str
    sparsities: tuple
    budgets: tuple  # train steps, ascending
    eval_every: int  # one epoch of the training split at batch 100
    optimizer: str = "momentum"
    learning_rate: float = 0.03
    weight_decay: float = 5e-4
    # dense and SNIP run `LONG_SEEDS` at this budget and longer (default: the longest)
    seeded_from: int = 0

    def seeded(self, steps):
        """True where dense and SNIP run every seed of `LONG_SEEDS`."""
        return steps >= (self.seeded_from or self.budgets[-1])


# One epoch: Fashion-MNIST's 54,000 training examples (540 steps of 100), mnist10k's
# 7,001 (70 steps). LeNet budgets are 2/8/32/128 epochs; the recurrent nets 10/40/160
# epochs with Adam (the SNIP paper's optimizer for them). LeNet-5-Caffe first stopped at
# 32 epochs; its SNIP error was still falling there (98%: 12.97 -> 11.12, 99%: 16.18 ->
# 12.70 over the last x4) while dense's was not, so it got the 128-epoch budget too, its
# 3 seeds at 32 epochs kept. Measured here (2026-12-01, one run alone, 2 cores): ~8 ms a
# step for LeNet-300-100, ~21 ms LeNet-5-Caffe, ~38 ms LSTM-s, plus ~15 s a run; two
# runs at once, one core each: ~18-20 ms and ~64 ms.
PLANS = (
    Plan("fashion_mnist", "lenet_300_100", (0.95, 0.98), (1080, 4320, 17280, 69120), 540),
    Plan("fashion_mnist", "lenet5_caffe", (0.98, 0.99), (1080, 4320, 17280, 69120), 540,
         seeded_from=17280),
    Plan("mnist10k", "lstm_s", (0.95,), (700, 2800, 11200), 70, "adam", 1e-3, 0.0),
    Plan("mnist10k", "gru_s", (0.95,), (700, 2800, 11200), 70, "adam", 1e-3, 0.0),
)
# at most this many validations per run (a long budget validates every few epochs)
MAX_EVALUATIONS = 64


def plans(models=None, study_plans=None):
    """`study_plans` (default `PLANS`), or those of `models` (zoo names) in their order.

    Raises:
        ValueError: a model the study has no plan for.
        TypeError: a plan that is not a `Plan`.
    """
    study_plans = PLANS if study_plans is None else tuple(study_plans)
    if not study_plans or not all(isinstance(p, Plan) for p in study_plans):
        raise TypeError(f"Expected a tuple of snip_budgets.Plan. Received: study_plans={study_plans!r}")
    known = [p.model for p in study_plans]
    if models is None:
        return study_plans
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        raise ValueError(f"Expected models among {known}. Received: models={list(models)!r}")
    return tuple(p for p in study_plans if p.model in models)


def run_config(plan, criterion, sparsity, steps, seed, output_dir):
    """The `TrainConfig` of one run (`sparsity` 0 for dense)."""
    every = plan.eval_every * max(1, -(-steps // (plan.eval_every * MAX_EVALUATIONS)))
    name = "dense" if criterion == "dense" else f"{criterion}_{sparsity:g}"
    return training.TrainConfig(
        model=plan.model, dataset=plan.dataset,
        criterion=training.NO_PRUNING if criterion == "dense" else criterion,
        kappa=1.0 if criterion == "dense" else round(1.0 - sparsity, 6),
        batch_size=100, train_steps=steps, eval_every=min(every, steps),
        optimizer=plan.optimizer, learning_rate=plan.learning_rate, momentum=0.9,
        lr_schedule="piecewise", lr_decay_every=max(1, int(round(0.4 * steps))),
        lr_decay_factor=0.1, weight_decay=plan.weight_decay, seed=seed,
        output_dir=os.path.join(output_dir, plan.dataset, plan.model, name, f"steps{steps}",
                                f"seed{seed}"))


def configs(study_plans, output_dir, *, long_seeds=LONG_SEEDS):
    """Every run of the study, shortest budgets first and, within a model's budget, the
    first seed of every run before the others (so an early stop still leaves whole
    curves at the short end and one seed of each run at the long end)."""
    out = []
    for plan in study_plans:
        runs = [("dense", 0.0)] + [(c, s) for s in plan.sparsities for c in CRITERIA[1:]]
        for steps in plan.budgets:
            for criterion, sparsity in runs:
                seeded = plan.seeded(steps) and criterion != "random"
                for seed in (long_seeds if seeded else long_seeds[:1]):
                    out.append((plan, criterion, sparsity, steps, seed))
    order = [p.model for p in study_plans]
    out.sort(key=lambda r: (r[3], order.index(r[0].model), r[4] != long_seeds[0]))
    return [run_config(*r, output_dir) for r in out]


def record(config, metrics):
    """One `results.json` run entry from a run's config and metrics."""
    criterion = "dense" if config.criterion == training.NO_PRUNING else config.criterion
    return {"dataset": config.dataset, "model": config.model, "criterion": criterion,
            "sparsity": 0.0 if criterion == "dense" else round(1.0 - config.kappa, 6),
            "steps": config.train_steps, "seed": config.seed,
            "test_error": 100.0 * metrics["test_error"],
            "validation_error": 100.0 * metrics["validation_error"],
            "best_step": metrics["best_step"], "diverged": bool(metrics.get("diverged")),
            "wall_time_seconds": metrics["wall_time_seconds"]}


def finished(study_configs):
    """The `record`s of the runs whose metrics.json exists (a partial study reads too)."""
    out = []
    for config in study_configs:
        path = os.path.join(config.output_dir, run_dir.FINISHED)
        if os.path.exists(path):
            with open(path) as f:
                out.append(record(config, json.load(f)))
    return out


def summary(runs):
    """Mean and std of test error per (dataset, model, criterion, sparsity, steps)."""
    groups = {}
    for r in runs:
        key = (r["dataset"], r["model"], r["criterion"], r["sparsity"], r["steps"])
        groups.setdefault(key, []).append(r["test_error"])
    return [{"dataset": d, "model": m, "criterion": c, "sparsity": s, "steps": n,
             "seeds": len(e), "test_error_mean": float(np.mean(e)), "test_error_std": float(np.std(e))}
            for (d, m, c, s, n), e in sorted(groups.items())]


def gaps(rows):
    """SNIP − dense (points) per (model, sparsity, steps) where both ran."""
    dense = {(r["model"], r["steps"]): r for r in rows if r["criterion"] == "dense"}
    out = []
    for r in rows:
        d = dense.get((r["model"], r["steps"]))
        if r["criterion"] == "snip" and d:
            out.append({"model": r["model"], "sparsity": r["sparsity"], "steps": r["steps"],
                        "gap": r["test_error_mean"] - d["test_error_mean"],
                        "seeds": min(r["seeds"], d["seeds"])})
    return out


def table_markdown(rows, study_plans):
    """Test error at each model's longest budget: dense, SNIP and random per sparsity,
    and SNIP − dense at the shortest and longest budget."""
    cells = {(r["model"], r["criterion"], r["sparsity"], r["steps"]): r for r in rows}
    lines = []
    for plan in study_plans:
        short, long = plan.budgets[0], plan.budgets[-1]
        for s in plan.sparsities:
            def cell(criterion, sparsity, steps):
                r = cells.get((plan.model, criterion, sparsity, steps))
                if not r:
                    return "–"
                return f"{r['test_error_mean']:.2f} ± {r['test_error_std']:.2f} ({r['seeds']})"

            def gap(steps):
                d, p = cells.get((plan.model, "dense", 0.0, steps)), cells.get((plan.model, "snip", s, steps))
                return f"{p['test_error_mean'] - d['test_error_mean']:+.2f}" if d and p else "–"
            lines.append([plan.dataset, plan.model, f"{s:.0%}", long, cell("dense", 0.0, long),
                          cell("snip", s, long), cell("random", s, long), gap(short), gap(long)])
    return markdown_table(["dataset", "model", "sparsity", "steps", "dense % (seeds)",
                           "SNIP % (seeds)", "random % (seeds)", "SNIP − dense, shortest",
                           "SNIP − dense, longest"], lines)


def write(output_dir, figures_dir, study_plans, study_configs):
    """results.json, table.md and the figure from the runs finished so far."""
    from sniptf.studies import plots
    runs = finished(study_configs)
    rows = summary(runs)
    results = {"runs": runs, "summary": rows, "gaps": gaps(rows),
               "plan": [dataclasses.asdict(p) for p in study_plans],
               "complete": len(runs) == len(study_configs), "planned_runs": len(study_configs)}
    run_dir.write_text(os.path.join(output_dir, "results.json"), json.dumps(results, indent=1))
    table = table_markdown(rows, study_plans)
    run_dir.write_text(os.path.join(output_dir, "table.md"), table)
    if rows:
        plots.error_vs_steps(rows, os.path.join(figures_dir, "snip_budgets.png"))
    return table


def run(*, output_dir, figures_dir, models=None, study_plans=None, long_seeds=LONG_SEEDS,
        processes=1, runs_per_process=10, report_only=False, log=print):
    """Runs every run not yet finished, then writes results.json, table.md and the
    figure; returns the table. `study_plans` (a tuple of `Plan`) replaces `PLANS`
    (smoke tests, a user's own models); `models` picks from them. `report_only`:
    runs nothing, writes them from the runs finished so far (while the study runs
    elsewhere)."""
    study_plans = plans(models, study_plans)
    study_configs = configs(study_plans, os.path.join(output_dir, "runs"), long_seeds=long_seeds)
    if report_only:
        os.makedirs(figures_dir, exist_ok=True)
        return write(output_dir, figures_dir, study_plans, study_configs)
    for config in study_configs:  # every value checked before any run
        if not os.path.exists(os.path.join(config.output_dir, run_dir.FINISHED)):
            training.prepare(config)
    os.makedirs(output_dir, exist_ok=True)
    os.makedirs(figures_dir, exist_ok=True)
    run_table(study_configs, log=log, runs_per_process=runs_per_process, processes=processes)
    return write(output_dir, figures_dir, study_plans, study_configs)
