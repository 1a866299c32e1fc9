"""Does anything close SNIP's gap on the recurrent nets? (issue 22, item 2)

    python experiments/rnn_remedies.py --output_dir=out/rnn_remedies

LSTM-s and GRU-s at 95% on sequential mnist10k, trained with the SNIP-budget study's
recipe at its 2,800-step budget (`snip_budgets.run_config`: Adam 1e-3, x0.1 at 40% and
80%, batch 100, best-validation checkpoint; seed 0), pruned by:
- `snip`: SNIP on one batch (the study's run, again);
- `snip_10_batches`: SNIP on 10 batches (gradients summed);
- `snip_gate_normalized`: SNIP scores rescaled per gate block of every recurrent
  kernel so each block's mean is its tensor's mean (each gate competes on its own
  scale; the tensor's share of the global ranking moves too, as its score
  distribution changes: the kept fractions are recorded) — SNIP at 95% empties the
  gates (`experiments/rnn_masks.py`), this keeps some of each;
- `snip_isometry`: SNIP, then approximate isometry on the pruned kernels (2,000 steps);
- `snip_orthogonal`: SNIP on a net whose input kernels are orthogonal too (the
  recurrent kernels are orthogonal in every variant: Keras's default).
Each run is a `training.run` in this process (the rescaled criterion is registered
here), resumable (finished runs are skipped). Writes `<output_dir>/results.json`
(adding to the runs already recorded there: `--models=gru_s` keeps LSTM-s's)
(test error, kept fraction per gate block of each kernel; `results_<steps>.json` for
another `--steps`) and prints a table. `--variants` picks some, e.g. isometry at the
longest budget: `--steps=11200 --variants=snip_isometry --seeds=0,1,2`.
"""

import dataclasses
import os

import keras
import numpy as np
from absl import app
from absl import flags

import sniptf
from sniptf import transform
from sniptf.studies import snip_budgets
from sniptf.studies.common import merge_records
from sniptf.studies.common import run_here

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "out/rnn_remedies", "runs/ and results.json go here.")
flags.DEFINE_list("models", ["lstm_s", "gru_s"], "Recurrent zoo models.")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_integer("steps", 2800, "Training budget (the study's middle one).", lower_bound=1)
GATES = {"lstm": "ifco", "gru": "zrh"}
UNITS = 102
VARIANTS = ("snip", "snip_10_batches", "snip_gate_normalized", "snip_isometry", "snip_orthogonal")
flags.DEFINE_multi_enum("variants", list(VARIANTS), VARIANTS, "Variants to run (repeat the flag).")


def gate_normalized(weight, gradient, rng):
    """|g ⊙ w| with each gate block of a recurrent kernel rescaled to its tensor's mean."""
    del rng
    scores = np.abs(gradient * weight)
    if scores.ndim == 2 and scores.shape[1] in (3 * UNITS, 4 * UNITS):
        blocks = scores.reshape(scores.shape[0], -1, UNITS)
        means = blocks.mean(axis=(0, 2), keepdims=True)
        scores = (blocks * (scores.mean() / np.maximum(means, 1e-30))).reshape(scores.shape)
    return scores


def variant_config(model, variant, seed, output_dir):
    plan = next(p for p in snip_budgets.PLANS if p.model == model)
    base = snip_budgets.run_config(plan, "snip", 0.95, FLAGS.steps, seed, output_dir)
    fields = {"snip": {}, "snip_10_batches": {"score_batches": 10},
              "snip_gate_normalized": {"criterion": "snip_gate_normalized"},
              "snip_isometry": {"isometry_steps": 2000},
              "snip_orthogonal": {"kernel_initializer": "orthogonal"}}[variant]
    return dataclasses.replace(base, **fields, output_dir=os.path.join(
        output_dir, plan.dataset, model, variant, f"steps{FLAGS.steps}", f"seed{seed}"))


def gate_fractions(run):
    """Kept fraction per gate block of each recurrent layer's kernels, from the run's
    best checkpoint (the masks are fixed in training)."""
    model = keras.models.load_model(os.path.join(run, "checkpoints", "best.keras"))
    out = {}
    for e in transform.masked_entries(model):
        layer, _, attr = e.key.partition("/")
        if "kernel" not in attr or layer == "logits":
            continue
        kind = "lstm" if layer.startswith("lstm") else "gru"
        mask = e.mask.numpy().reshape(e.mask.shape[0], len(GATES[kind]), UNITS)
        kernel = "recurrent" if "recurrent" in attr else "input"
        for i, gate in enumerate(GATES[kind]):
            out[f"{layer}.{kernel}.{gate}"] = float(mask[:, i].mean())
    keras.backend.clear_session()
    return out


def main(argv):
    del argv
    sniptf.register_criterion("snip_gate_normalized", gate_normalized, needs_gradient=True)
    runs_dir = os.path.join(FLAGS.output_dir, "runs")
    # another budget than the default: its own results file beside the first
    name = "results.json" if FLAGS.steps == 2800 else f"results_{FLAGS.steps}.json"
    results = []
    for model in FLAGS.models:
        for variant in FLAGS.variants:
            for seed in map(int, FLAGS.seeds):
                config = variant_config(model, variant, seed, runs_dir)
                metrics = run_here(config)
                results.append({"model": model, "variant": variant, "seed": seed, "steps": FLAGS.steps,
                                "sparsity": metrics["sparsity"], "test_error": 100 * metrics["test_error"],
                                "validation_error": 100 * metrics["validation_error"],
                                "wall_time_seconds": metrics["wall_time_seconds"],
                                "kept_per_gate": gate_fractions(config.output_dir)})
                merge_records(os.path.join(FLAGS.output_dir, name), results, ("model", "variant", "seed"))
    for r in results:
        gates = ", ".join(f"{k} {v:.1%}" for k, v in r["kept_per_gate"].items())
        print(f"{r['model']} {r['variant']} seed {r['seed']}: test error {r['test_error']:.2f}% "
              f"(sparsity {r['sparsity']:.4f}, {r['wall_time_seconds']:.0f} s); kept per gate: {gates}")


if __name__ == "__main__":
    app.run(main)
