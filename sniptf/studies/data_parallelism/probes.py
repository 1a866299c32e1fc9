"""Probes along training: the local Lipschitz constant and the gradient noise scale."""

import json
import os

import keras
import numpy as np

from sniptf import run_dir
from sniptf import data_parallelism_probes
from sniptf.studies.data_parallelism.workloads import Workload
from sniptf.studies.data_parallelism.workloads import _arrays
from sniptf.studies.data_parallelism.workloads import build_model
from sniptf.studies.data_parallelism.workloads import optimizer as optimizer_for
from sniptf.studies.data_parallelism.workloads import train_batches


PROBE_LEARNING_RATE = 0.1  # the authors' default --learning_rate, for every sparsity
NOISE_MICROBATCH = 10  # examples per gradient in a B_simple measurement


def probe(workload, sparsity, batch_size, params, *, steps, every, probe_examples=0,
          microbatch=NOISE_MICROBATCH, seed=0, noise_every=None, log=print):
    """Trains one configuration with `model.fit`, measuring the local Lipschitz
    constant (`data_parallelism_probes.LipschitzProbe`, as the authors: the update into step
    k·every, first at step `every`, never at initialization) and B_simple (at
    initialization and every `noise_every` steps: default `every`, 0 for at
    initialization only — each measurement takes a gradient per microbatch of the
    full batch, the probe's largest cost).

    The "full batch" of both is the whole training split (`probe_examples=0`, the
    authors'), or the first `probe_examples` of a fixed permutation of it. The
    training stream is the trials' (`train_batches`: a function of the workload's
    `data_seed` alone); `seed` is the init seed.

    Returns:
        `{"lipschitz": [[step, L], ...], "noise_scale": [[step, b_simple], ...]}`.
    """
    noise_every = every if noise_every is None else noise_every
    if isinstance(noise_every, bool) or not isinstance(noise_every, int) or noise_every < 0:
        raise ValueError(f"Expected noise_every to be an int >= 0 (0: at initialization only). "
                         f"Received: noise_every={noise_every!r}")
    if isinstance(probe_examples, bool) or not isinstance(probe_examples, int) or probe_examples < 0:
        raise ValueError(f"Expected probe_examples to be an int >= 0 (0: the whole training split). "
                         f"Received: probe_examples={probe_examples!r}")
    train = _arrays(workload, "train")
    model = build_model(workload, sparsity, seed, train)
    sample = train
    if probe_examples:
        pick = np.random.RandomState(workload.data_seed).permutation(len(train[1]))[:probe_examples]
        sample = (train[0][pick], train[1][pick])
    model.compile(optimizer_for(workload, params),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    noise = [[0, data_parallelism_probes.gradient_noise_scale(model, sample, microbatch=microbatch)["b_simple"]]]

    class Noise(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if noise_every and step % noise_every == 0:
                noise.append([step, data_parallelism_probes.gradient_noise_scale(
                    self.model, sample, microbatch=microbatch)["b_simple"]])

    lipschitz = data_parallelism_probes.LipschitzProbe(sample, every=every)
    model.fit(train_batches(workload, train, batch_size), steps_per_epoch=steps, epochs=1, verbose=0,
              shuffle=False,
              callbacks=[lipschitz, Noise()])
    log(f"  probe sparsity={sparsity:g} seed={seed}: L {[round(v, 2) for _, v in lipschitz.history]}")
    keras.backend.clear_session()
    return {"lipschitz": [[int(s), float(v)] for s, v in lipschitz.history], "noise_scale": noise}


def probe_params(point, learning_rate):
    """The metaparameters a probe trains with: the point's best (`"best"`), or the one
    `learning_rate` for every sparsity (a controlled comparison: L depends on the lr)."""
    if learning_rate == "best":
        return point["best_params"] if point else None
    return {"learning_rate": float(learning_rate)}


def check_probe_learning_rate(value):
    """Validates a probe learning rate: a float > 0 or `"best"`; returns it."""
    if value == "best":
        return value
    try:
        lr = float(value)
    except (TypeError, ValueError):
        lr = float("nan")
    if isinstance(value, bool) or not lr > 0 or not np.isfinite(lr):
        raise ValueError(f"Expected probe_learning_rate to be a float > 0 or 'best'. "
                         f"Received: probe_learning_rate={value!r}")
    return lr


# Workload fields a probe does not read: the search and the trials' budget and goal.
# Every other field (model, dataset, optimizer, preprocessing, pruning, data order, and
# any field added later) is part of a probe's cache key.
_NOT_IN_PROBE = ("name", "space", "goal_error", "max_steps", "max_examples", "eval_every", "eval_growth")


def cache_key(workload, sparsity, batch_size, *, steps, every, params, seed, probe_examples,
              noise_every, microbatch=NOISE_MICROBATCH):
    """The probe cache's key: the workload's fields a probe reads (not its name: two
    names for one workload share probes) and the probe's own settings."""
    fields = {k: v for k, v in workload.to_dict().items() if k not in _NOT_IN_PROBE}
    return json.dumps({"workload": fields, "sparsity": sparsity, "batch_size": batch_size,
                       "steps": steps, "every": every, "params": params, "seed": seed,
                       "probe_examples": probe_examples, "noise_every": noise_every,
                       "microbatch": microbatch}, sort_keys=True)


def run_probes(spec, points, *, batch_size, steps, every, learning_rate=PROBE_LEARNING_RATE,
               seeds=(0, 1, 2), probe_examples=0, noise_every=None, cache_path=None, log=print):
    """`probe` per sparsity and init seed at `batch_size`, at one `learning_rate` for
    every sparsity (or each point's best metaparameters with `"best"`).

    Results are cached in `cache_path` (JSON, written whole after each probe, keyed
    by everything that changes L: `cache_key`), so a repeated or interrupted report
    does not retrain what it has.

    Returns:
        `(lipschitz, noise, summary)`: one `lipschitz` entry per (sparsity, seed)
        with its steps, values and mean; the noise-scale points; and per sparsity
        the mean ± std over seeds of the per-seed mean L, with `monotonic`: whether
        those means rise with sparsity.
    """
    learning_rate = check_probe_learning_rate(learning_rate)
    workload = Workload.from_dict(spec["workload"])
    goal = min(spec.get("goal_errors") or [workload.goal_error])
    cache = {}
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    lipschitz, noise = [], []
    for s in spec["sparsities"]:
        point = next((p for p in points if p["sparsity"] == s and p["batch_size"] == batch_size
                      and p.get("goal_error", goal) == goal), None)
        params = probe_params(point, learning_rate)
        if params is None:
            log(f"  no probe for sparsity {s:g}: batch size {batch_size} has no reached trial")
            continue
        for seed in seeds:
            key = cache_key(workload, s, batch_size, steps=steps, every=every, params=params,
                            seed=seed, probe_examples=probe_examples, noise_every=noise_every)
            if key not in cache:
                cache[key] = probe(workload, s, batch_size, params, steps=steps, every=every,
                                   probe_examples=probe_examples, seed=seed, noise_every=noise_every,
                                   log=log)
                if cache_path:
                    run_dir.write_text(cache_path, json.dumps(cache))
            values = [v for _, v in cache[key]["lipschitz"]]
            lipschitz.append({"sparsity": s, "batch_size": batch_size, "seed": seed,
                              "learning_rate": params["learning_rate"],
                              "steps": [st for st, _ in cache[key]["lipschitz"]], "values": values,
                              "mean": float(np.mean(values)) if values else None})
            noise += [{"sparsity": s, "seed": seed, "step": st, "b_simple": b}
                      for st, b in cache[key]["noise_scale"]]
    return lipschitz, noise, lipschitz_summary(lipschitz)


def lipschitz_summary(lipschitz):
    """Per sparsity: mean and std over seeds of each seed's mean L, and whether the
    means rise monotonically with sparsity (`monotonic`, the same in every row)."""
    rows = []
    for s in sorted({e["sparsity"] for e in lipschitz}):
        means = [e["mean"] for e in lipschitz if e["sparsity"] == s and e["mean"] is not None]
        rows.append({"sparsity": s, "seeds": len(means),
                     "learning_rate": next(e["learning_rate"] for e in lipschitz if e["sparsity"] == s),
                     "mean": float(np.mean(means)) if means else None,
                     "std": float(np.std(means)) if means else None})
    values = [r["mean"] for r in rows if r["mean"] is not None]
    rising = len(values) == len(rows) and all(b > a for a, b in zip(values, values[1:]))
    for r in rows:
        r["monotonic"] = rising
    return rows
