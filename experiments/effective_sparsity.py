"""Effective sparsity of a recorded study's masks: how many kept weights lie on an
input-to-output path (issue 24, item 1).

    python experiments/effective_sparsity.py --output=docs/results/effective_sparsity_criteria.md
    python experiments/effective_sparsity.py --study=snip --recorded=docs/results/snip/results.json \
        --output=docs/results/effective_sparsity_snip.md

Each run of the recorded comparison (`criteria_comparison.configs` with its budgets) has
its mask made again at initialization exactly as `training.run` made it (the same seed,
data split, scoring batch and criterion). Where the run's metrics.json is at hand
(`--runs`) its `mask_digest_at_prune` must match; else the first seed's per-layer
sparsity must equal the one `docs/results/criteria/results.json` recorded. Masks are
fixed during training, so the mask at init is the trained model's. Prints and writes a
table: nominal and effective sparsity (mean over seeds), effective / nominal kept
weights, the live units per layer, and the recorded test error.
"""

import json
import os

import keras
import numpy as np
from absl import app
from absl import flags

import sniptf
from sniptf import data as data_lib
from sniptf import run_dir
from sniptf import training
from sniptf.sparsity_report import mask_digest
from sniptf.studies.common import markdown_table

FLAGS = flags.FLAGS
flags.DEFINE_enum("study", "criteria", ["criteria", "snip"],
                  "criteria: the criteria comparison (Fashion-MNIST); snip: the SNIP paper's LeNet table.")
flags.DEFINE_string("runs", "", "A comparison's output_dir whose runs/ hold metrics.json (optional).")
flags.DEFINE_string("recorded", "docs/results/criteria/results.json", "The comparison's results.json.")
flags.DEFINE_string("output", "docs/results/effective_sparsity_criteria.md", "The table goes here.")


def mask_of(metrics):
    """The run's model pruned at init as `training.run` prunes it."""
    keras.utils.set_random_seed(metrics["seed"])
    splits = data_lib.load_splits(metrics["dataset"], 100, seed=metrics["seed"], repeat_train=True,
                                  standardize=metrics.get("standardize", False))
    info = data_lib.info(metrics["dataset"])
    dense = sniptf.models.get(metrics["model"], info.input_shape, info.num_classes)
    return sniptf.prune(dense, splits.score_batch, kappa=metrics["kappa"], criterion=metrics["criterion"],
                        seed=metrics["seed"], scope=metrics.get("scope", "global"),
                        min_kept_per_layer=metrics.get("min_kept_per_layer", 0))


def main(argv):
    del argv
    runs = os.path.join(FLAGS.runs or "/nonexistent", "runs")
    if FLAGS.study == "criteria":
        from sniptf.studies import criteria_comparison as study
        recorded = json.load(open(FLAGS.recorded))
        configs = study.configs(dataset="fashion_mnist", models=study.MODELS, sparsities=study.SPARSITIES,
                                seeds=(0, 1, 2), budgets=study.BUDGETS, output_dir=runs)
    else:
        from sniptf.studies import snip as study
        recorded = json.load(open(FLAGS.recorded))["table"]
        datasets = sorted({r["dataset"] for r in recorded})
        configs = study.table_configs(datasets, (0, 1, 2), study.scaled_budgets(100, datasets), runs)
    recorded = {(r.get("dataset", "fashion_mnist"), r["model"], r["criterion"], r["kappa"]): r for r in recorded}
    rows = {}
    for config in configs:
        if config.criterion == training.NO_PRUNING:
            continue
        metrics = {"model": config.model, "criterion": config.criterion, "kappa": config.kappa,
                   "seed": config.seed, "dataset": config.dataset, "standardize": config.standardize}
        pruned = mask_of(metrics)
        report = sniptf.effective_sparsity(pruned)
        group = recorded.get((config.dataset, config.model, config.criterion, config.kappa))
        path = os.path.join(config.output_dir, "metrics.json")
        if os.path.exists(path):
            same = mask_digest(pruned) == json.load(open(path))["mask_digest_at_prune"]
        elif config.seed == 0 and group:
            same = all(abs(c.sparsity - group["sparsity_per_layer"][c.name]) < 1e-12
                       for c in report.nominal.layers)
        else:
            same = None  # nothing recorded to check this seed's mask against
        key = (config.dataset, config.model, config.criterion, config.kappa)
        rows.setdefault(key, []).append((same, report, group["test_error_mean"] if group else float("nan")))
        print(f"{config.dataset} {config.model} {config.criterion} {1 - config.kappa:.1%} seed {config.seed}: checked={same} "
              f"nominal {report.nominal.sparsity:.4%} effective {report.sparsity:.4%}", flush=True)
        keras.backend.clear_session()
    table = []
    for (dataset, model, criterion, kappa), found in sorted(
            rows.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][3], kv[0][2])):
        if any(same is False for same, _, _ in found):
            table.append([dataset, model, criterion, f"{1 - kappa:.1%}", "mask not reproduced", "", "", "", ""])
            continue
        reports = [r for _, r, _ in found]
        live = lambda d: f"{d.total - d.dead}/{d.total}"
        table.append([dataset, model, criterion, f"{np.mean([r.nominal.sparsity for r in reports]):.2%}",
                      f"{np.mean([r.sparsity for r in reports]):.2%}",
                      f"{np.mean([r.kept / r.nominal.kept for r in reports]):.1%}",
                      ", ".join(f"{d.name} {live(d)}" for d in reports[0].dead_units),
                      f"{sum(same is True for same, _, _ in found)} of {len(found)}",
                      f"{found[0][2]:.2f}"])
    text = markdown_table(["dataset", "model", "criterion", "nominal sparsity", "effective sparsity",
                           "effective / kept", "live units / units (seed 0)",
                           "masks checked against the record", "test error % (recorded mean)"], table)
    run_dir.write_text(FLAGS.output, text)
    print(text)


if __name__ == "__main__":
    app.run(main)
