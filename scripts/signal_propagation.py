"""Signal propagation at initialization (Lee et al., ICLR 2020): JSV, trainability,
pruning without supervision, transfer of sparsity.

    python scripts/signal_propagation.py --output_dir=out/signal --figures_dir=docs/figures

Writes results.json and tables.md into --output_dir and PNG figures into --figures_dir.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from sniptf import data
from sniptf import plots
from sniptf import signal_study

EXPERIMENTS = ("jsv", "trainability", "supervision", "transfer")
FLAGS = flags.FLAGS
flags.DEFINE_multi_enum("experiments", list(EXPERIMENTS), EXPERIMENTS, "Which experiments to run.")
flags.DEFINE_enum("dataset", "mnist10k", sorted(data.DATASETS), "Training data (trainability, supervision).")
flags.DEFINE_enum("transfer_source", "fashion_mnist", sorted(data.DATASETS), "Transfer: masks found on this.")
flags.DEFINE_enum("transfer_target", "mnist10k", sorted(data.DATASETS), "Transfer: trained on this.")
flags.DEFINE_integer("width", 100, "Hidden width of the MLPs.", lower_bound=1)
flags.DEFINE_integer("depth", 7, "Dense layers in the MLPs.", lower_bound=2)
flags.DEFINE_integer("isometry_steps", 2000, "Approximate-isometry SGD steps (lr 0.1).", lower_bound=0)
flags.DEFINE_integer("epochs", 20, "Training epochs.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.01, "SGD (momentum 0.9) learning rate.", lower_bound=0.0)
flags.DEFINE_list("sparsities", ["0", "0.5", "0.7", "0.9", "0.95", "0.98", "0.99"], "JSV sparsity levels.")
flags.DEFINE_list("train_sparsities", ["0.9", "0.95", "0.98"], "Sparsity levels of the training runs.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("output_dir", "out/signal", "results.json, tables.md and flags.txt go here.")
flags.DEFINE_string("figures_dir", "out/signal/figures", "PNG figures go here.")


def _floats(values, name):
    try:
        out = tuple(float(v) for v in values)
    except ValueError as e:
        raise app.UsageError(f"--{name} must be numbers in [0, 1): {values}") from e
    if not all(0.0 <= v < 1.0 for v in out):
        raise app.UsageError(f"--{name} must be in [0, 1): {values}")
    return out


def _table(rows, key, title):
    sparsities = sorted({r["sparsity"] for r in rows})
    kinds = list(dict.fromkeys(r[key] for r in rows))
    lines = [f"### {title}", "", "| " + key + " | " + " | ".join(f"{100 * s:g}% sparse" for s in sparsities) + " |",
             "| --- |" + " --- |" * len(sparsities)]
    for kind in kinds:
        cells = [next(f"{100 * r['test_error']:.2f}%" for r in rows if r[key] == kind and r["sparsity"] == s)
                 for s in sparsities]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    sparsities = _floats(FLAGS.sparsities, "sparsities")
    train_sparsities = _floats(FLAGS.train_sparsities, "train_sparsities")
    for d in (FLAGS.output_dir, FLAGS.figures_dir):
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise app.UsageError(f"cannot create {d}: {e}") from e
    FLAGS.append_flags_into_file(os.path.join(FLAGS.output_dir, "flags.txt"))
    common = dict(width=FLAGS.width, depth=FLAGS.depth, isometry_steps=FLAGS.isometry_steps, seed=FLAGS.seed)
    train = dict(epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate, **common)
    results, tables, seconds = {}, [], {}
    for name in FLAGS.experiments:
        start = time.perf_counter()
        logging.info("running %s", name)
        if name == "jsv":
            rows = signal_study.jsv_vs_sparsity(dataset=FLAGS.dataset, sparsities=sparsities, **common)
            plots.jsv_vs_sparsity(rows, os.path.join(FLAGS.figures_dir, "jsv_vs_sparsity.png"),
                                  title=f"{FLAGS.depth}-layer MLPs (width {FLAGS.width}), SNIP on {FLAGS.dataset}")
        elif name == "trainability":
            rows = signal_study.trainability(dataset=FLAGS.dataset, sparsities=train_sparsities, **train)
            plots.training_curves(rows, os.path.join(FLAGS.figures_dir, "trainability.png"),
                                  title=f"tanh MLP, variance scaling, {FLAGS.dataset}; dashed: no AI")
            tables.append(_table([dict(r, run="+ AI" if r["isometry"] else "SNIP only") for r in rows],
                                 "run", "Trainability: test error"))
        elif name == "supervision":
            rows = signal_study.supervision(dataset=FLAGS.dataset, sparsities=train_sparsities, **train)
            tables.append(_table(rows, "scoring", "Pruning without supervision: test error"))
        else:
            rows = signal_study.transfer(source=FLAGS.transfer_source, target=FLAGS.transfer_target,
                                         sparsities=train_sparsities, **train)
            tables.append(_table(rows, "mask_from",
                                 f"Transfer of sparsity: masks from {FLAGS.transfer_source} (source) or "
                                 f"{FLAGS.transfer_target} (target), trained on {FLAGS.transfer_target}"))
        results[name] = rows
        seconds[name] = time.perf_counter() - start
        logging.info("%s took %.0f s", name, seconds[name])
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
        json.dump({"results": results, "seconds": seconds}, f, indent=1)
    with open(os.path.join(FLAGS.output_dir, "tables.md"), "w") as f:
        f.write("\n".join(tables))
    print("\n".join(tables))


if __name__ == "__main__":
    app.run(main)
