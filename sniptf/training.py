"""Training a pruned network with plain `model.fit` and a few sniptf callbacks.

`run(TrainConfig(...))` is what `sniptf-train` does: start from a mask
(`starting_mask`: pruned at initialization, dense, an IMP round), train for a
fixed number of steps under any strategy with the during-training method the
config names (`during_training.registry`), keep the best-validation model,
survive preemption (`sniptf.backup.Backup`), evaluate on test, write
`metrics.json`, TensorBoard logs and a SavedModel. The config and its checks
are `train_config`'s.
"""

import json
import os
import shutil
import time

import keras
from absl import logging

from sniptf import _keras_compat
from sniptf import backup as backup_lib
from sniptf import callbacks as callbacks_lib
from sniptf import data as data_lib
from sniptf import distribute
from sniptf import models as models_lib
from sniptf import run_dir
from sniptf import starting_mask
from sniptf import train_config
from sniptf import transform
from sniptf.during_training import registry
from sniptf.during_training import rewinding
from sniptf.exporters import export
from sniptf.optimizers import LR_SCHEDULES  # noqa: F401 (training's names, as before)
from sniptf.optimizers import OPTIMIZERS  # noqa: F401
from sniptf.optimizers import learning_rate_schedule
from sniptf.optimizers import make_optimizer
from sniptf.sparsity_report import mask_digest
from sniptf.sparsity_report import sparsity
from sniptf.starting_mask import IMP  # noqa: F401
from sniptf.starting_mask import NO_PRUNING
from sniptf.train_config import Plan  # noqa: F401
from sniptf.train_config import TrainConfig  # noqa: F401
from sniptf.train_config import prepare


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
    during = registry.callbacks_for(config)
    dense, model = _build(plan, strategy, splits.score_data, masks_change=bool(during))
    at_start = {"mask_digest_at_prune": mask_digest(model),
                "effective": starting_mask.effective(model) if config.criterion != NO_PRUNING else None}
    best_model, backup, divergence, steps = _fit(plan, strategy, model, splits, out, wall_start, during)
    if config.rewind_step >= 0 or config.criterion == starting_mask.IMP:  # the next IMP round prunes these
        rewinding.keep_final(model, os.path.join(out, "final.npz"))
    best, test_accuracy, servable = _evaluate(plan, strategy, model, best_model, divergence, splits)
    metrics = _metrics(plan, strategy, dense, model, best, best_model, backup, divergence, steps,
                       test_accuracy, at_start, during, wall_start)
    _finish(strategy, out, best, metrics, servable=servable)
    return metrics


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _build(plan, strategy, score_data, *, masks_change):
    """The dense model and the model trained (its starting mask: `starting_mask.start`),
    compiled, under `strategy`."""
    config = plan.config
    with strategy.scope():
        kwargs = {"kernel_initializer": config.kernel_initializer} if config.kernel_initializer else {}
        dense = models_lib.get(config.model, plan.info.input_shape, plan.info.num_classes, **kwargs)
        model = starting_mask.start(config, dense, score_data, masks_change=masks_change)
        schedule = learning_rate_schedule(
            config.lr_schedule, config.learning_rate, train_steps=config.train_steps,
            decay_every=config.lr_decay_every, decay_factor=config.lr_decay_factor,
            end_factor=config.lr_end_factor)
        model.compile(make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                                     weight_decay=config.weight_decay),
                      _loss(), metrics=["accuracy"])
    return dense, model


def _fit(plan, strategy, model, splits, out, wall_start, during):
    """Trains for `train_steps` with the best-model, backup and divergence callbacks and
    the `during`-training ones; returns the first three and the optimizer's step count
    (read now: evaluating a model that has no best checkpoint recompiles it). The
    backups record the wall time since `wall_start` (a `time.perf_counter()` value) on
    top of earlier attempts'."""
    config = plan.config
    checkpoints = os.path.join(out, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    best_model = callbacks_lib.BestModel(os.path.join(checkpoints, "best.keras"))
    # each backup holds the best model as of its epoch: a resumed run (every worker of
    # a multi-worker job alike) goes on with the best model it had then
    backup = backup_lib.Backup(os.path.join(out, "backup"), best_model=best_model, started=wall_start)
    divergence = callbacks_lib.Divergence()
    # masks change after the step's update, before the step is logged or backed up
    changing = list(during)
    rewind_path = os.path.join(out, "rewind.npz")
    if config.rewind_step >= 0 and not os.path.exists(rewind_path):  # kept once, also across a resume
        changing.append(rewinding.RewindPoint(config.rewind_step, path=rewind_path))
    if config.criterion == starting_mask.IMP and not os.path.exists(rewind_path):  # the next round too
        shutil.copyfile(os.path.join(config.rewind_from, "rewind.npz"), rewind_path + ".tmp")
        os.replace(rewind_path + ".tmp", rewind_path)
    callbacks = [
        divergence,  # first: once it fires, the backup and best model are left as they are
        *changing,
        callbacks_lib.SparsityLog(),
        best_model,  # the backup takes in the best model of its epoch
        backup,
        callbacks_lib.StopAtStep(config.train_steps),
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        callbacks_lib.Progress(config.train_steps),
    ]
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
             test_accuracy, at_start, during, wall_start):
    """What `metrics.json` records: the config as given (`train_config.record`), then
    what the run measured."""
    config = plan.config
    best_info = best_model.best() or {"value": float("nan"), "step": 0}  # diverged before validating
    attempt = time.perf_counter() - wall_start
    report = sparsity(best) if config.criterion != NO_PRUNING else None
    return {
        **train_config.record(config),
        "kappa": config.kappa if config.criterion != NO_PRUNING else 1.0,  # a dense run keeps every weight
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
        "replicas": strategy.num_replicas_in_sync,
        **at_start,
        "mask_digest_final": mask_digest(model),
        # the method's settings and every update it made in this attempt (survival, loss)
        "mask_updates": during[0].record() if during else None,
        "final_sparsity": sparsity(model).sparsity if transform.masked_entries(model) else 0.0,
        # masked weights whose final mask lost --structure's pattern (none, unless something broke it)
        "structure_broken": list(sparsity(model).broken) if transform.masked_entries(model) else [],
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
