"""Training a pruned network with plain `model.fit` and a few sniptf callbacks.

`run(TrainConfig(...))` is what `scripts/train.py` does: prune at
initialization, train for a fixed number of steps under any strategy, keep the
best-validation model, survive preemption (keras `BackupAndRestore`), evaluate
on test, write `metrics.json`, TensorBoard logs and a SavedModel.
"""

import dataclasses
import json
import math
import os
import re
import shutil
import time

import keras
from absl import logging

from sniptf import _keras_compat
from sniptf import backup as backup_lib
from sniptf import callbacks as callbacks_lib
from sniptf import criteria
from sniptf import data as data_lib
from sniptf import distribute
from sniptf import initializers
from sniptf import models as models_lib
from sniptf import optimizers
from sniptf import rewinding
from sniptf import run_dir
from sniptf import sanity as sanity_lib
from sniptf import selection
from sniptf import transform
from sniptf.connectivity import effective_sparsity
from sniptf.dst import SET
from sniptf.dst import RigL
from sniptf.exporters import export
from sniptf.gradual import GradualPruning
from sniptf.pruning import prune
from sniptf.report import mask_digest
from sniptf.report import sparsity
from sniptf.rewinding import RewindPoint
from sniptf.transform import wrap

OPTIMIZERS = ("sgd", "momentum", "nesterov", "tf1_momentum", "tf1_nesterov", "adam", "adamw")
LR_SCHEDULES = ("constant", "piecewise", "linear")
NO_PRUNING = "none"
# the mask of a previous run, pruned further by magnitude and rewound (TrainConfig.rewind_from)
IMP = "imp"


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


def check_optimizer(name, momentum, weight_decay):
    """Validates an optimizer name (`OPTIMIZERS`), momentum in [0, 1) and weight decay >= 0."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer. Expected one of {OPTIMIZERS}. Received: optimizer={name!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Expected momentum in [0, 1). Received: momentum={momentum!r}")
    if weight_decay < 0:
        raise ValueError(f"Expected weight_decay >= 0. Received: weight_decay={weight_decay!r}")


def make_optimizer(name, learning_rate, *, momentum=0.9, weight_decay=0.0):
    """An optimizer by name; `weight_decay` is Keras's decoupled weight decay.
    `momentum` / `nesterov` are Keras's SGD, `tf1_momentum` / `tf1_nesterov` TF1's
    `MomentumOptimizer` (`sniptf.optimizers.TF1Momentum`: the same at a constant
    learning rate, not under a schedule)."""
    check_optimizer(name, momentum, weight_decay)
    decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, weight_decay=decay)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=name == "nesterov",
                                    weight_decay=decay)
    if name in ("tf1_momentum", "tf1_nesterov"):
        return optimizers.TF1Momentum(learning_rate, momentum=momentum, nesterov=name == "tf1_nesterov",
                                      weight_decay=decay)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=decay)
    return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)


@dataclasses.dataclass
class TrainConfig:
    """Everything `run` needs; `scripts/train.py` fills it from flags."""

    model: str = "lenet_300_100"
    dataset: str = "mnist10k"
    standardize: bool = False
    kappa: float = 0.05
    criterion: str = "snip"
    scope: str = "global"
    min_kept_per_layer: int = 0
    score_batches: int = 1  # batches the criterion scores on (gradients summed)
    isometry_steps: int = 0  # > 0: approximate isometry on the pruned kernels (Lee et al. 2020)
    # the SNIP authors' code (`sniptf.prune`'s parity switches): biases scored and masked
    # too (zero at init: pruned first); the weights re-drawn after scoring
    include_biases: bool = False
    reinitialize: bool = False
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
    overwrite: bool = False  # train again over a finished run in output_dir
    # pruning during training (sniptf.GradualPruning): off while final sparsity is 0
    gradual_pruning_final_sparsity: float = 0.0
    gradual_pruning_initial_sparsity: float = 0.0
    gradual_pruning_begin_step: int = 0
    gradual_pruning_end_step: int = 0  # 0: train_steps
    gradual_pruning_frequency: int = 100
    # dynamic sparse training (sniptf.SET / sniptf.RigL): "", "set" or "rigl"
    dst: str = ""
    update_every: int = 100
    dst_end_step: int = 0  # 0: 3/4 of train_steps (RigL's default)
    drop_fraction: float = 0.3
    rewind_step: int = -1  # >= 0: keep the weights after that step in rewind.npz
    sanity: str = ""  # "", "shuffle", "reinit" or "invert" (sniptf.sanity; Frankle et al. 2021)
    # criterion="imp": a finished run's directory (its final.npz and rewind.npz); this run
    # starts from its final masks pruned by magnitude to 1 - kappa, kept weights rewound
    # (one round of iterative magnitude pruning with rewinding)
    rewind_from: str = ""



@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked `TrainConfig` and what checking it produced; `prepare` makes it."""

    config: TrainConfig
    info: data_lib.DatasetInfo
    epochs: int
    steps_per_epoch: int


