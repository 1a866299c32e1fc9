"""SNIP paper experiments (Lee et al., ICLR 2019); `sniptf.commands.snip_experiments` runs them.

Table runs go through `sniptf.training.run`, one output directory per run,
so an interrupted table resumes where it stopped (finished runs are skipped).
"""

import json
import os
import time

import keras
import numpy as np

from sniptf import data as data_lib
from sniptf import models as models_lib
from sniptf import run_dir
from sniptf import scoring
from sniptf import selection
from sniptf import training
from sniptf import transform
from sniptf.pruning import prune
from sniptf.studies.common import RUNS_PER_PROCESS  # noqa: F401 (re-exported)
from sniptf.studies.common import dense_copy
from sniptf.studies.common import markdown_table
from sniptf.studies.common import run_table
from sniptf.studies.common import summarize
from sniptf.studies.common import train_and_evaluate

# The paper's sparsity levels per model (kept fractions).
TABLE_KAPPAS = {"lenet_300_100": (0.05, 0.02), "lenet5_caffe": (0.02, 0.01)}
CRITERIA = ("snip", "random", "magnitude")
EXPERIMENTS = ("table", "sequential", "patterns", "memorization")

# (train_steps, eval_every, lr_decay_every) per (dataset, model) at 100%:
# the authors' 25k-step decay scaled to budgets that fit 2 CPU cores.
BUDGETS = {
    ("mnist10k", "lenet_300_100"): (3000, 100, 1200),
    ("mnist10k", "lenet5_caffe"): (1500, 100, 600),
    ("fashion_mnist", "lenet_300_100"): (3240, 540, 1300),
    ("fashion_mnist", "lenet5_caffe"): (1620, 540, 650),
}


def scaled_budgets(percent, datasets=None):
    """`BUDGETS` scaled to `percent` of their epochs (at least one epoch each).

    Raises:
        ValueError: a dataset without a budget.
    """
    datasets = sorted({d for d, _ in BUDGETS}) if datasets is None else list(datasets)
    missing = sorted(set(datasets) - {d for d, _ in BUDGETS})
    if missing:
        raise ValueError(f"The table has budgets for {sorted({d for d, _ in BUDGETS})} only. "
                         f"Received: datasets={missing}")
    out = {}
    for (dataset, model), (steps, every, decay) in BUDGETS.items():
        if dataset in datasets:
            epochs = max(1, round(steps / every * percent / 100))
            out[(dataset, model)] = (epochs * every, every, max(1, round(decay * percent / 100)))
    return out


def table_configs(datasets, seeds, budgets, output_dir, models=None, criteria=CRITERIA):
    """One `TrainConfig` per (dataset, model, criterion, kappa, seed); dense runs included.

    The authors' recipe (SGD momentum 0.9, x0.1 step decay, weight decay 5e-4) with lr 0.03
    instead of 0.1: dense LeNet-5-Caffe diverges to NaN at 0.1 here.

    `budgets[(dataset, model)]` = (train_steps, eval_every, lr_decay_every).
    """
    configs = []
    for dataset in datasets:
        for model, kappas in TABLE_KAPPAS.items():
            if models is not None and model not in models:
                continue
            steps, every, decay = budgets[(dataset, model)]
            runs = [(training.NO_PRUNING, 1.0)] + [(c, k) for k in kappas for c in criteria]
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


def table_markdown(rows):
    """The LeNet table (mean ± std test error) as markdown."""
    rows = sorted(rows, key=lambda r: (r["dataset"], r["model"], -r["kappa"], r["criterion"]))
    return markdown_table(
        ["dataset", "model", "run", "sparsity", "test error (mean ± std)", "seeds"],
        [[r["dataset"], r["model"], "dense" if r["criterion"] == training.NO_PRUNING else r["criterion"],
          f"{100 * r['sparsity']:.0f}%", f"{r['test_error_mean']:.2f} ± {r['test_error_std']:.2f}%",
          r["seeds"]] for r in rows])


def sequential_markdown(rows):
    """The recurrent-nets table as markdown."""
    return markdown_table(["model", "run", "test error"], [
        [r["model"], f"{r['run']} ({100 * (1 - r['kappa']):.0f}% sparse)", f"{100 * r['test_error']:.2f}%"]
        for r in rows])


