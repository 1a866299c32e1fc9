"""SNIP paper experiments (Lee et al., ICLR 2019) on the data this machine has.

    python scripts/snip_experiments.py --output_dir=out/snip --figures_dir=docs/figures

Experiments (--experiments, any subset):
  table        LeNet-300-100 / LeNet-5-Caffe: dense, SNIP, random, magnitude at the paper's
               sparsities, mean ± std over --seeds, on --datasets (budgets below);
  sequential   LSTM-s and GRU-s at 95% vs dense on sequential mnist10k;
  patterns     first-layer masks summed per pixel for one-class batches (b = 1, 10, 100);
  memorization dense vs SNIP-pruned LeNet-300-100 trained on shuffled labels.
Table runs are resumable: each writes <output_dir>/runs/<dataset>/<model>/<run>/seed<k>/ and
finished runs are skipped.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf import plots
from sniptf import snip_study

EXPERIMENTS = ("table", "sequential", "patterns", "memorization")
FLAGS = flags.FLAGS
flags.DEFINE_multi_enum("experiments", list(EXPERIMENTS), EXPERIMENTS, "Which experiments to run.")
flags.DEFINE_list("datasets", ["mnist10k", "fashion_mnist"], "Table datasets.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Table seeds.")
flags.DEFINE_integer("epochs_scale", 100, "Percent of the default training budgets.", lower_bound=1)
flags.DEFINE_integer("sequential_epochs", 20, "Epochs of the LSTM/GRU runs.", lower_bound=1)
flags.DEFINE_integer("memorization_epochs", 100, "Epochs on shuffled labels.", lower_bound=1)
flags.DEFINE_string("output_dir", "out/snip", "results.json, tables.md, flags.txt and runs/ go here.")
flags.DEFINE_string("figures_dir", "out/snip/figures", "PNG figures go here.")

# (train_steps, eval_every, lr_decay_every) per (dataset, model) at --epochs_scale=100:
# the authors' 25k-step decay scaled to budgets that fit 2 CPU cores.
BUDGETS = {
    ("mnist10k", "lenet_300_100"): (3000, 100, 1200),
    ("mnist10k", "lenet5_caffe"): (1500, 100, 600),
    ("fashion_mnist", "lenet_300_100"): (3240, 540, 1300),
    ("fashion_mnist", "lenet5_caffe"): (1620, 540, 650),
}


def _scaled(budget, percent):
    steps, every, decay = budget
    epochs = max(1, round(steps / every * percent / 100))
    return epochs * every, every, max(1, round(decay * percent / 100))


def _table_md(rows):
    lines = ["| dataset | model | run | sparsity | test error (mean ± std) | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["model"], -r["kappa"], r["criterion"])):
        run = "dense" if r["criterion"] == "none" else r["criterion"]
        lines.append(f"| {r['dataset']} | {r['model']} | {run} | {100 * r['sparsity']:.0f}% | "
                     f"{r['test_error_mean']:.2f} ± {r['test_error_std']:.2f}% | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.datasets) - set(data.DATASETS))
    if unknown:
        raise app.UsageError(f"Unknown --datasets {unknown}; choose from {sorted(data.DATASETS)}")
    if not set(FLAGS.datasets) <= {d for d, _ in BUDGETS}:
        raise app.UsageError(f"The table has budgets for {sorted({d for d, _ in BUDGETS})} only.")
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as e:
        raise app.UsageError(f"--seeds must be integers: {FLAGS.seeds}") from e
    for d in (FLAGS.output_dir, FLAGS.figures_dir):
        os.makedirs(d, exist_ok=True)
    FLAGS.append_flags_into_file(os.path.join(FLAGS.output_dir, "flags.txt"))
    results_path = os.path.join(FLAGS.output_dir, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    seconds = results.setdefault("seconds", {})
    tables = []
    for name in FLAGS.experiments:
        start = time.perf_counter()
        logging.info("running %s", name)
        if name == "table":
            budgets = {k: _scaled(v, FLAGS.epochs_scale) for k, v in BUDGETS.items()}
            configs = snip_study.table_configs(FLAGS.datasets, seeds, budgets,
                                               os.path.join(FLAGS.output_dir, "runs"))
            rows = snip_study.summarize(snip_study.run_table(configs, log=logging.info))
            results["table"] = rows
            results["table_budgets"] = {f"{d}/{m}": b for (d, m), b in budgets.items()}
            tables.append(_table_md(rows))
            plots.layer_sparsity([r for r in rows if r["criterion"] == "snip" and r["dataset"] == FLAGS.datasets[0]],
                                 os.path.join(FLAGS.figures_dir, "snip_layer_sparsity.png"),
                                 title=f"SNIP: kept weights per layer ({FLAGS.datasets[0]}, seed {seeds[0]})")
        elif name == "sequential":
            rows = snip_study.sequential(epochs=FLAGS.sequential_epochs)
            results["sequential"] = rows
            tables.append("| model | run | test error |\n| --- | --- | --- |\n" + "\n".join(
                f"| {r['model']} | {r['run']} ({100 * (1 - r['kappa']):.0f}% sparse) | "
                f"{100 * r['test_error']:.2f}% |" for r in rows) + "\n")
        elif name == "patterns":
            maps = snip_study.first_layer_patterns()
            results["patterns"] = {str(b): m.tolist() for b, m in maps.items()}
            plots.mask_patterns(maps, os.path.join(FLAGS.figures_dir, "snip_patterns.png"),
                                title="LeNet-300-100 first-layer connections kept per pixel (SNIP, 95% sparse)")
        else:
            result = snip_study.memorization(epochs=FLAGS.memorization_epochs)
            results["memorization"] = result
            plots.memorization(result, os.path.join(FLAGS.figures_dir, "snip_memorization.png"),
                               title="LeNet-300-100 on mnist10k with shuffled labels")
        seconds[name] = time.perf_counter() - start
        logging.info("%s took %.0f s", name, seconds[name])
        with open(results_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(results_path + ".tmp", results_path)
    with open(os.path.join(FLAGS.output_dir, "tables.md"), "w") as f:
        f.write("\n".join(tables))
    print("\n".join(tables))


if __name__ == "__main__":
    app.run(main)
