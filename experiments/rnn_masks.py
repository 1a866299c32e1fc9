"""What SNIP keeps in a recurrent net at 95%: per gate and per kernel (input vs recurrent),
units left without inputs, and the Jacobians at initialization (issue 22, item 2).

    python experiments/rnn_masks.py [--seeds=0,1,2 --num_batches=1]

For LSTM-s and GRU-s on sequential mnist10k (rows as time steps), pruned by SNIP at
κ = 5% on the scoring batch `training.run` uses (one shuffled training batch of 100,
seed + 1): the kept fraction of each gate block of each kernel (Keras's gate order:
LSTM i, f, c, o; GRU z, r, h), the units whose every gate lost all input weights (input
and recurrent), the singular values of each masked recurrent kernel's gate blocks
(dense vs pruned), and the end-to-end Jacobian's singular values (logits w.r.t. the
input sequence) of the dense and the pruned net. Prints a table and writes JSON.
"""

import json

import keras
import numpy as np
from absl import app
from absl import flags

import sniptf
from sniptf import data as data_lib
from sniptf import run_dir
from sniptf import transform

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Init seeds (the scoring batch is seed + 1's).")
flags.DEFINE_integer("num_batches", 1, "Batches SNIP scores on.", lower_bound=1)
flags.DEFINE_list("models", ["lstm_s", "gru_s"], "Recurrent zoo models.")
flags.DEFINE_string("output", "docs/results/rnn_masks.json", "Where the JSON goes.")
GATES = {"lstm": "ifco", "gru": "zrh"}


def _gates(cell_kind, kernel, units):
    return {g: kernel[:, i * units:(i + 1) * units] for i, g in enumerate(GATES[cell_kind])}


def analyse(name, seed, num_batches):
    keras.utils.set_random_seed(seed)
    splits = data_lib.load_splits("mnist10k", 100, seed=seed)
    batch = splits.score_batch
    if num_batches > 1:
        batch = splits.train.take(num_batches)
    model = sniptf.models.get(name, (28, 28, 1), 10)
    pruned = sniptf.prune(model, batch, kappa=0.05, seed=seed, num_batches=num_batches)
    kind = "lstm" if name.startswith("lstm") else "gru"
    # the dense weights from the unpruned model (prune zeroes the pruned entries of its copy)
    dense = {f"{l.name}/{a}": getattr(l.cell, a.split(".")[-1]).numpy() for l in model.layers
             if hasattr(l, "cell") for a in ("cell.kernel", "cell.recurrent_kernel")}
    masks = {e.key: (e.mask.numpy().astype(bool), dense.get(e.key, e.weight.numpy()))
             for e in transform.masked_entries(pruned)}
    rows, emptied = [], {}
    for key, (mask, weight) in masks.items():
        layer, _, attr = key.partition("/")
        if "kernel" not in attr or layer == "logits":
            continue
        units = mask.shape[1] // len(GATES[kind])
        kernel_kind = "recurrent" if "recurrent" in attr else "input"
        for gate, block in _gates(kind, mask, units).items():
            rows.append({"layer": layer, "kernel": kernel_kind, "gate": gate,
                         "kept_fraction": float(block.mean())})
        has_input = np.stack([b.any(axis=0) for b in _gates(kind, mask, units).values()]).any(axis=0)
        emptied[layer] = emptied.get(layer, np.zeros(units, bool)) | has_input
        if kernel_kind == "recurrent":
            for gate, (m, w) in zip(GATES[kind], zip(_gates(kind, mask, units).values(),
                                                     _gates(kind, weight, units).values())):
                dense_sv = np.linalg.svd(w, compute_uv=False)
                sparse_sv = np.linalg.svd(w * m, compute_uv=False)
                rows.append({"layer": layer, "kernel": "recurrent_sv", "gate": gate,
                             "dense_max": float(dense_sv.max()), "dense_mean": float(dense_sv.mean()),
                             "pruned_max": float(sparse_sv.max()), "pruned_mean": float(sparse_sv.mean())})
    x = np.asarray(splits.score_batch[0])[:8]
    jac = {label: sniptf.jacobian_singular_values(m, x, layerwise=False).end_to_end.summary()
           for label, m in (("dense", model), ("pruned", pruned))}
    logits_kept = float(masks["logits/kernel"][0].mean())
    return {"model": name, "seed": seed, "num_batches": num_batches, "gates": rows,
            "units_without_any_input_weight": {k: int((~v).sum()) for k, v in emptied.items()},
            "logits_kept_fraction": logits_kept, "end_to_end_jacobian": jac,
            "layer_kept": {c.name: c.kept_fraction for c in sniptf.sparsity(pruned).layers}}


def main(argv):
    del argv
    out = [analyse(m, int(s), FLAGS.num_batches) for m in FLAGS.models for s in FLAGS.seeds]
    run_dir.write_text(FLAGS.output, json.dumps(out, indent=1))
    for r in out:
        print(f"\n{r['model']} seed {r['seed']} (SNIP 95%, {r['num_batches']} scoring batch(es)); "
              f"kept per layer: {', '.join(f'{k} {v:.1%}' for k, v in r['layer_kept'].items())}")
        print("  kept fraction per gate:", ", ".join(
            f"{g['layer']}.{g['kernel']}.{g['gate']} {g['kept_fraction']:.1%}" for g in r["gates"]
            if "kept_fraction" in g))
        print("  recurrent gate blocks, max singular value dense -> pruned:", ", ".join(
            f"{g['layer']}.{g['gate']} {g['dense_max']:.2f}->{g['pruned_max']:.2f}" for g in r["gates"]
            if g["kernel"] == "recurrent_sv"))
        print("  units with no input weight in any gate:", r["units_without_any_input_weight"])
        print("  end-to-end Jacobian singular values (mean / max): " + ", ".join(
            f"{k} {v['mean']:.3g} / {v['max']:.3g}" for k, v in r["end_to_end_jacobian"].items()))


if __name__ == "__main__":
    app.run(main)
