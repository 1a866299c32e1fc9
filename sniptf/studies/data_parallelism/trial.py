"""One trial: the study grid, its spec, and a trial trained and evaluated to its goal."""

import dataclasses
import gc
import time

import keras
import numpy as np
import tensorflow as tf

from sniptf.studies.data_parallelism.search import sobol_points
from sniptf.studies.data_parallelism.workloads import Workload
from sniptf.studies.data_parallelism.workloads import build_model
from sniptf.studies.data_parallelism.workloads import get_workload
from sniptf.studies.data_parallelism.workloads import optimizer as optimizer_for
from sniptf.studies.data_parallelism.workloads import train_batches
from sniptf.studies.data_parallelism.workloads import workload_data


def eval_steps(max_steps, every, growth=1.0):
    """Evaluation steps up to `max_steps`: every `every` steps, or geometric.

    With `growth > 1` the next evaluation is at max(s + every, round(s * growth))
    (about (growth - 1) resolution on K); the last is always `max_steps`.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"Expected every to be an int >= 1. Received: eval_every={every!r}")
    if not growth >= 1.0:
        raise ValueError(f"Expected growth >= 1. Received: eval_growth={growth!r}")
    steps, s = [], every
    while s < max_steps:
        steps.append(s)
        s = max(s + every, int(round(s * growth))) if growth > 1 else s + every
    steps.append(int(max_steps))
    return steps


def steps_to_result(trace, goal_error):
    """The first evaluated step whose error is <= `goal_error`, or None.

    Args:
        trace: `[(step, error), ...]` in step order (errors may be NaN).
    """
    for step, error in trace:
        if error is not None and np.isfinite(error) and error <= goal_error:
            return int(step)
    return None


def study_name(sparsity, batch_size):
    """The name of the Optuna study of one (sparsity, batch size) point."""
    return f"sparsity={sparsity:g},batch_size={batch_size}"


def make_spec(workload, *, sparsities, batch_sizes, trials, incumbent_cutoff=False, goal_errors=None,
              **overrides):
    """The JSON spec of a study grid: the workload (with `overrides` of its fields),
    the grid and the trial count. `goal_errors` (a list) replaces the workload's
    `goal_error`: trials stop at the strictest, and every point and fit is reported
    for each goal."""
    workload = get_workload(workload) if isinstance(workload, str) else workload
    if goal_errors is not None:
        goals = [float(g) for g in goal_errors]
        if not goals or not all(0.0 <= g < 1.0 for g in goals):  # NaN fails too
            raise ValueError(f"Expected goal_errors in [0, 1) (validation error rates). "
                             f"Received: goal_errors={list(goal_errors)}")
        overrides = dict(overrides, goal_error=min(goals))
    if overrides:
        workload = dataclasses.replace(workload, **overrides)
    sparsities = [float(s) for s in sparsities]
    batch_sizes = [int(b) for b in batch_sizes]
    for s in sparsities:
        if not 0.0 <= s < 1.0:
            raise ValueError(f"Expected sparsities in [0, 1). Received: sparsities={sparsities}")
    for b in batch_sizes:
        if b < 1:
            raise ValueError(f"Expected batch sizes >= 1. Received: batch_sizes={batch_sizes}")
    if not sparsities or not batch_sizes:
        raise ValueError(f"Expected at least one sparsity and batch size. Received: "
                         f"sparsities={sparsities}, batch_sizes={batch_sizes}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"Expected trials to be an int >= 1. Received: trials={trials!r}")
    if not 0.0 <= workload.goal_error < 1.0:  # NaN fails too; 0 = never reached
        raise ValueError(f"Expected goal_error in [0, 1) (a validation error rate). "
                         f"Received: goal_error={workload.goal_error!r}")
    eval_steps(workload.max_steps, workload.eval_every, workload.eval_growth)  # checks both
    return {"workload": workload.to_dict(), "sparsities": sparsities, "batch_sizes": batch_sizes,
            "trials": trials, "incumbent_cutoff": bool(incumbent_cutoff),
            "goal_errors": sorted(set(goals)) if goal_errors is not None else [workload.goal_error],
            "studies": [study_name(s, b) for s in sparsities for b in batch_sizes]}


def grid(spec):
    """`{study name: (sparsity, batch size)}` of a spec's grid."""
    return {study_name(s, b): (s, b) for s in spec["sparsities"] for b in spec["batch_sizes"]}


