"""Signal-propagation experiments (Lee et al., ICLR 2020); `sniptf.commands.signal_propagation` runs them.

Each function returns plain rows (dicts) that the script writes as JSON,
tables and figures.
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from sniptf import data as data_lib
from sniptf import models as models_lib
from sniptf import run_dir
from sniptf.isometry import approximate_isometry
from sniptf.jacobian import jacobian_singular_values
from sniptf.pruning import prune
from sniptf.sparsity_report import sparsity as sparsity_report
from sniptf.studies.common import markdown_table
from sniptf.studies.common import train_and_evaluate

EXPERIMENTS = ("jsv", "trainability", "supervision", "transfer")

INITS = {"variance_scaling": "variance_scaling", "orthogonal": "orthogonal"}


def unsupervised_loss(y_true, y_pred):
    """A label-free scoring loss: ½‖f(x)‖² per example (labels are ignored)."""
    del y_true
    return 0.5 * tf.reduce_sum(tf.square(tf.cast(y_pred, tf.float32)), axis=-1)


def _mlp(dataset, activation, init, width, depth, seed):
    info = data_lib.info(dataset)
    keras.utils.set_random_seed(seed)
    return models_lib.get("mlp7", info.input_shape, info.num_classes, kernel_initializer=init,
                          activation=activation, width=width, depth=depth)


def _batch(dataset, size, seed):
    x, y = data_lib.load_numpy(dataset, "train")
    idx = np.random.default_rng(seed).permutation(len(y))[:size]
    return x[idx], y[idx]


def _pruned(model, batch, sparsity, isometry_steps, loss=None, seed=0):
    pruned = prune(model, batch, kappa=1.0 - sparsity, seed=seed, loss=loss)
    if isometry_steps:
        approximate_isometry(pruned, steps=isometry_steps)
    return pruned


def jsv_vs_sparsity(*, dataset="mnist10k", activations=("tanh", "relu"),
                    inits=("variance_scaling", "orthogonal"),
                    sparsities=(0.0, 0.5, 0.7, 0.9, 0.95, 0.98, 0.99), width=100, depth=7,
                    isometry_steps=2000, num_examples=16, seed=0):
    """Mean / std of the layerwise JSV (all layers' singular values pooled) of SNIP-pruned
    deep MLPs, with and without approximate isometry."""
    x, y = _batch(dataset, 100, seed)
    rows = []
    for activation in activations:
        for init in inits:
            dense = _mlp(dataset, activation, init, width, depth, seed)
            for sparsity in sparsities:
                for ai in (False, True):
                    if ai and sparsity == 0.0:
                        continue
                    pruned = _pruned(dense, (x, y), sparsity, isometry_steps if ai else 0, seed=seed)
                    report = jacobian_singular_values(pruned, x[:num_examples])
                    values = np.concatenate([s.values.ravel() for s in report.layers])
                    rows.append({"activation": activation, "init": init, "sparsity": sparsity,
                                 "isometry": ai, "jsv_mean": float(values.mean()),
                                 "jsv_std": float(values.std()),
                                 "end_to_end_mean": report.end_to_end.mean,
                                 "layer_means": [s.mean for s in report.layers]})
    return rows


def error_table(rows, key, title):
    """Test error per `key` (a row) and sparsity (a column), as markdown under `### title`."""
    sparsities = sorted({r["sparsity"] for r in rows})
    kinds = list(dict.fromkeys(r[key] for r in rows))
    cells = [[kind] + [next(f"{100 * r['test_error']:.2f}%" for r in rows
                            if r[key] == kind and r["sparsity"] == s) for s in sparsities]
             for kind in kinds]
    return f"### {title}\n\n" + markdown_table([key] + [f"{100 * s:g}% sparse" for s in sparsities], cells)


def _train(model, dataset, epochs, batch_size, learning_rate, seed):
    train = data_lib.load(dataset, "train", batch_size=batch_size, shuffle=True, seed=seed)
    validation = data_lib.load(dataset, "validation", batch_size=500)
    test = data_lib.load(dataset, "test", batch_size=500)
    result = train_and_evaluate(model, train, validation, test, epochs=epochs,
                                learning_rate=learning_rate)
    return result["history"], result["test_error"]


def trainability(*, dataset="mnist10k", activation="tanh", init="variance_scaling",
                 sparsities=(0.9, 0.95, 0.98), width=100, depth=7, isometry_steps=2000,
                 epochs=20, batch_size=100, learning_rate=0.01, seed=0):
    """Training curves of SNIP-pruned deep MLPs with and without approximate isometry."""
    x, y = _batch(dataset, 100, seed)
    dense = _mlp(dataset, activation, init, width, depth, seed)
    rows = []
    for sparsity in sparsities:
        for ai in (False, True):
            pruned = _pruned(dense, (x, y), sparsity, isometry_steps if ai else 0, seed=seed)
            start = time.perf_counter()
            history, test_error = _train(pruned, dataset, epochs, batch_size, learning_rate, seed)
            rows.append({"sparsity": sparsity, "isometry": ai, "train_loss": history["loss"],
                         "val_error": [1 - a for a in history["val_accuracy"]],
                         "test_error": test_error, "seconds": time.perf_counter() - start})
    return rows


def supervision(*, dataset="mnist10k", sparsities=(0.9, 0.95, 0.98), width=100, depth=7,
                isometry_steps=2000, epochs=20, batch_size=100, learning_rate=0.01, seed=0):
    """Test error after pruning with the supervised loss vs the label-free `unsupervised_loss`
    (orthogonal init + approximate isometry, tanh MLP)."""
    x, y = _batch(dataset, 100, seed)
    dense = _mlp(dataset, "tanh", "orthogonal", width, depth, seed)
    rows = []
    for sparsity in sparsities:
        for name, loss in (("supervised", None), ("unsupervised", unsupervised_loss)):
            pruned = _pruned(dense, (x, y), sparsity, isometry_steps, loss=loss, seed=seed)
            _, test_error = _train(pruned, dataset, epochs, batch_size, learning_rate, seed)
            rows.append({"sparsity": sparsity, "scoring": name, "test_error": test_error,
                         "kept_per_layer": {c.name: c.kept for c in sparsity_report(pruned).layers}})
    return rows


def transfer(*, source="fashion_mnist", target="mnist10k", sparsities=(0.9, 0.95, 0.98),
             width=100, depth=7, isometry_steps=2000, epochs=20, batch_size=100,
             learning_rate=0.01, seed=0):
    """Masks found on `source` trained on `target`, against masks found on `target`
    and random masks (same init, tanh MLP, orthogonal init + approximate isometry)."""
    target_batch = _batch(target, 100, seed)
    source_batch = _batch(source, 100, seed)
    dense = _mlp(target, "tanh", "orthogonal", width, depth, seed)
    rows = []
    for sparsity in sparsities:
        for name, batch, criterion in (("target", target_batch, "snip"),
                                       ("source", source_batch, "snip"),
                                       ("random", target_batch, "random")):
            pruned = prune(dense, batch, kappa=1.0 - sparsity, criterion=criterion, seed=seed)
            approximate_isometry(pruned, steps=isometry_steps)
            _, test_error = _train(pruned, target, epochs, batch_size, learning_rate, seed)
            rows.append({"sparsity": sparsity, "mask_from": name, "test_error": test_error})
    return rows


def run_experiments(experiments, *, output_dir, figures_dir, dataset="mnist10k",
                    transfer_source="fashion_mnist", transfer_target="mnist10k",
                    sparsities=(0.0, 0.5, 0.7, 0.9, 0.95, 0.98, 0.99), train_sparsities=(0.9, 0.95, 0.98),
                    width=100, depth=7, isometry_steps=2000, epochs=20, learning_rate=0.01, seed=0,
                    log=print):
    """Runs the named experiments (`EXPERIMENTS`); writes `<output_dir>/results.json`,
    `tables.md` and the figures into `figures_dir`. Returns the markdown tables.

    Resumable: results.json is written whole after each experiment, and a rerun
    keeps every experiment already recorded with the same settings (it redraws
    its figure and table from the record) and runs the others.
    """
    from sniptf.studies import plots

    for name in experiments:
        if name not in EXPERIMENTS:
            raise ValueError(f"Unknown experiment. Expected one of {EXPERIMENTS}. Received: {name!r}")
    common = dict(width=width, depth=depth, isometry_steps=isometry_steps, seed=seed)
    train = dict(epochs=epochs, learning_rate=learning_rate, **common)
    settings = {
        "jsv": dict(dataset=dataset, sparsities=list(sparsities), **common),
        "trainability": dict(dataset=dataset, sparsities=list(train_sparsities), **train),
        "supervision": dict(dataset=dataset, sparsities=list(train_sparsities), **train),
        "transfer": dict(source=transfer_source, target=transfer_target,
                         sparsities=list(train_sparsities), **train),
    }
    path = os.path.join(output_dir, "results.json")
    recorded = {"results": {}, "seconds": {}, "settings": {}}
    if os.path.exists(path):
        with open(path) as f:
            recorded.update(json.load(f))
        recorded.setdefault("settings", {})
    tables = []
    for name in experiments:
        kwargs = settings[name]
        if name in recorded["results"] and recorded["settings"].get(name) == kwargs:
            log(f"{name}: kept from {path}")
            rows = recorded["results"][name]
        else:
            start = time.perf_counter()
            log(f"running {name}")
            fn = {"jsv": jsv_vs_sparsity, "trainability": trainability, "supervision": supervision,
                  "transfer": transfer}[name]
            rows = fn(**dict(kwargs, sparsities=tuple(kwargs["sparsities"])))
            rows = json.loads(json.dumps(rows))  # as a rerun reads them back
            recorded["results"][name], recorded["settings"][name] = rows, kwargs
            recorded["seconds"][name] = time.perf_counter() - start
            log(f"{name} took {recorded['seconds'][name]:.0f} s")
            run_dir.write_text(path, json.dumps(recorded, indent=1))
        if name == "jsv":
            plots.jsv_vs_sparsity(rows, os.path.join(figures_dir, "jsv_vs_sparsity.png"),
                                  title=f"{depth}-layer MLPs (width {width}), SNIP on {dataset}")
        elif name == "trainability":
            plots.training_curves(rows, os.path.join(figures_dir, "trainability.png"),
                                  title=f"tanh MLP, variance scaling, {dataset}; dashed: no AI")
            tables.append(error_table([dict(r, run="+ AI" if r["isometry"] else "SNIP only") for r in rows],
                                      "run", "Trainability: test error"))
        elif name == "supervision":
            tables.append(error_table(rows, "scoring", "Pruning without supervision: test error"))
        else:
            tables.append(error_table(
                rows, "mask_from", f"Transfer of sparsity: masks from {transfer_source} (source) or "
                f"{transfer_target} (target), trained on {transfer_target}"))
    text = "\n".join(tables)
    run_dir.write_text(os.path.join(output_dir, "tables.md"), text)
    return text
