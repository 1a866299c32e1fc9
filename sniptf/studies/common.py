"""What every study shares: one training loop, the sweep runner, the dense copy,
markdown tables."""

import contextlib
import json
import os
import signal
import threading
import time

import keras
import numpy as np

from sniptf import run_dir
from sniptf import training


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


def error_cell(row):
    """A table cell for a row of `summarize`'s kind: test error mean ± std in %, with
    how many of its seeds diverged (their NaN left out of the mean); "–" for none."""
    if not row:
        return "–"
    diverged = row.get("diverged", 0)
    if diverged == row["seeds"]:
        return f"diverged ({diverged} of {row['seeds']})"
    text = f"{row['test_error_mean']:.2f} ± {row['test_error_std']:.2f}"
    return text + (f" ({diverged} of {row['seeds']} diverged)" if diverged else "")


# Runs per worker process: a run in a long-lived process leaves ~10 MiB behind (traced
# functions, tf.data state; benchmarks/sweep_memory.py), so the sweep's process is
# replaced after this many runs (the cost: one TensorFlow import per 10 runs).
RUNS_PER_PROCESS = 10


def _start_worker(verbosity):
    from absl import logging as absl_logging
    absl_logging.set_verbosity(verbosity)
    with open("/proc/self/clear_refs", "w") as f:  # this process's own peak (VmHWM)
        f.write("5")


def _run_one(config):
    """One table run in a worker process: the worker's memory (MiB) and pid."""
    training.run(config)
    keras.backend.clear_session()
    with open("/proc/self/status") as f:
        status = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in f if l.startswith("Vm")}
    return status["VmRSS"], status["VmHWM"], os.getpid()


def run_here(config):
    """Runs `config` in this process unless its run directory holds a finished run
    (for studies whose runs need this process, e.g. a criterion registered here);
    returns its metrics."""
    path = os.path.join(config.output_dir, run_dir.FINISHED)
    if not os.path.exists(path):
        training.run(config)
        keras.backend.clear_session()
    with open(path) as f:
        return json.load(f)


class Terminated(SystemExit):
    """The sweep's process got SIGTERM (`kill <pid>`, a job scheduler's stop)."""


@contextlib.contextmanager
def _terminated_on_sigterm():
    """SIGTERM raises `Terminated` in the main thread while the sweep runs, so leaving
    the pool's `with` terminates its workers: without it the process dies at once and
    its workers go on training (orphans holding their run directories' locks).
    Each run resumes from its directory when the sweep is started again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_table(configs, log=print, *, runs_per_process=RUNS_PER_PROCESS, memory=None, processes=1):
    """Runs every config whose metrics.json is missing, in `processes` worker
    processes, each replaced every `runs_per_process` runs; returns all metrics.
    `memory`, if a list, gets `(output_dir, worker RSS MiB, worker peak MiB,
    worker pid)` per run."""
    return run_stages([configs], log, runs_per_process=runs_per_process, memory=memory,
                      processes=processes)[-1]


def run_stages(stages, log=print, *, runs_per_process=RUNS_PER_PROCESS, memory=None, processes=1):
    """`run_table` for runs that read earlier ones: each stage (a list of configs) starts
    once the one before has finished, on the same worker processes. Returns the
    metrics of each stage."""
    import multiprocessing

    from absl import logging as absl_logging
    pending = [[c for c in stage if not os.path.exists(os.path.join(c.output_dir, run_dir.FINISHED))]
               for stage in stages]
    total, done = sum(len(p) for p in pending), 0
    if total:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked TF state
        with _terminated_on_sigterm(), \
                context.Pool(processes, initializer=_start_worker, initargs=(absl_logging.get_verbosity(),),
                             maxtasksperchild=runs_per_process) as pool:
            for stage in pending:
                for config, used in zip(stage, pool.imap(_run_one, stage)):
                    done += 1
                    log(f"[{done}/{total}] {config.output_dir}: worker RSS {used[0]:.0f} MiB, "
                        f"peak {used[1]:.0f} MiB")
                    if memory is not None:
                        memory.append((config.output_dir, *used))
    results = []
    for stage in stages:
        results.append([])
        for config in stage:
            with open(os.path.join(config.output_dir, run_dir.FINISHED)) as f:
                results[-1].append(json.load(f))
    return results


def merge_records(path, records, keys):
    """Writes `records` (dicts) to the JSON list at `path`, keeping the entries already
    there that no new record replaces (same values of `keys`): an experiment run for some
    models or variants adds to its results file instead of overwriting the others'.
    Returns the merged list (the old entries first, in their order)."""
    old = []
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    new_keys = {tuple(r[k] for k in keys) for r in records}
    merged = [r for r in old if tuple(r.get(k) for k in keys) not in new_keys] + list(records)
    run_dir.write_text(path, json.dumps(merged, indent=1))
    return merged


def summarize(results):
    """Rows of mean ± std test error per (dataset, model, criterion, kappa)."""
    groups = {}
    for m in results:
        key = (m["dataset"], m["model"], m["criterion"], m["kappa"])
        groups.setdefault(key, []).append(m)
    rows = []
    for (dataset, model, criterion, kappa), ms in groups.items():
        errors = np.array([m["test_error"] for m in ms], dtype=np.float64) * 100
        # a run that diverged before its first validation has no model to test (NaN):
        # the mean and std are over the others, and `diverged` counts the ones that did
        finite = errors[np.isfinite(errors)]
        rows.append({"dataset": dataset, "model": model, "criterion": criterion, "kappa": kappa,
                     "sparsity": ms[0]["sparsity"], "seeds": len(ms),
                     "diverged": sum(bool(m.get("diverged")) for m in ms),
                     "test_error_mean": float(finite.mean()) if finite.size else float("nan"),
                     "test_error_std": float(finite.std()) if finite.size else float("nan"),
                     "sparsity_per_layer": ms[0]["sparsity_per_layer"],
                     "wall_time_seconds": float(sum(m["wall_time_seconds"] for m in ms))})
    return rows


def checkpoint_error(run, data):
    """Error of the best-validation checkpoint in run directory `run` on `data`."""
    model = keras.models.load_model(os.path.join(run, "checkpoints", "best.keras"))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _, accuracy = model.evaluate(data, verbose=0)
    keras.backend.clear_session()
    return 1.0 - float(accuracy)
