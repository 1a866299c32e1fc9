"""How `structure="channels"` should add its weights' scores into a unit's (issue 39).

    python experiments/channel_scores.py --output_dir=docs/results/channel_scores [--seeds=0]

A unit's score is its weights' scores added: summed, the units of wide fan-in win
(LeNet-300-100's fc1 units have 784 weights, fc2's 300); averaged over the fan-in,
the narrow ones do (LeNet-5-Caffe's conv1 filters have 25). `layerwise` keeps the same
fraction of each layer's units, whatever the scores' scale. This trains each on full
Fashion-MNIST with the LeNet table's recipe (`where_pai_stands.recipe`, the
`criteria_comparison` budgets), SNIP and random channels, at 50% and 75% of the
weights removed, and prints test error, the compacted parameter count and the units
kept per layer. Each run is a `sniptf-train` directory under `--output_dir`: a run
already finished is read, not run again (the command resumes).
"""

import json
import os

from absl import app
from absl import flags

from sniptf import structure
from sniptf import training
from sniptf.studies import where_pai_stands
from sniptf.studies.criteria_comparison import BUDGETS

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "docs/results/channel_scores", "Where the runs and table go.")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_list("models", ["lenet_300_100", "lenet5_caffe"], "Models.")
flags.DEFINE_list("kappas", ["0.5", "0.25"], "Fractions of the channel layers' weights kept.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset.")

# name: (criterion, CHANNEL_SCORE, scope)
VARIANTS = {"snip mean": ("snip", "mean", "global"), "snip sum": ("snip", "sum", "global"),
            "snip layerwise": ("snip", "mean", "layerwise"), "random mean": ("random", "mean", "global")}


def run(model, variant, kappa, seed):
    criterion, score, scope = VARIANTS[variant]
    out = os.path.join(FLAGS.output_dir, "runs", model, variant.replace(" ", "_"), f"kappa{kappa}", f"seed{seed}")
    done = os.path.join(out, "metrics.json")
    if not os.path.exists(done):
        structure.CHANNEL_SCORE = score
        config = training.TrainConfig(seed=seed, **where_pai_stands.recipe(model, FLAGS.dataset, BUDGETS[model]),
                                      criterion=criterion, kappa=kappa, scope=scope, structure="channels",
                                      output_dir=out)
        training.run(config)
    return json.load(open(done))


def main(argv):
    del argv
    rows = []
    for model in FLAGS.models:
        for kappa in (float(k) for k in FLAGS.kappas):
            for variant in VARIANTS:
                for seed in (int(s) for s in FLAGS.seeds):
                    m = run(model, variant, kappa, seed)
                    kept = {k: round(1 - v, 3) for k, v in m["sparsity_per_layer"].items()}
                    rows.append((model, kappa, variant, seed, 100 * m["test_error"], kept))
                    print(f"{model:14s} kappa {kappa:<5g} {variant:15s} seed {seed}: test error "
                          f"{100 * m['test_error']:.2f}%  kept per layer {kept}", flush=True)
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
        json.dump([dict(zip(("model", "kappa", "variant", "seed", "test_error_pct", "kept_per_layer"), r))
                   for r in rows], f, indent=1)


if __name__ == "__main__":
    app.run(main)
