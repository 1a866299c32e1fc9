"""Why SNIP trails dense on Fashion-MNIST LeNets: the recipe or the task? (issue 22, item 2)

    python experiments/snip_gap_causes.py --output_dir=out/snip_gap_causes
    python experiments/snip_gap_causes.py --model=lenet5_caffe --sparsities=0.98,0.99 --output_dir=...

Dense and SNIP at 95% (`--sparsities`; LeNet-300-100 unless `--model`) under the
SNIP-budget study's recipe at its 4,320-step budget (`snip_budgets.run_config`: SGD
momentum 0.9, lr 0.03, x0.1 at 40% and 80%, weight decay 5e-4 on every kernel, batch
100, [0, 1] inputs; seed 0), and under one change each:
- `no_weight_decay`; `lr_0.1`; `lr_0.05`; `lr_0.01` (the shared lr was chosen for dense LeNet-5);
- `standardized` inputs (the authors');
- `mnist10k` (the same recipe on MNIST digits: does a harder task make capacity bind?);
- `authors`: the SNIP authors' code's settings together — lr 0.1, standardized inputs,
  and for SNIP biases scored and masked (all pruned: zero at init) and the weights
  re-drawn after scoring (the budget's decay schedule is kept: theirs is x0.1 every 25k);
  `authors_sgd` the same with plain SGD, their code's default optimizer (the paper says
  momentum 0.9, under which dense LeNet-5-Caffe diverges here).
For each run: test error, and the training error of its best-validation checkpoint on
the whole training split (a gap in training error says the sparse net underfits; a gap
in test error only, that it generalizes worse). Resumable: finished runs are skipped.
Writes `<output_dir>/results.json` (adding to the runs recorded there: other models,
budgets and variants are kept) and prints a table of this command's runs.
"""

import dataclasses
import os

from absl import app
from absl import flags

from sniptf import data as data_lib
from sniptf.studies import snip_budgets
from sniptf.studies.common import checkpoint_error
from sniptf.studies.common import merge_records
from sniptf.studies.common import run_here

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "out/snip_gap_causes", "runs/ and results.json go here.")
flags.DEFINE_integer("steps", 4320, "Training budget (8 epochs of Fashion-MNIST).", lower_bound=1)
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_list("variants", [], "Recipes to run (default: all of VARIANTS).")
flags.DEFINE_enum("model", "lenet_300_100", ["lenet_300_100", "lenet5_caffe"], "A LeNet of the budget study.")
flags.DEFINE_list("sparsities", ["0.95"], "SNIP's sparsities.")
VARIANTS = {"base": {}, "no_weight_decay": {"weight_decay": 0.0}, "lr_0.1": {"learning_rate": 0.1},
            "lr_0.05": {"learning_rate": 0.05},
            "lr_0.01": {"learning_rate": 0.01}, "standardized": {"standardize": True},
            "mnist10k": {"dataset": "mnist10k"},
            "authors": {"learning_rate": 0.1, "standardize": True},
            "authors_sgd": {"optimizer": "sgd", "learning_rate": 0.1, "standardize": True}}
# what a variant changes in the pruned runs only: the SNIP authors' code scores and masks
# the biases too (zero at init: all pruned) and re-draws the weights after scoring
PRUNED_FIELDS = {"authors": {"include_biases": True, "reinitialize": True},
                 "authors_sgd": {"include_biases": True, "reinitialize": True}}


def train_error(config):
    """Error of the run's best-validation checkpoint on its whole training split."""
    train = data_lib.load(config.dataset, "train", batch_size=1000, standardize=config.standardize)
    return checkpoint_error(config.output_dir, train)


def main(argv):
    del argv
    plan = next(p for p in snip_budgets.PLANS if p.model == FLAGS.model)
    try:
        sparsities = [float(s) for s in FLAGS.sparsities]
    except ValueError:
        sparsities = []
    if not sparsities or not all(0.0 < s < 1.0 for s in sparsities):
        raise app.UsageError(f"Expected --sparsities in (0, 1). Received: {FLAGS.sparsities}")
    # the first runs (LeNet-300-100, SNIP at 95%) keep their directories; other models' go
    # under the model's name, SNIP's under its sparsity (dense is shared)
    legacy = FLAGS.model == "lenet_300_100"
    where = [] if legacy else [FLAGS.model]
    unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"Unknown --variants. Expected some of {list(VARIANTS)}. Received: {unknown}")
    variants = {v: f for v, f in VARIANTS.items() if v in (FLAGS.variants or VARIANTS)}
    results = []
    for variant, fields in variants.items():
        for criterion, sparsity in [("dense", 0.0)] + [("snip", s) for s in sparsities]:
            name = criterion if criterion == "dense" or (legacy and sparsity == 0.95) else f"snip_{sparsity:g}"
            for seed in map(int, FLAGS.seeds):
                base = snip_budgets.run_config(plan, criterion, sparsity, FLAGS.steps, seed, FLAGS.output_dir)
                pruned = PRUNED_FIELDS.get(variant, {}) if criterion != "dense" else {}
                config = dataclasses.replace(base, **fields, **pruned, output_dir=os.path.join(
                    FLAGS.output_dir, "runs", *where, variant, name, f"steps{FLAGS.steps}", f"seed{seed}"))
                metrics = run_here(config)
                results.append({"model": config.model, "variant": variant, "criterion": criterion,
                                "sparsity": sparsity, "seed": seed,
                                "dataset": config.dataset, "steps": config.train_steps,
                                "optimizer": config.optimizer,
                                "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
                                "standardize": config.standardize,
                                "include_biases": config.include_biases, "reinitialize": config.reinitialize,
                                "test_error": 100 * metrics["test_error"],
                                # a diverged run (dense LeNet-5-Caffe at lr 0.1) has no best checkpoint
                                "train_error": float("nan") if metrics["diverged"] else 100 * train_error(config),
                                "diverged": metrics["diverged"],
                                "best_step": metrics["best_step"]})
                merge_records(os.path.join(FLAGS.output_dir, "results.json"), results,
                              ("model", "variant", "criterion", "sparsity", "seed", "steps"))
    print("| variant | SNIP sparsity | dense test | SNIP test | gap | dense train | SNIP train | train gap |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)
    for variant in variants:
        d = [r for r in results if r["variant"] == variant and r["criterion"] == "dense"]
        for sparsity in sparsities:
            s = [r for r in results if r["variant"] == variant and r["sparsity"] == sparsity]
            print(f"| {variant} | {sparsity:g} | {mean(d, 'test_error'):.2f} | {mean(s, 'test_error'):.2f} | "
                  f"{mean(s, 'test_error') - mean(d, 'test_error'):+.2f} | {mean(d, 'train_error'):.2f} | "
                  f"{mean(s, 'train_error'):.2f} | {mean(s, 'train_error') - mean(d, 'train_error'):+.2f} |")

if __name__ == "__main__":
    app.run(main)
