"""The demo: SNIP vs random vs dense from one initialization (`make demo`)."""

import keras

from sniptf import data as data_lib
from sniptf import models as models_lib
from sniptf.pruning import prune
from sniptf.sparsity_report import sparsity
from sniptf.studies.common import dense_copy
from sniptf.studies.common import train_and_evaluate


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
    splits = data_lib.load_splits(dataset, batch_size, seed=seed)
    dense = models_lib.get(model_name, info.input_shape, info.num_classes)
    runs = [("dense", None)] + [(c, c) for c in criteria]
    rows, pruned = [], {}
    for name, criterion in runs:
        if criterion is None:
            model = dense_copy(dense)
        else:
            model = prune(dense, splits.score_batch, kappa=kappa, criterion=criterion, seed=seed)
            pruned[criterion] = model
        report = sparsity(model)
        result = train_and_evaluate(model, splits.train, splits.validation, splits.test, epochs=epochs,
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