def sequential(*, dataset="mnist10k", models=("lstm_s", "gru_s"), kappa=0.05, epochs=20,
               batch_size=100, learning_rate=1e-3, seeds=(0,), train_batches=None):
    """Dense vs SNIP-95% recurrent nets on sequential images (rows are time steps), Adam.

    `train_batches`: train on the first this many batches of each epoch's shuffle
    (None: the whole split)."""
    info = data_lib.info(dataset)
    rows = []
    for name in models:
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            splits = data_lib.load_splits(dataset, batch_size, seed=seed)
            train = splits.train if train_batches is None else splits.train.take(train_batches)
            dense = models_lib.get(name, info.input_shape, info.num_classes)
            for label, model in (("dense", dense_copy(dense)),
                                 ("snip", prune(dense, splits.score_batch, kappa=kappa, seed=seed))):
                result = train_and_evaluate(model, train, splits.validation, splits.test,
                                            epochs=epochs,
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
    # `prune`'s selection, on one wrapped model (its masks stay at 1) so that the 10
    # batches of a size share one traced scoring pass
    wrapped = transform.wrap(model)
    wrapped(x[:1])
    keys = [e.key for e in transform.masked_entries(wrapped)]  # fc1 first: [784, 300]
    kept = selection.count_for(kappa, sum(int(np.prod(e.mask.shape)) for e in transform.masked_entries(wrapped)))
    out = {}
    for b in batch_sizes:
        maps = []
        for digit in range(info.num_classes):
            idx = rng.choice(np.flatnonzero(y == digit), size=b, replace=False)
            scores = scoring.score_sources(wrapped, (x[idx], y[idx]), criterion="snip", seed=seed)
            masks = selection.select_count([scores[k] for k in keys], kept, scope="global", seed=seed,
                                           min_kept_per_layer=0)
            maps.append(np.asarray(masks[0]).sum(axis=1).reshape(info.input_shape[:2]))
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



def memorization_markdown(result, dataset):
    """Training accuracy on the random labels at a few epochs, dense vs SNIP, as markdown."""
    curves, epochs = result["train_accuracy"], result["epochs"]
    shown = [e for e in (1, 10, 25, 50, 100) if e < epochs] + [epochs]
    title = (f"Memorization: training accuracy on random labels, LeNet-300-100, {dataset} "
             f"({result['examples']} examples), SNIP at {100 * (1 - result['kappa']):g}% sparse")
    return f"### {title}\n\n" + markdown_table(
        ["run"] + [f"epoch {e}" for e in shown],
        [[label] + [f"{100 * curves[label][e - 1]:.1f}%" for e in shown] for label in curves])


def run_experiments(experiments, *, output_dir, figures_dir, datasets=("mnist10k", "fashion_mnist"),
                    seeds=(0, 1, 2), epochs_scale=100, sequential_epochs=20, memorization_epochs=100,
                    memorization_datasets=("mnist10k",), models=tuple(TABLE_KAPPAS), table_criteria=CRITERIA,
                    log=print):
    """Runs the named experiments (`EXPERIMENTS`), recording each into
    `<output_dir>/results.json` as it finishes (so a rerun keeps the others),
    figures into `figures_dir` and tables into `<output_dir>/tables.md` (the
    tables of everything recorded there, not only of this call's experiments).
    The memorization experiment runs on each of `memorization_datasets`
    (recorded as `memorization` for mnist10k, `memorization_<dataset>` else).

    Returns:
        The markdown tables.
    """
    from sniptf.studies import plots

    results_path = os.path.join(output_dir, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    seconds = results.setdefault("seconds", {})
    tables = []
    for name in experiments:
        start = time.perf_counter()
        log(f"running {name}")
        if name == "table":
            budgets = scaled_budgets(epochs_scale, datasets)
            configs = table_configs(datasets, seeds, budgets, os.path.join(output_dir, "runs"), models,
                                    table_criteria)
            rows = summarize(run_table(configs, log=log))
            results["table"] = rows
            results["table_budgets"] = {f"{d}/{m}": b for (d, m), b in budgets.items()}
            plots.layer_sparsity([r for r in rows if r["criterion"] == "snip" and r["dataset"] == datasets[0]],
                                 os.path.join(figures_dir, "snip_layer_sparsity.png"),
                                 title=f"SNIP: kept weights per layer ({datasets[0]}, seed {seeds[0]})")
        elif name == "sequential":
            results["sequential"] = sequential(epochs=sequential_epochs)
        elif name == "patterns":
            maps = first_layer_patterns()
            results["patterns"] = {str(b): m.tolist() for b, m in maps.items()}
            plots.mask_patterns(maps, os.path.join(figures_dir, "snip_patterns.png"),
                                title="LeNet-300-100 first-layer connections kept per pixel (SNIP, 95% sparse)")
        elif name == "memorization":
            for dataset in memorization_datasets:
                result = memorization(dataset=dataset, epochs=memorization_epochs)
                suffix = "" if dataset == "mnist10k" else f"_{dataset}"
                results["memorization" + suffix] = result
                plots.memorization(result, os.path.join(figures_dir, f"snip_memorization{suffix}.png"),
                                   title=f"LeNet-300-100 on {dataset} with shuffled labels")
        else:
            raise ValueError(f"Unknown experiment. Expected one of {EXPERIMENTS}. Received: {name!r}")
        seconds[name] = time.perf_counter() - start
        log(f"{name} took {seconds[name]:.0f} s")
        run_dir.write_text(results_path, json.dumps(results, indent=1))
    if "table" in results:
        tables.append(table_markdown(results["table"]))
    if "sequential" in results:
        tables.append(sequential_markdown(results["sequential"]))
    for key in sorted(k for k in results if k.startswith("memorization")):
        tables.append(memorization_markdown(results[key], key[len("memorization_"):] or "mnist10k"))
    text = "\n".join(tables)
    run_dir.write_text(os.path.join(output_dir, "tables.md"), text)
    return text
