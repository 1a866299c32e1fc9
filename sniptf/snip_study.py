"""SNIP paper experiments (Lee et al., ICLR 2019), shared by scripts/snip_experiments.py.

Table runs go through `sniptf.training.run`, one output directory per run,
so an interrupted table resumes where it stopped (finished runs are skipped).
"""

import json
import os

import keras
import numpy as np

from sniptf import data as data_lib
from sniptf import models as models_lib
from sniptf import training
from sniptf import transform
from sniptf.experiments import train_and_evaluate
from sniptf.pruning import prune

# The paper's sparsity levels per model (kept fractions).
TABLE_KAPPAS = {"lenet_300_100": (0.05, 0.02), "lenet5_caffe": (0.02, 0.01)}
CRITERIA = ("snip", "random", "magnitude")


def table_configs(datasets, seeds, budgets, output_dir):
    """One `TrainConfig` per (dataset, model, criterion, kappa, seed); dense runs included.

    The authors' recipe (SGD momentum 0.9, x0.1 step decay, weight decay 5e-4) with lr 0.03
    instead of 0.1: dense LeNet-5-Caffe diverges to NaN at 0.1 here.

    `budgets[(dataset, model)]` = (train_steps, eval_every, lr_decay_every).
    """
    configs = []
    for dataset in datasets:
        for model, kappas in TABLE_KAPPAS.items():
            steps, every, decay = budgets[(dataset, model)]
            runs = [(training.NO_PRUNING, 1.0)] + [(c, k) for k in kappas for c in CRITERIA]
            for criterion, kappa in runs:
                for seed in seeds:
                    name = "dense" if criterion == training.NO_PRUNING else f"{criterion}_{kappa:g}"
                    configs.append(training.TrainConfig(
                        model=model, dataset=dataset, kappa=kappa, criterion=criterion,
                        batch_size=100, train_steps=steps, eval_every=every, optimizer="momentum",
                        learning_rate=0.03, momentum=0.9, lr_schedule="piecewise",
                        lr_decay_every=decay, lr_decay_factor=0.1, weight_decay=5e-4, seed=seed,
                        output_dir=os.path.join(output_dir, dataset, model, name, f"seed{seed}")))
    return configs


def run_table(configs, log=print):
    """Runs every config whose metrics.json is missing; returns all metrics."""
    results = []
    for i, config in enumerate(configs):
        path = os.path.join(config.output_dir, "metrics.json")
        if not os.path.exists(path):
            log(f"[{i + 1}/{len(configs)}] {config.output_dir}")
            training.run(config)
            keras.backend.clear_session()
        with open(path) as f:
            results.append(json.load(f))
    return results


def summarize(results):
    """Rows of mean ± std test error per (dataset, model, criterion, kappa)."""
    groups = {}
    for m in results:
        key = (m["dataset"], m["model"], m["criterion"], m["kappa"])
        groups.setdefault(key, []).append(m)
    rows = []
    for (dataset, model, criterion, kappa), ms in groups.items():
        errors = np.array([m["test_error"] for m in ms]) * 100
        rows.append({"dataset": dataset, "model": model, "criterion": criterion, "kappa": kappa,
                     "sparsity": ms[0]["sparsity"], "seeds": len(ms),
                     "test_error_mean": float(errors.mean()), "test_error_std": float(errors.std()),
                     "sparsity_per_layer": ms[0]["sparsity_per_layer"],
                     "wall_time_seconds": float(sum(m["wall_time_seconds"] for m in ms))})
    return rows


def sequential(*, dataset="mnist10k", models=("lstm_s", "gru_s"), kappa=0.05, epochs=20,
               batch_size=100, learning_rate=1e-3, seeds=(0,)):
    """Dense vs SNIP-95% recurrent nets on sequential images (rows are time steps), Adam."""
    info = data_lib.info(dataset)
    rows = []
    for name in models:
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            train = data_lib.load(dataset, "train", batch_size=batch_size, shuffle=True, seed=seed)
            validation = data_lib.load(dataset, "validation", batch_size=500)
            test = data_lib.load(dataset, "test", batch_size=500)
            dense = models_lib.get(name, info.input_shape, info.num_classes)
            batch = next(iter(data_lib.load(dataset, "train", batch_size=batch_size, shuffle=True,
                                            seed=seed + 1)))
            for label, model in (("dense", keras.models.clone_model(dense)),
                                 ("snip", prune(dense, batch, kappa=kappa, seed=seed))):
                if label == "dense":
                    model.set_weights(dense.get_weights())
                result = train_and_evaluate(model, train, validation, test, epochs=epochs,
                                            learning_rate=learning_rate,
                                            optimizer=keras.optimizers.Adam(learning_rate))
                rows.append({"model": name, "run": label, "seed": seed,
                             "kappa": kappa if label == "snip" else 1.0,
                             "test_error": result["test_error"]})
    return rows


def first_layer_patterns(*, dataset="mnist10k", kappa=0.05, batch_sizes=(1, 10, 100), seed=0):
    """Per input pixel, how many first-layer connections SNIP keeps on LeNet-300-100,
    scoring on batches of one class (b per class) — the paper's visualization.

    Returns:
        `{b: array [10, 28, 28]}` of kept connections per pixel for each class.
    """
    x, y = data_lib.load_numpy(dataset, "train")
    info = data_lib.info(dataset)
    keras.utils.set_random_seed(seed)
    model = models_lib.get("lenet_300_100", info.input_shape, info.num_classes)
    rng = np.random.default_rng(seed)
    out = {}
    for b in batch_sizes:
        maps = []
        for digit in range(info.num_classes):
            idx = rng.choice(np.flatnonzero(y == digit), size=b, replace=False)
            pruned = prune(model, (x[idx], y[idx]), kappa=kappa, seed=seed)
            mask = transform.masked_entries(pruned)[0].mask.numpy()  # fc1: [784, 300]
            maps.append(mask.sum(axis=1).reshape(info.input_shape[:2]))
        out[b] = np.stack(maps)
    return out


def memorization(*, dataset="mnist10k", kappa=0.05, epochs=100, batch_size=100,
                 learning_rate=1e-3, num_examples=None, seed=0):
    """Training accuracy per epoch on randomly shuffled labels: dense vs SNIP-pruned
    (pruned on the true labels) LeNet-300-100, Adam (Zhang et al. 2017 setup)."""
    x, y = data_lib.load_numpy(dataset, "train")
    if num_examples:
        x, y = x[:num_examples], y[:num_examples]
    info = data_lib.info(dataset)
    keras.utils.set_random_seed(seed)
    shuffled = np.random.default_rng(seed).permutation(y)
    dense = models_lib.get("lenet_300_100", info.input_shape, info.num_classes)
    pruned = prune(dense, (x[:100], y[:100]), kappa=kappa, seed=seed)  # true labels
    curves = {}
    for label, model in (("dense", dense), ("snip", pruned)):
        model.compile(keras.optimizers.Adam(learning_rate),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = model.fit(x, shuffled, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
        curves[label] = [float(a) for a in history.history["accuracy"]]
    return {"kappa": kappa, "epochs": epochs, "examples": int(len(y)), "train_accuracy": curves}

