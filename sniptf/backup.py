"""`Backup`: Keras's `BackupAndRestore` with checksummed generations that can be trusted.

What it adds to Keras's callback, and why, is in the class docstring. The one
place it touches Keras's private hooks (`_save_model`, `_current_epoch`) is
`_keras_compat.BackupAndRestoreHooks`, which it subclasses.
"""

import hashlib
import json
import os
import shutil
import time

import tensorflow as tf
from absl import logging

from sniptf import _keras_compat
from sniptf import distribute
from sniptf.callbacks import diverged


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


class Backup(_keras_compat.BackupAndRestoreHooks):
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

    Each generation also records the wall time spent on the run so far: that of
    the attempts before (each counted to the backup the next one resumed from)
    plus this attempt's since `started` (a `time.perf_counter()` value; default:
    when the callback was made). `elapsed_before` is the part of earlier attempts
    (0 on a clean start), so a resumed run's total is `elapsed_before` plus this
    attempt's time.
    """

    def __init__(self, backup_dir, best_model=None, *, started=None):
        super().__init__(backup_dir)
        self.restored_epoch = 0
        self.elapsed_before = 0.0
        self.started = time.perf_counter() if started is None else started
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
        problems, good, metadata = [], [], {}
        for epoch, directory in self._generations():
            try:
                metadata[epoch] = self._checked(directory)
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
        # backups written before they recorded it count as 0
        self.elapsed_before = float(metadata[loaded].get("wall_time_seconds", 0.0)) if loaded else 0.0
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

    def save_backup(self):
        """Writes one checksummed generation `epoch-<n>/` atomically; keeps the previous one."""
        if diverged(self.model):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = os.path.join(self.backup_dir, f".writing-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        weights = os.path.join(tmp, "backup.weights.h5")
        self.model.save_weights(weights, overwrite=True)
        meta = {"epoch": self.current_epoch, "sha256": _sha256(weights),
                "wall_time_seconds": self.elapsed_before + time.perf_counter() - self.started}
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
        final = os.path.join(self.backup_dir, f"epoch-{self.current_epoch}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, older in self._generations()[2:]:  # keep this one and the previous
            shutil.rmtree(older, ignore_errors=True)

    def on_train_end(self, logs=None):
        if not diverged(self.model):
            super().on_train_end(logs)
