"""Experiment drivers shared by the scripts: small, plain-Keras training runs."""

import time

import keras
import numpy as np

from sniptf import data as data_lib
from sniptf import models as models_lib
from sniptf.pruning import prune
from sniptf.report import sparsity


def train_and_evaluate(model, train, validation, test, *, epochs, learning_rate,
                       momentum=0.9, weight_decay=0.0, optimizer=None):
    """Trains (SGD+momentum unless `optimizer` is given) and returns the errors of
    the best-validation epoch and the per-epoch history.

    The weights of the epoch with the best validation accuracy are restored
    before the test evaluation (model selection never looks at test).
    """
    optimizer = optimizer or keras.optimizers.SGD(learning_rate, momentum=momentum,
                                                  weight_decay=weight_decay or None)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=epochs,
                                         restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(train, validation_data=validation, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[best])
    seconds = time.perf_counter() - start
    _, test_accuracy = model.evaluate(test, verbose=0)
    return {
        "test_error": 1.0 - float(test_accuracy),
        "validation_error": 1.0 - float(max(history.history["val_accuracy"])),
        "best_epoch": int(np.argmax(history.history["val_accuracy"])) + 1,
        "train_seconds": seconds,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }


def compare_pruning(*, model_name="lenet_300_100", dataset="mnist10k", kappa=0.02,
                    criteria=("snip", "random"), epochs=10, batch_size=100,
                    learning_rate=0.05, seed=0):
    """Trains the dense model and one pruned copy per criterion from the same init.

    Returns:
        `(rows, pruned)`: one dict per run (name, test/validation error,
        sparsity, kept weights per layer) and the pruned models by criterion.
    """
    keras.utils.set_random_seed(seed)  # first: seeded tf.data shuffles use the global seed too
    info = data_lib.info(dataset)
    split = lambda s, shuffle=False: data_lib.load(
        dataset, s, batch_size=batch_size, shuffle=shuffle, seed=seed)
    train, validation, test = split("train", shuffle=True), split("validation"), split("test")
    dense = models_lib.get(model_name, info.input_shape, info.num_classes)
    score_batch = next(iter(data_lib.load(dataset, "train", batch_size=batch_size,
                                          shuffle=True, seed=seed + 1)))
    runs = [("dense", None)] + [(c, c) for c in criteria]
    rows, pruned = [], {}
    for name, criterion in runs:
        if criterion is None:
            model = keras.models.clone_model(dense)
            model.set_weights(dense.get_weights())
        else:
            model = prune(dense, score_batch, kappa=kappa, criterion=criterion, seed=seed)
            pruned[criterion] = model
        report = sparsity(model)
        result = train_and_evaluate(model, train, validation, test, epochs=epochs,
                                    learning_rate=learning_rate)
        result.pop("history")
        rows.append({"run": name, **result, "sparsity": report.sparsity,
                     "kept": report.kept, "total": report.total.total,
                     "kept_per_layer": {c.name: c.kept for c in report.layers}})
    return rows, pruned


def format_table(rows):
    """A plain-text table of `compare_pruning` rows."""
    layers = list(rows[0]["kept_per_layer"])
    head = f"{'run':<10} {'test err':>8} {'val err':>8} {'sparsity':>9} {'kept':>8}  " + \
        "  ".join(f"{name:>8}" for name in layers)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['run']:<10} {r['test_error']:>8.2%} {r['validation_error']:>8.2%} "
            f"{r['sparsity']:>9.2%} {r['kept']:>8d}  " +
            "  ".join(f"{r['kept_per_layer'][n]:>8d}" for n in layers))
    return "\n".join(lines)