def prepare(engine, spec):
    """Creates the grid's studies and enqueues the Sobol points once (see `TrialEngine.prepare`)."""
    workload = Workload.from_dict(spec["workload"])
    points = sobol_points(list(workload.space), spec["trials"])
    return engine.prepare(spec, {name: points for name in spec["studies"]})


def run_trial(workload, sparsity, batch_size, params, index, *, cutoff=None, data=None):
    """Trains one trial and returns its result.

    Args:
        workload: a `Workload`.
        params: the searched metaparameters.
        index: the trial's Sobol index: its init seed (and mask tie-break seed).
        cutoff: stop once the step passes this (the study's best K so far: a
            trial beyond it cannot lower K*); None runs to the budget.
        data: `(train, validation)` array pairs, to share between trials.

    Returns:
        dict: `status` (reached / not_reached / diverged), `value` (steps to
        result or None), `steps` (the same), `trace` ([[step, error], ...]),
        `cut_off`, `budget`, `train_seconds`.
    """
    train, validation = data or workload_data(workload)
    model = build_model(workload, sparsity, index, train)
    budget = workload.budget(batch_size)
    optimizer = optimizer_for(workload, params)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    iterator = iter(train_batches(workload, train, batch_size))
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train_steps(n):
        loss = tf.constant(0.0)
        for _ in tf.range(n):
            x, y = next(iterator)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    vx, vy = validation

    @tf.function
    def val_error():
        logits = model(vx, training=False)
        wrong = tf.not_equal(tf.argmax(logits, -1), vy)
        return tf.reduce_mean(tf.cast(wrong, tf.float32)), tf.reduce_all(tf.math.is_finite(logits))

    start, step, trace = time.perf_counter(), 0, []
    status, steps, cut_off = "not_reached", None, False
    for target in eval_steps(budget, workload.eval_every, workload.eval_growth):
        if cutoff is not None and step >= cutoff:
            cut_off = True
            break
        loss = float(train_steps(tf.constant(target - step)))
        step = target
        error, finite = val_error()
        if not (np.isfinite(loss) and bool(finite)):
            trace.append([step, None])
            status = "diverged"
            break
        trace.append([step, float(error)])
        steps = steps_to_result(trace[-1:], workload.goal_error)
        if steps is not None:
            status = "reached"
            break
    # the trial's functions (and the iterator they hold) go now, not at the process's exit
    del train_steps, val_error
    gc.collect()
    return {"status": status, "value": steps, "steps": steps, "trace": trace, "cut_off": cut_off,
            "budget": budget, "train_seconds": time.perf_counter() - start}


def work(engine, *, max_trials=None, log=print):
    """Runs WAITING trials of a prepared grid in this process until none is left."""
    spec = engine.spec()
    if spec is None:
        raise ValueError("The storage has no prepared spec; run prepare first.")
    workload = Workload.from_dict(spec["workload"])
    points = grid(spec)
    data = workload_data(workload)

    def run(name, params, index, best):
        sparsity, batch_size = points[name]
        cutoff = best if spec["incumbent_cutoff"] else None
        result = run_trial(workload, sparsity, batch_size, params, index, cutoff=cutoff, data=data)
        keras.backend.clear_session()
        log(f"  -> {result['status']} steps={result['steps']} ({result['train_seconds']:.1f} s)")
        return result

    return engine.work(run, max_trials=max_trials, log=log)
