"""Keras callbacks for training pruned networks.

`keras.callbacks.TensorBoard` already logs the learning rate and
`BackupAndRestore` handles preemption; these add what Keras lacks.
"""

import hashlib
import json
import math
import os
import shutil
import time
import weakref

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sniptf import _keras_compat
from sniptf import distribute
from sniptf.report import sparsity


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
        if value is None or _diverged(self.model):
            return
        best = self.best()
        if best is not None and self.sign * value <= self.sign * best["value"]:
            return
        tmp = self.path + ".tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, self.path)
        with open(self.path + ".json.tmp", "w") as f:
            json.dump({"value": float(value), "epoch": epoch + 1,
                       "step": int(self.model.optimizer.iterations.numpy())}, f)
        os.replace(self.path + ".json.tmp", self.path + ".json")


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


def _diverged(model):
    """Whether a `Divergence` callback has stopped this model's training."""
    return model in _DIVERGED


class Divergence(keras.callbacks.Callback):
    """Stops training at the first step after which the loss or a weight is NaN or
    infinite, and says where.

    In place of `keras.callbacks.TerminateOnNaN`, which watches the loss only:
    a NaN gradient can turn a layer's weights to NaN while the loss stays
    finite (a ReLU maps NaN to 0, and the network goes on from its biases), so
    the trainable weights are checked too, in one compiled reduction per step.
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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_or_none(path):
    try:
        return _sha256(path)
    except OSError:
        return None


def _read_or_none(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _link_or_copy(source, target):
    """A hard link (the source is only ever replaced, never written in place,
    so the link keeps its content), or a copy where links are not possible."""
    if os.path.exists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


_BEST_FILE, _BEST_RECORD = "best.keras", "best.keras.json"


class Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backups can be trusted.

    Keras's callback writes its backup in place and loads whatever it finds:
    a kill during the write (or a full disk) leaves a truncated file, and the
    resumed run then crashes with an h5py trace or trains on a half-loaded
    model. Here each backup is a generation directory `epoch-<n>/` (weights
    and a metadata file holding the weights' SHA-256), written under a
    temporary name and renamed into place; the previous generation is kept.
    On restore the newest generation whose checksum matches is loaded; a bad
    one is named in a warning and moved to `<backup_dir>.corrupt/`, and if none is good
    training starts clean, with a warning. A load that fails midway puts
    every variable back as it was. Nothing is written once a `Divergence`
    callback has fired, and a diverged run keeps its backup.

    With `best_model` (a `BestModel`; anywhere in the callback list, or not in it), each
    generation also holds the best model as of its epoch (hard-linked, so no
    copy), and resuming from epoch n puts that one back: the resumed run is
    the run that was interrupted, whatever happened after epoch n before the
    kill. Without it the workers of a multi-worker job can resume with
    different best models (a worker killed before its last save), decide
    differently whether to save, and so call `model.save`'s collectives out of
    step with the others — a hang, then TensorFlow's "tasks are unhealthy".
    A best model no generation accounts for is moved to
    `<checkpoints>/abandoned-<time>/`, never deleted.
    """

    def __init__(self, backup_dir, best_model=None):
        super().__init__(backup_dir)
        self.restored_epoch = 0
        self.best_model = best_model
        self._best_hash = None  # ((dev, inode, size, mtime), sha256) of the last best model hashed

    # --- where generations live ---
    def _generations(self):
        """`(epoch, directory)` of the backups, newest first."""
        found = []
        for name in os.listdir(self.backup_dir) if os.path.isdir(self.backup_dir) else []:
            if name.startswith("epoch-") and name[len("epoch-"):].isdigit():
                found.append((int(name[len("epoch-"):]), os.path.join(self.backup_dir, name)))
        return sorted(found, reverse=True)

    @staticmethod
    def _checked(directory):
        """The metadata of a generation whose weights match their checksum."""
        weights = os.path.join(directory, "backup.weights.h5")
        try:
            with open(os.path.join(directory, "metadata.json")) as f:
                meta = json.load(f)
            good = _sha256(weights) == meta["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"backup {directory!r} is unreadable ({type(e).__name__}: {e})") from None
        best = meta.get("best_sha256")
        if good and best:
            try:
                good = _sha256(os.path.join(directory, _BEST_FILE)) == best
            except OSError as e:
                raise ValueError(f"backup {directory!r} is unreadable ({type(e).__name__}: {e})") from None
        if not good:
            raise ValueError(f"backup {directory!r} does not match its checksum (truncated or corrupt)")
        return meta

    @classmethod
    def newest_good_epoch(cls, backup_dir):
        """The epoch the newest good backup in `backup_dir` resumes from, or 0 (reads only)."""
        for epoch, directory in cls(backup_dir)._generations():
            try:
                cls._checked(directory)
                return epoch
            except ValueError:
                continue
        return 0

    # --- Keras's hooks ---
    def on_train_begin(self, logs=None):
        if self.best_model is not None:
            self.best_model.on_train_begin(logs)
        strategy = tf.distribute.get_strategy()
        problems, good = [], []
        for epoch, directory in self._generations():
            try:
                self._checked(directory)
                good.append((epoch, directory))
            except ValueError as e:
                problems.append(str(e))
                self._set_aside(directory)
        # every worker resumes from the same epoch: the newest one all of them hold
        # (a worker killed mid-epoch may be one backup behind the others)
        target = distribute.agree_min(strategy, good[0][0] if good else 0)
        before = self._snapshot()
        loaded = 0
        for epoch, directory in good:
            if epoch == target:
                try:
                    self._load(os.path.join(directory, "backup.weights.h5"))
                    loaded = epoch
                except ValueError as e:
                    problems.append(str(e))
                    self._set_aside(directory)
        if target and distribute.agree_min(strategy, int(loaded == target)) == 0:
            self._restore(before)  # a worker could not load it: every worker starts clean
            loaded = 0
        self.restored_epoch = loaded
        _keras_compat.set_initial_epoch(self.model, loaded)
        if self.best_model is not None:
            self._restore_best(dict(good).get(loaded))
        if loaded:
            logging.info("sniptf: resuming after epoch %d (backup %s)", loaded, self.backup_dir)
        for problem in problems:
            logging.warning("sniptf: %s; moved to %s", problem, self._corrupt_dir())
        if problems or (target and not loaded):
            logging.warning("sniptf: %s", f"resuming from the backup of epoch {loaded}"
                            if loaded else "no good backup left: training starts clean")

    def set_model(self, model):
        super().set_model(model)
        if self.best_model is not None:  # also when it is not in the callback list itself
            self.best_model.set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        if self.best_model is not None:
            # the backup takes in this epoch's best model, wherever BestModel is in the list
            # (it then does nothing on its own turn); every worker calls it at the same point
            self.best_model.on_epoch_end(epoch, logs)
        super().on_epoch_end(epoch, logs)

    def _variables(self):
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        return list(model.variables) + list(getattr(model.optimizer, "variables", []))

    def _snapshot(self):
        return [(v, v.numpy()) for v in self._variables()]

    @staticmethod
    def _restore(snapshot):
        for v, value in snapshot:
            v.assign(value)

    def _load(self, weights):
        before = self._snapshot()
        try:
            self.model.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - any failure: put everything back
            self._restore(before)
            raise ValueError(f"backup {weights!r} could not be loaded ({type(e).__name__}: {e})") from e

    def _restore_best(self, directory):
        """Puts back the best model of the generation resumed from (`directory`, or
        None for a clean start); a backup written without one leaves it alone."""
        path = self.best_model.path
        meta = {}
        if directory is not None:
            with open(os.path.join(directory, "metadata.json")) as f:
                meta = json.load(f)
            if "best_sha256" not in meta:
                return  # written before backups held the best model
        saved = os.path.join(directory, _BEST_FILE) if meta.get("best_sha256") else None
        if saved and meta["best_sha256"] == _sha256_or_none(path) and \
                _read_or_none(os.path.join(directory, _BEST_RECORD)) == _read_or_none(path + ".json"):
            return  # already the one in place (the saved file's hash was checked on restore)
        current = [f for f in (path, path + ".json") if os.path.exists(f)]
        if current:  # from epochs after the one resumed from: set aside, not deleted
            aside = os.path.join(os.path.dirname(path), f"abandoned-{time.time_ns()}")
            os.makedirs(aside)
            for f in current:
                os.replace(f, os.path.join(aside, os.path.basename(f)))
            logging.warning("sniptf: the best model saved after the epoch resumed from was moved "
                            "to %s", aside)
        if saved:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            _link_or_copy(os.path.join(directory, _BEST_FILE), path + ".restoring")
            os.replace(path + ".restoring", path)
            shutil.copyfile(os.path.join(directory, _BEST_RECORD), path + ".json.restoring")
            os.replace(path + ".json.restoring", path + ".json")

    def _best_sha256(self, link):
        """The best model's SHA-256, hashed again only when BestModel replaced the file
        (a new inode) since the last backup, not every epoch."""
        stat = os.stat(link)
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._best_hash is None or self._best_hash[0] != key:
            self._best_hash = (key, _sha256(link))
        return self._best_hash[1]

    def _corrupt_dir(self):
        # beside the backup directory, which a finished fit deletes
        return os.path.normpath(self.backup_dir) + ".corrupt"

    def _set_aside(self, directory):
        corrupt = self._corrupt_dir()
        os.makedirs(corrupt, exist_ok=True)
        os.replace(directory, os.path.join(corrupt, f"{os.path.basename(directory)}-{time.time_ns()}"))

    def _save_model(self):
        if _diverged(self.model):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = os.path.join(self.backup_dir, f".writing-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        weights = os.path.join(tmp, "backup.weights.h5")
        self.model.save_weights(weights, overwrite=True)
        meta = {"epoch": self._current_epoch, "sha256": _sha256(weights)}
        if self.best_model is not None:
            meta["best_sha256"] = None  # no best model yet
            path = self.best_model.path
            if os.path.exists(path) and os.path.exists(path + ".json"):
                _link_or_copy(path, os.path.join(tmp, _BEST_FILE))
                shutil.copyfile(path + ".json", os.path.join(tmp, _BEST_RECORD))  # small: a copy
                meta["best_sha256"] = self._best_sha256(os.path.join(tmp, _BEST_FILE))
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        final = os.path.join(self.backup_dir, f"epoch-{self._current_epoch}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, older in self._generations()[2:]:  # keep this one and the previous
            shutil.rmtree(older, ignore_errors=True)

    def on_train_end(self, logs=None):
        if not _diverged(self.model):
            super().on_train_end(logs)