def prepare(config):
    """Checks every value of `config` with the function that uses it; no side effects.

    Each check belongs to the function that uses the value (`models.check_name`,
    `data.info`, `criteria.get_criterion`, `selection.check_kappa`,
    `learning_rate_schedule`, `check_optimizer`, `distribute.check_strategy`,
    `check_output_dir`); this only calls them, before any work.

    Returns:
        A `Plan` for `run`.

    Raises:
        ValueError / TypeError: the first bad value, named as `field=value`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"Expected a TrainConfig. Received: config={config!r}")
    models_lib.check_name(config.model)
    info = data_lib.info(config.dataset)
    for name in ("standardize", "include_biases", "reinitialize"):
        if not isinstance(getattr(config, name), bool):
            raise TypeError(f"Expected {name} to be a bool. Received: {name}={getattr(config, name)!r}")
    for name in ("include_biases", "reinitialize"):
        if getattr(config, name) and config.criterion in (NO_PRUNING, IMP):
            raise ValueError(f"{name} is a switch of pruning at init; pick a criterion. "
                             f"Received: {name}=True with criterion={config.criterion!r}")
    if config.criterion not in (NO_PRUNING, IMP):
        criteria.get_criterion(config.criterion)
    if config.criterion != NO_PRUNING:
        selection.check_kappa(config.kappa)
    _check_rewind_from(config)
    for name in ("batch_size", "train_steps", "eval_every", "score_batches"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} to be an int >= 1. Received: {name}={value!r}")
    learning_rate_schedule(config.lr_schedule, config.learning_rate, train_steps=config.train_steps,
                           decay_every=config.lr_decay_every, decay_factor=config.lr_decay_factor,
                           end_factor=config.lr_end_factor)
    check_optimizer(config.optimizer, config.momentum, config.weight_decay)
    selection.check_seed(config.seed)
    selection.check_scope(config.scope)
    selection.check_min_kept(config.min_kept_per_layer)
    if config.kernel_initializer:
        initializers.get(config.kernel_initializer)
    distribute.check_strategy(config.strategy, tpu=config.tpu,
                              num_cpu_devices=config.num_cpu_devices or None)
    _during_training_callbacks(config)  # each checks its own values
    if config.sanity not in SANITY_CHECKS:
        raise ValueError(f"Expected sanity to be one of {SANITY_CHECKS}. Received: sanity={config.sanity!r}")
    if config.sanity and config.criterion == NO_PRUNING:
        raise ValueError(f"A sanity check changes a mask found at init; pick a criterion. "
                         f"Received: sanity={config.sanity!r} with criterion={config.criterion!r}")
    if config.sanity == "invert" and config.criterion == IMP:
        raise ValueError(f"sanity='invert' keeps the lowest scores of a criterion at init; an IMP mask "
                         f"takes 'shuffle' or 'reinit'. Received: sanity={config.sanity!r} with "
                         f"criterion={config.criterion!r}")
    if isinstance(config.isometry_steps, bool) or not isinstance(config.isometry_steps, int) \
            or config.isometry_steps < 0:
        raise ValueError(f"Expected isometry_steps to be an int >= 0 (0: off). "
                         f"Received: isometry_steps={config.isometry_steps!r}")
    if config.isometry_steps and config.criterion in (NO_PRUNING, IMP):
        raise ValueError(f"isometry_steps restores signal propagation after pruning at init; pick a "
                         f"criterion. Received: isometry_steps={config.isometry_steps!r} with "
                         f"criterion={config.criterion!r}")
    if isinstance(config.rewind_step, bool) or not isinstance(config.rewind_step, int) or config.rewind_step < -1:
        raise ValueError(f"Expected rewind_step to be an int >= 0 (or -1: off). "
                         f"Received: rewind_step={config.rewind_step!r}")
    check_output_dir(config.output_dir, overwrite=config.overwrite)
    # epochs of eval_every steps; the last one is shorter when eval_every
    # does not divide train_steps (callbacks.StopAtStep ends it)
    steps_per_epoch = min(config.eval_every, config.train_steps)
    return Plan(config, info, math.ceil(config.train_steps / steps_per_epoch), steps_per_epoch)


def _check_rewind_from(config):
    """`rewind_from` goes with `criterion="imp"` (and only with it), names a finished run
    that kept a rewind point, and replaces `rewind_step`; the scope is global or layerwise."""
    if config.criterion != IMP:
        if config.rewind_from:
            raise ValueError(f"rewind_from starts a round of iterative magnitude pruning: set criterion="
                             f"'{IMP}'. Received: rewind_from={config.rewind_from!r} with "
                             f"criterion={config.criterion!r}")
        return
    if not config.rewind_from:
        raise ValueError(f"criterion='{IMP}' prunes the masks of a previous run: name its directory. "
                         f"Received: rewind_from={config.rewind_from!r}")
    if os.path.abspath(config.rewind_from) == os.path.abspath(config.output_dir):
        raise ValueError(f"A round writes a new run: rewind_from must name another directory than "
                         f"output_dir. Received: rewind_from={config.rewind_from!r}")
    if not isinstance(config.kappa, float):
        raise ValueError(f"criterion='{IMP}' takes kappa as the fraction of weights a round keeps (a float "
                         f"in (0, 1]). Received: kappa={config.kappa!r}")
    source = rewinding.source_sparsity(config.rewind_from)
    if 1.0 - config.kappa < source - 1e-9:  # rewinding.next_round counts it exactly
        raise ValueError(f"A round prunes further (masks only shrink): kappa must be at most the fraction "
                         f"the run in rewind_from kept ({1.0 - source:.6g}). Received: kappa={config.kappa!r}")
    if config.rewind_step != -1:
        raise ValueError(f"A criterion='{IMP}' run rewinds to the rewind point of the run it starts from "
                         f"(and keeps it for the next round). Received: rewind_step={config.rewind_step!r} "
                         f"with rewind_from={config.rewind_from!r}")
    if config.scope not in ("global", "layerwise"):
        raise ValueError(f"Magnitude pruning for criterion='{IMP}' is global or layerwise. "
                         f"Received: scope={config.scope!r}")


_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
SANITY_CHECKS = ("", "shuffle", "reinit", "invert")
DST_METHODS = ("", "set", "rigl")


def _during_training_callbacks(config):
    """The callbacks that change masks while training, built from `config` (their
    constructors check the values)."""
    out = []
    if config.gradual_pruning_final_sparsity:
        try:
            out.append(GradualPruning(
                config.gradual_pruning_final_sparsity, config.gradual_pruning_begin_step,
                config.gradual_pruning_end_step or config.train_steps,
                initial_sparsity=config.gradual_pruning_initial_sparsity,
                frequency=config.gradual_pruning_frequency, scope=config.scope))
        except ValueError as e:  # its argument names as this config's fields
            raise ValueError(re.sub(r"(?<![\w-])(final_sparsity|initial_sparsity|begin_step|end_step|frequency)=",
                                    r"gradual_pruning_\1=", str(e))) from None
    if config.dst not in DST_METHODS:
        raise ValueError(f"Expected dst to be one of {DST_METHODS}. Received: dst={config.dst!r}")
    if config.dst:
        end = config.dst_end_step or max(1, (3 * config.train_steps) // 4)
        try:
            out.append(SET(config.update_every, end, drop_fraction=config.drop_fraction, seed=config.seed)
                       if config.dst == "set" else
                       RigL(config.update_every, end, drop_fraction=config.drop_fraction))
        except ValueError as e:
            raise ValueError(str(e).replace("end_step=", "dst_end_step=")) from None
    return out


def as_flags(message):
    """Rewrites `field=` in a `prepare` error as `--field=` (for scripts)."""
    return re.sub(r"(?<![\w-])(" + "|".join(_FIELDS) + r")=", r"--\1=", message)


def check_output_dir(path, *, overwrite=False):
    """`run_dir.check`: a writable output directory that holds no finished run
    unless `overwrite`; creates nothing."""
    run_dir.check(path, overwrite=overwrite)


def worker_dir(output_dir, strategy):
    """Where this process writes: `output_dir` for the chief, else
    `output_dir/.workers/<task id>` (multi-worker)."""
    if distribute.is_chief(strategy):
        return output_dir
    return os.path.join(output_dir, ".workers", str(strategy.cluster_resolver.task_id))


def _initializer_kwargs(config):
    return {"kernel_initializer": config.kernel_initializer} if config.kernel_initializer else {}


def run(config, strategy=None):
    """Prunes at initialization, trains, evaluates and exports; returns the metrics.

    Args:
        config: a `TrainConfig`, or the `Plan` that `prepare(config)` returned
            (its checks are not repeated).
        strategy: defaults to `distribute.make_strategy(config.strategy, ...)`.

    Writes into `config.output_dir`: `metrics.json`, `logs/` (TensorBoard),
    `backup/` (while training; a rerun of the same command resumes from its
    last good backup), `checkpoints/best.keras` (best validation accuracy) and
    `saved_model/` (stripped). On multi-worker runs only the chief writes
    there (the others write their `metrics.json` in `.workers/<task id>/`).
    Holds `<output_dir>/.lock` while it runs (`run_dir.locked`): a
    second run on the same directory raises `run_dir.OutputDirInUse`. A
    finished run's directory is refused by `prepare` unless
    `config.overwrite`, which clears it first. If the loss turns NaN/Inf the
    run stops: `metrics["divergence"]` names the step and the weights that
    went non-finite, and the last good backup and best model are kept.
    """
    plan = config if isinstance(config, Plan) else prepare(config)
    config = plan.config
    wall_start = time.perf_counter()
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy, tpu=config.tpu,
                                            num_cpu_devices=config.num_cpu_devices or None)
    # before any data: tf.data's seeded shuffles also depend on the global seed
    keras.utils.set_random_seed(config.seed)
    out = worker_dir(config.output_dir, strategy)
    with run_dir.locked(out):
        return _run_locked(plan, strategy, out, wall_start)


def _run_locked(plan, strategy, out, wall_start):
    config = plan.config
    if config.overwrite:
        run_dir.clear(out)  # under the lock: start over, nothing of the old run left
    splits = data_lib.load_splits(config.dataset, config.batch_size, seed=config.seed,
                                  repeat_train=True, standardize=config.standardize,
                                  score_batches=config.score_batches)
    dense, model = _build(plan, strategy, splits.score_data)
    digest_at_prune = mask_digest(model)
    effective = _effective(model) if config.criterion != NO_PRUNING else None
    best_model, backup, divergence, steps = _fit(plan, strategy, model, splits, out, wall_start)
    if config.rewind_step >= 0 or config.criterion == IMP:  # the next IMP round prunes these
        rewinding.keep_final(model, os.path.join(out, "final.npz"))
    best, test_accuracy, servable = _evaluate(plan, strategy, model, best_model, divergence, splits)
    metrics = _metrics(plan, strategy, dense, model, best, best_model, backup, divergence, steps,
                       test_accuracy, digest_at_prune, wall_start)
    metrics["effective"] = effective
    _finish(strategy, out, best, metrics, servable=servable)
    return metrics


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _effective(model):
    """Effective sparsity of the pruned model at init (masks stay fixed): kept weights on
    an input-to-output path, dead units; None for a model without a layer graph."""
    try:
        report = effective_sparsity(model)
    except ValueError:
        return None
    return {"kept_weights": report.kept, "sparsity": report.sparsity,
            "sparsity_per_layer": {c.name: c.sparsity for c in report.layers},
            "dead_units": {d.name: {"constant": d.constant, "unused": d.unused, "dead": d.dead,
                                    "total": d.total} for d in report.dead_units},
            "taken_whole": [name for name, _ in report.whole]}


def _build(plan, strategy, score_data):
    """The dense model and the model trained: pruned at init (or the dense one) and
    compiled, under `strategy`."""
    config = plan.config
    with strategy.scope():
        dense = models_lib.get(config.model, plan.info.input_shape, plan.info.num_classes,
                               **_initializer_kwargs(config))
        if config.criterion == NO_PRUNING:
            # masks that change in training, or kept for a next IMP round, start dense
            model = wrap(dense) if _during_training_callbacks(config) or config.rewind_step >= 0 else dense
        elif config.criterion == IMP:
            model = rewinding.next_round(wrap(dense), config.rewind_from, 1.0 - config.kappa,
                                         scope=config.scope)
        else:
            model = prune(dense, score_data, kappa=config.kappa,
                          criterion=config.criterion, seed=config.seed, scope=config.scope,
                          min_kept_per_layer=config.min_kept_per_layer, num_batches=config.score_batches,
                          invert=config.sanity == "invert", include_biases=config.include_biases,
                          reinitialize=config.reinitialize,
                          isometry={"steps": config.isometry_steps} if config.isometry_steps else False)
        if config.sanity == "shuffle":  # prepare refused a sanity check without a mask
            model = sanity_lib.shuffle_within_layers(model, seed=config.seed)
        elif config.sanity == "reinit":
            model = sanity_lib.reinitialize(model, seed=config.seed)
        schedule = learning_rate_schedule(
            config.lr_schedule, config.learning_rate, train_steps=config.train_steps,
            decay_every=config.lr_decay_every, decay_factor=config.lr_decay_factor,
            end_factor=config.lr_end_factor)
        model.compile(make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                                     weight_decay=config.weight_decay),
                      _loss(), metrics=["accuracy"])
    return dense, model


def _fit(plan, strategy, model, splits, out, wall_start):
    """Trains for `train_steps` with the best-model, backup and divergence callbacks;
    returns those three and the optimizer's step count (read now: evaluating a
    model that has no best checkpoint recompiles it). The backups record the wall
    time since `wall_start` (a `time.perf_counter()` value) on top of earlier attempts'."""
    config = plan.config
    checkpoints = os.path.join(out, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    best_model = callbacks_lib.BestModel(os.path.join(checkpoints, "best.keras"))
    # each backup holds the best model as of its epoch: a resumed run (every worker of
    # a multi-worker job alike) goes on with the best model it had then
    backup = backup_lib.Backup(os.path.join(out, "backup"), best_model=best_model, started=wall_start)
    divergence = callbacks_lib.Divergence()
    callbacks = [
        divergence,  # first: once it fires, the backup and best model are left as they are
        callbacks_lib.SparsityLog(),
        best_model,  # the backup takes in the best model of its epoch
        backup,
        callbacks_lib.StopAtStep(config.train_steps),
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        callbacks_lib.Progress(config.train_steps),
    ]
    # masks change after the step's update, before the step is logged or backed up
    during = _during_training_callbacks(config)
    rewind_path = os.path.join(out, "rewind.npz")
    if config.rewind_step >= 0 and not os.path.exists(rewind_path):  # kept once, also across a resume
        during.append(RewindPoint(config.rewind_step, path=rewind_path))
    if config.criterion == IMP and not os.path.exists(rewind_path):  # the next round rewinds there too
        shutil.copyfile(os.path.join(config.rewind_from, "rewind.npz"), rewind_path + ".tmp")
        os.replace(rewind_path + ".tmp", rewind_path)
    callbacks[1:1] = during
    logging.info("training %s (%s, kappa=%s) on %s for %d steps under %s (%d replicas)",
                 config.model, config.criterion, config.kappa, config.dataset, config.train_steps,
                 config.strategy, strategy.num_replicas_in_sync)
    with strategy.scope(), _keras_compat.multi_worker_fit(model, strategy, splits.score_batch):
        model.fit(splits.train, validation_data=splits.validation, epochs=plan.epochs,
                  steps_per_epoch=plan.steps_per_epoch, shuffle=False, callbacks=callbacks, verbose=0)
    return best_model, backup, divergence, int(model.optimizer.iterations.numpy())


def _evaluate(plan, strategy, model, best_model, divergence, splits):
    """The best-validation model, its test accuracy, and whether it is servable (not
    for a run that diverged before its first validation: the accuracy is then NaN)."""
    servable = os.path.exists(best_model.path) or divergence.report is None
    with strategy.scope():
        best = keras.models.load_model(best_model.path) if os.path.exists(best_model.path) else model
        best.compile(loss=_loss(), metrics=["accuracy"])
        test_accuracy = float("nan")
        if servable:
            with _keras_compat.multi_worker_fit(best, strategy, splits.score_batch):
                _, test_accuracy = best.evaluate(splits.test, verbose=0)
    return best, float(test_accuracy), servable


def _metrics(plan, strategy, dense, model, best, best_model, backup, divergence, steps,
             test_accuracy, digest_at_prune, wall_start):
    """What `metrics.json` records."""
    config = plan.config
    best_info = best_model.best() or {"value": float("nan"), "step": 0}  # diverged before validating
    attempt = time.perf_counter() - wall_start
    report = sparsity(best) if config.criterion != NO_PRUNING else None
    return {
        "model": config.model, "dataset": config.dataset, "standardize": config.standardize,
        "criterion": config.criterion, "scope": config.scope,
        "min_kept_per_layer": config.min_kept_per_layer,
        "score_batches": config.score_batches,
        "isometry_steps": config.isometry_steps,
        "include_biases": config.include_biases, "reinitialize": config.reinitialize,
        "kappa": config.kappa if config.criterion != NO_PRUNING else 1.0,
        "dense_parameters": int(dense.count_params()),
        "prunable_weights": report.total.total if report else None,
        "kept_weights": report.kept if report else None,
        "sparsity": report.sparsity if report else 0.0,
        "sparsity_per_layer": {c.name: c.sparsity for c in report.layers} if report else {},
        "validation_error": 1.0 - best_info["value"],
        "best_step": best_info["step"],
        "test_error": 1.0 - test_accuracy,
        "steps": steps,
        "diverged": divergence.report is not None,
        # the step whose loss was not finite, and the weights that were not (model order)
        "divergence": divergence.report,
        # every attempt's (a resumed run's earlier ones to the backup resumed from)
        "wall_time_seconds": backup.elapsed_before + attempt,
        "wall_time_seconds_this_attempt": attempt,
        "resumed_after_epoch": backup.restored_epoch,
        "strategy": config.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "mask_digest_at_prune": digest_at_prune,
        "mask_digest_final": mask_digest(model),
        "gradual_pruning": {
            "final_sparsity": config.gradual_pruning_final_sparsity,
            "initial_sparsity": config.gradual_pruning_initial_sparsity,
            "begin_step": config.gradual_pruning_begin_step,
            "end_step": config.gradual_pruning_end_step or config.train_steps,
            "frequency": config.gradual_pruning_frequency} if config.gradual_pruning_final_sparsity else None,
        "dst": {"method": config.dst, "update_every": config.update_every,
                "end_step": config.dst_end_step or max(1, (3 * config.train_steps) // 4),
                "drop_fraction": config.drop_fraction} if config.dst else None,
        "rewind_step": config.rewind_step if config.rewind_step >= 0 else None,
        "sanity": config.sanity or None,
        "rewind_from": config.rewind_from or None,
        "final_sparsity": sparsity(model).sparsity if transform.masked_entries(model) else 0.0,
    }


def _finish(strategy, out, best, metrics, *, servable):
    """The chief exports the best model; every worker writes its metrics.json, then all
    leave together."""
    if distribute.is_chief(strategy) and servable:
        export(best, os.path.join(out, "saved_model"), overwrite=True)
    # every worker records what it ended with (a non-chief in its own .workers/<id>/)
    run_dir.write_text(os.path.join(out, run_dir.FINISHED), json.dumps(metrics, indent=2))
    # the last collective: every worker is done; then the chief leaves first (a worker
    # that exits while the chief still runs is reported "unhealthy" by its coordination
    # service ~10 s later: the others wait at exit for the chief's process to end)
    distribute.agree_min(strategy, 0)
    distribute.leave_after_the_chief(strategy)
    logging.info("done: test error %.4f, validation error %.4f, sparsity %.4f, %d steps",
                 metrics["test_error"], metrics["validation_error"], metrics["sparsity"],
                 metrics["steps"])
