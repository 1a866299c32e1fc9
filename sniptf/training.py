"""Training a pruned network with plain `model.fit` and a few sniptf callbacks.

`run(TrainConfig(...))` is what `scripts/train.py` does: prune at
initialization, train for a fixed number of steps under any strategy, keep the
best-validation model, survive preemption (keras `BackupAndRestore`), evaluate
on test, write `metrics.json`, TensorBoard logs and a SavedModel.
"""

import dataclasses
import hashlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sniptf import data as data_lib
from sniptf import distribute
from sniptf import models as models_lib
from sniptf import transform
from sniptf.pruning import prune
from sniptf.report import sparsity
from sniptf.saved_model import export
from sniptf.scoring import CRITERIA

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
LR_SCHEDULES = ("constant", "piecewise", "linear")
NO_PRUNING = "none"


def learning_rate_schedule(name, learning_rate, *, train_steps, decay_every=None,
                           decay_factor=0.1, end_factor=0.0):
    """A learning rate or `keras.optimizers.schedules.LearningRateSchedule`.

    Args:
        name: `"constant"`; `"piecewise"`: multiply by `decay_factor` every
            `decay_every` steps (the SNIP recipe: x0.1 every 25k/30k steps);
            `"linear"`: decay linearly to `learning_rate * end_factor` at
            `train_steps` (the data-parallelism paper's schedule).
    """
    if name not in LR_SCHEDULES:
        raise ValueError(f"Unknown schedule. Expected one of {LR_SCHEDULES}. Received: lr_schedule={name!r}")
    if not learning_rate > 0:
        raise ValueError(f"Expected learning_rate > 0. Received: learning_rate={learning_rate!r}")
    if name == "piecewise" and (not decay_every or decay_every < 1):
        raise ValueError(f"lr_schedule='piecewise' needs decay_every >= 1. Received: decay_every={decay_every!r}")
    if name == "constant":
        return float(learning_rate)
    if name == "piecewise":
        boundaries = list(range(decay_every, train_steps, decay_every))
        if not boundaries:
            return float(learning_rate)
        values = [learning_rate * decay_factor ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps=train_steps, end_learning_rate=learning_rate * end_factor, power=1.0)


def _check_optimizer(name, momentum, weight_decay):
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer. Expected one of {OPTIMIZERS}. Received: optimizer={name!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Expected momentum in [0, 1). Received: momentum={momentum!r}")
    if weight_decay < 0:
        raise ValueError(f"Expected weight_decay >= 0. Received: weight_decay={weight_decay!r}")


def make_optimizer(name, learning_rate, *, momentum=0.9, weight_decay=0.0):
    """An optimizer by name; `weight_decay` is Keras's decoupled weight decay."""
    _check_optimizer(name, momentum, weight_decay)
    decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, weight_decay=decay)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=name == "nesterov",
                                    weight_decay=decay)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=decay)
    return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)


