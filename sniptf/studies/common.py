"""What every study shares: one training loop, the dense copy, markdown tables."""

import time

import keras
import numpy as np


def train_and_evaluate(model, train, validation, test, *, epochs, learning_rate=None,
                       momentum=0.9, weight_decay=0.0, optimizer=None):
    """Trains (SGD+momentum unless `optimizer` is given) and returns the errors of
    the best-validation epoch and the per-epoch history.

    The weights of the epoch with the best validation accuracy are restored
    before the test evaluation (model selection never looks at test).
    """
    if optimizer is None:
        if learning_rate is None:
            raise ValueError("Pass learning_rate= (SGD with momentum) or optimizer=. Received: neither")
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum,
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


def dense_copy(model):
    """A new model with `model`'s architecture and weights (the dense baseline
    trained from the same initialization as its pruned copies)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def markdown_table(header, rows):
    """A markdown table from a header list and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
