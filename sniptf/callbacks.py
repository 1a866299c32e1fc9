"""Keras callbacks for training pruned networks.

`keras.callbacks.TensorBoard` already logs the learning rate and
`BackupAndRestore` handles preemption; these add what Keras lacks.
"""

import json
import math
import os
import time
import weakref

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sniptf import run_dir
from sniptf.sparsity_report import sparsity


class SparsityLog(keras.callbacks.Callback):
    """Adds the model's `sparsity` to the epoch logs (so TensorBoard plots it).

    Put it before `keras.callbacks.TensorBoard` in the callback list.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        try:
            logs["sparsity"] = sparsity(self.model).sparsity
        except ValueError:  # a model with no prunable layer
            logs["sparsity"] = 0.0


class BestModel(keras.callbacks.Callback):
    """Saves the model (a `.keras` file) when `monitor` improves.

    `keras.callbacks.ModelCheckpoint(save_best_only=True)` does most of this
    but not three things a preemptible run needs: it writes in place, so a
    kill during the write corrupts the only best model (here: a temporary
    file, then `os.replace`); it forgets its best value on restart, so the
    first epoch after a resume overwrites a better model (here: the best
    value lives in `<path>.json`); and it records no step (the `.json` has
    the value, epoch and step, which `metrics.json` reports).
    """

    def __init__(self, path, monitor="val_accuracy", mode="max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"Expected mode 'max' or 'min'. Received: mode={mode!r}")
        self.path = path
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self._done_epoch = None

    def best(self):
        """`{"value", "epoch", "step"}` of the saved model, or None."""
        try:
            with open(self.path + ".json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def on_train_begin(self, logs=None):
        self._done_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if self._done_epoch == epoch:
            return  # already run for this epoch by a `Backup` placed before it
        self._done_epoch = epoch
        value = (logs or {}).get(self.monitor)
        if value is None or diverged(self.model):
            return
        best = self.best()
        if best is not None and self.sign * value <= self.sign * best["value"]:
            return
        tmp = self.path + ".tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, self.path)
        run_dir.write_text(self.path + ".json", json.dumps(
            {"value": float(value), "epoch": epoch + 1,
             "step": int(self.model.optimizer.iterations.numpy())}))


class StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `train_steps` steps.

    Lets the last epoch be shorter than the others (`train_steps` need not be
    a multiple of the epoch length) and makes a resumed run end exactly at
    `train_steps`: the step count comes from the restored optimizer.
    """

    def __init__(self, train_steps):
        super().__init__()
        self.train_steps = train_steps

    def _check(self):
        if int(self.model.optimizer.iterations.numpy()) >= self.train_steps:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check()


class Progress(keras.callbacks.Callback):
    """One log line per epoch: step, loss, validation accuracy, elapsed time, ETA."""

    def __init__(self, train_steps):
        super().__init__()
        self.train_steps = train_steps

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.first_step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        elapsed = time.perf_counter() - self.start
        rate = (step - self.first_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.train_steps - step) / rate if rate > 0 else float("nan")
        logging.info("step %d/%d (%.0f%%) loss %.4f val_accuracy %.4f elapsed %.0fs eta %.0fs",
                     step, self.train_steps, 100.0 * step / self.train_steps, logs.get("loss", float("nan")),
                     logs.get("val_accuracy", float("nan")), elapsed, eta)


_DIVERGED = weakref.WeakKeyDictionary()  # model -> the Divergence report that stopped it


def diverged(model):
    """Whether a `Divergence` callback has stopped this model's training."""
    return model in _DIVERGED


class Divergence(keras.callbacks.Callback):
    """Stops training at the first step after which the loss or a weight is NaN or
    infinite, and says where.

    In place of `keras.callbacks.TerminateOnNaN`, which watches the loss only:
    a NaN gradient can turn a layer's weights to NaN while the loss stays
    finite (a ReLU may map NaN to 0, as on some CPUs, and the network goes on
    from its biases), so the trainable weights are checked too, in one compiled
    reduction per step.
    `report` holds the step, the loss, and the weights that are no longer
    finite, in model order (a weight goes non-finite when its gradient did, so
    the first of them belongs to the first layer whose gradients overflowed;
    none means the loss itself overflowed). Once it has fired, `Backup` and
    `BestModel` write nothing more, so the last good backup and the best
    model are kept.
    """

    def __init__(self):
        super().__init__()
        self.report = None
        self._finite = None

    def on_train_begin(self, logs=None):
        _DIVERGED.pop(self.model, None)
        watched = [v for v in self.model.trainable_weights if "float" in str(v.dtype)]
        self._finite = tf.function(lambda: tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v.value)) for v in watched]))

    def on_train_batch_end(self, batch, logs=None):
        if self.report is not None:
            return
        loss = (logs or {}).get("loss")
        loss = float("nan") if loss is None else float(loss)
        if math.isfinite(loss) and bool(self._finite()):
            return
        step = int(self.model.optimizer.iterations.numpy())
        bad = [v.path for v in self.model.weights if not np.isfinite(v.numpy()).all()]
        self.report = {"step": step, "loss": loss, "nonfinite_weights": bad}
        _DIVERGED[self.model] = self.report
        self.model.stop_training = True
        where = (f"the first weight that is no longer finite is {bad[0]} ({len(bad)} in all)" if bad
                 else "every weight is still finite: the loss itself overflowed (check the inputs, "
                      "the learning rate, the loss scale)")
        logging.error("sniptf: at step %d the loss is %s; training stopped (diverged): %s. "
                      "The last good backup and the best model are kept.", step, loss, where)


def __getattr__(name):
    if name == "Backup":  # its own room since the reliability work grew it
        raise AttributeError("sniptf.callbacks.Backup moved to sniptf.backup.Backup "
                             "(from sniptf.backup import Backup)")
    raise AttributeError(f"module 'sniptf.callbacks' has no attribute {name!r}")