class TrainingLogs(keras.callbacks.Callback):
    """Adds `learning_rate` and `sparsity` to the epoch logs (so TensorBoard has them).

    Put it before `keras.callbacks.TensorBoard` in the callback list.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        try:
            logs["sparsity"] = sparsity(self.model).sparsity
        except ValueError:  # a model with no prunable layer
            logs["sparsity"] = 0.0


class BestModel(keras.callbacks.Callback):
    """Saves the model (a `.keras` file, written atomically) when `monitor` improves.

    The best value is kept in `<path>.json`, so a resumed run does not
    overwrite a better model saved before the interruption.
    """

    def __init__(self, path, monitor="val_accuracy", mode="max"):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0

    def _best(self):
        try:
            with open(self.path + ".json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        best = self._best()
        if best is not None and self.sign * value <= self.sign * best["value"]:
            return
        tmp = self.path + ".tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, self.path)
        with open(self.path + ".json.tmp", "w") as f:
            json.dump({"value": float(value), "epoch": epoch + 1,
                       "step": int(self.model.optimizer.iterations.numpy())}, f)
        os.replace(self.path + ".json.tmp", self.path + ".json")


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


@dataclasses.dataclass
class TrainConfig:
    """Everything `run` needs; `scripts/train.py` fills it from flags."""

    model: str = "lenet_300_100"
    dataset: str = "mnist10k"
    kappa: float = 0.05
    criterion: str = "snip"
    batch_size: int = 100
    train_steps: int = 1000
    eval_every: int = 100
    optimizer: str = "momentum"
    learning_rate: float = 0.1
    momentum: float = 0.9
    lr_schedule: str = "piecewise"
    lr_decay_every: int = 25000
    lr_decay_factor: float = 0.1
    lr_end_factor: float = 0.0
    weight_decay: float = 0.0
    kernel_initializer: str = ""
    seed: int = 0
    strategy: str = "default"
    tpu: str = ""
    num_cpu_devices: int = 0
    output_dir: str = "out/train"

    def validate(self):
        """Raises ValueError naming the first bad field; nothing has run yet."""
        from sniptf.selection import check_kappa
        if self.model not in models_lib.MODELS:
            raise ValueError(f"Unknown model. Expected one of {sorted(models_lib.MODELS)}. Received: model={self.model!r}")
        if self.dataset not in data_lib.DATASETS:
            raise ValueError(f"Unknown dataset. Expected one of {sorted(data_lib.DATASETS)}. Received: dataset={self.dataset!r}")
        if self.criterion != NO_PRUNING:
            if self.criterion not in CRITERIA:
                raise ValueError(f"Unknown criterion. Expected one of {sorted(CRITERIA) + [NO_PRUNING]}. "
                                 f"Received: criterion={self.criterion!r}")
            check_kappa(self.kappa)
        for name in ("batch_size", "train_steps", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be an int >= 1. Received: {name}={value!r}")
        if self.train_steps % self.eval_every:
            raise ValueError(
                f"train_steps must be a multiple of eval_every (training runs in epochs of "
                f"eval_every steps). Received: train_steps={self.train_steps}, eval_every={self.eval_every}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown schedule. Expected one of {LR_SCHEDULES}. "
                             f"Received: lr_schedule={self.lr_schedule!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"Expected learning_rate > 0. Received: learning_rate={self.learning_rate!r}")
        if self.lr_schedule == "piecewise" and self.lr_decay_every < 1:
            raise ValueError(f"Expected lr_decay_every >= 1. Received: lr_decay_every={self.lr_decay_every!r}")
        _check_optimizer(self.optimizer, self.momentum, self.weight_decay)
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"Unknown strategy. Expected one of {distribute.STRATEGIES}. Received: strategy={self.strategy!r}")
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError("--strategy=tpu needs --tpu=NAME_OR_ADDRESS.")
        check_output_dir(self.output_dir)


def check_output_dir(path):
    """Creates `path` if needed; raises ValueError if it cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-probe")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"output_dir is not writable: {path!r} ({e.strerror or e})") from e


def mask_digest(model):
    """SHA-256 of every mask in model order: equal digests, equal masks."""
    h = hashlib.sha256()
    for e in transform.masked_entries(model):
        h.update(e.key.encode())
        h.update(np.packbits(e.mask.numpy().astype(bool)).tobytes())
    return h.hexdigest()


def _initializer_kwargs(config):
    return {"kernel_initializer": config.kernel_initializer} if config.kernel_initializer else {}


def run(config, strategy=None):
    """Prunes at initialization, trains, evaluates and exports; returns the metrics.

    `strategy` defaults to `distribute.make_strategy(config.strategy, ...)`.

    Writes into `config.output_dir`: `metrics.json`, `logs/` (TensorBoard),
    `backup/` (while training; a rerun of the same command resumes from it),
    `checkpoints/best.keras` (best validation accuracy) and `saved_model/`
    (stripped). On multi-worker runs only the chief writes there.
    """
    config.validate()
    wall_start = time.perf_counter()
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy, tpu=config.tpu,
                                            num_cpu_devices=config.num_cpu_devices or None)
    # before any data: tf.data's seeded shuffles also depend on the global seed
    keras.utils.set_random_seed(config.seed)
    chief = distribute.is_chief(strategy)
    out = config.output_dir if chief else os.path.join(config.output_dir, ".workers",
                                                       str(strategy.cluster_resolver.task_id))
    os.makedirs(out, exist_ok=True)
    info = data_lib.info(config.dataset)
    train = data_lib.load(config.dataset, "train", batch_size=config.batch_size, shuffle=True,
                          seed=config.seed, drop_remainder=True).repeat()
    validation = data_lib.load(config.dataset, "validation", batch_size=config.batch_size)
    test = data_lib.load(config.dataset, "test", batch_size=config.batch_size)
    score_batch = next(iter(data_lib.load(config.dataset, "train", batch_size=config.batch_size,
                                          shuffle=True, seed=config.seed + 1)))
    with strategy.scope():
        dense = models_lib.get(config.model, info.input_shape, info.num_classes,
                               **_initializer_kwargs(config))
        if config.criterion == NO_PRUNING:
            model = dense
        else:
            model = prune(dense, score_batch, kappa=config.kappa, criterion=config.criterion,
                          seed=config.seed)
        schedule = learning_rate_schedule(
            config.lr_schedule, config.learning_rate, train_steps=config.train_steps,
            decay_every=config.lr_decay_every, decay_factor=config.lr_decay_factor,
            end_factor=config.lr_end_factor)
        model.compile(make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                                     weight_decay=config.weight_decay),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        _build_for_multi_worker(model, strategy, score_batch)
    digest_at_prune = mask_digest(model)
    backup_dir = os.path.join(out, "backup")
    resumed_epoch = _backup_epoch(backup_dir)
    checkpoints = os.path.join(out, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    best_path = os.path.join(checkpoints, "best.keras")
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.TerminateOnNaN(),
        TrainingLogs(),
        BestModel(best_path),
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        Progress(config.train_steps),
    ]
    logging.info("training %s (%s, kappa=%s) on %s for %d steps under %s (%d replicas)%s",
                 config.model, config.criterion, config.kappa, config.dataset, config.train_steps,
                 config.strategy, strategy.num_replicas_in_sync,
                 f", resuming after epoch {resumed_epoch}" if resumed_epoch else "")
    epochs = config.train_steps // config.eval_every
    model.fit(train, validation_data=validation, epochs=epochs, steps_per_epoch=config.eval_every, shuffle=False,
              callbacks=callbacks, verbose=0)
    steps = int(model.optimizer.iterations.numpy())
    diverged = steps < config.train_steps
    if diverged:
        logging.warning("the loss became NaN at step %d; training stopped (diverged)", steps)
    with strategy.scope():
        best = keras.models.load_model(best_path) if os.path.exists(best_path) else model
        best.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
        _build_for_multi_worker(best, strategy, score_batch)
    _, test_accuracy = best.evaluate(test, verbose=0)
    try:
        with open(best_path + ".json") as f:
            best_info = json.load(f)
    except OSError:  # diverged before the first validation
        best_info = {"value": float("nan"), "step": 0}
    report = sparsity(best) if config.criterion != NO_PRUNING else None
    metrics = {
        "model": config.model, "dataset": config.dataset, "criterion": config.criterion,
        "kappa": config.kappa if config.criterion != NO_PRUNING else 1.0,
        "dense_parameters": int(dense.count_params()),
        "prunable_weights": report.total.total if report else None,
        "kept_weights": report.kept if report else None,
        "sparsity": report.sparsity if report else 0.0,
        "sparsity_per_layer": {c.name: c.sparsity for c in report.layers} if report else {},
        "validation_error": 1.0 - best_info["value"],
        "best_step": best_info["step"],
        "test_error": 1.0 - float(test_accuracy),
        "steps": steps,
        "diverged": diverged,
        "wall_time_seconds": time.perf_counter() - wall_start,
        "resumed_after_epoch": resumed_epoch,
        "strategy": config.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "mask_digest_at_prune": digest_at_prune,
        "mask_digest_final": mask_digest(model),
    }
    if chief:
        export(best, os.path.join(out, "saved_model"), overwrite=True)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    logging.info("done: test error %.4f, validation error %.4f, sparsity %.4f, %d steps",
                 metrics["test_error"], metrics["validation_error"], metrics["sparsity"], steps)
    return metrics


def _build_for_multi_worker(model, strategy, batch):
    """Keras 3.15's fit/evaluate first reduce a PerReplica data batch to build
    metrics symbolically, which fails under MultiWorkerMirrored: build them
    from a plain batch here and skip that step (see also distribute.py)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model._symbolic_build(data_batch=batch)
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _backup_epoch(backup_dir):
    """The epoch a BackupAndRestore backup in `backup_dir` resumes from, or 0."""
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as f:
            return int(json.load(f).get("epoch", 0))
    except (OSError, ValueError):
        return 0


def export_checkpoint(checkpoint_dir, output_dir, *, overwrite=False):
    """Exports a trained run's best model (`checkpoints/best.keras`) as a SavedModel."""
    candidates = [os.path.join(checkpoint_dir, "best.keras"),
                  os.path.join(checkpoint_dir, "checkpoints", "best.keras")]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        raise ValueError(
            f"No best.keras in {checkpoint_dir!r} or its checkpoints/; pass the output_dir "
            "of a scripts/train.py run (or its checkpoints/ folder).")
    model = keras.models.load_model(path)
    export(model, output_dir, overwrite=overwrite)
    return model

