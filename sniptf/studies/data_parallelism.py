"""Data parallelism x sparsity (Lee, Ajanthan, Torr, Jaggi, ICLR 2021).

Steps-to-result K*: for a workload (model, data, optimizer) and a goal error,
the fewest training steps that reach it, best over a quasi-random
metaparameter search, for each batch size B and sparsity level. The study:

* `sobol_points`: the search points (scipy's unscrambled Sobol sequence
  without its all-zero point, mapped through `log` / `reverse_log` / `linear`
  / `int` scales: the authors' sequence);
* `run_trial`: one trial (init seed = its index, the same data order for all
  trials, SNIP scored over one epoch of batches of 100 at that init),
  evaluated at `eval_steps`, `steps_to_result` from its trace;
* `fit_steps`: K* = c1/B + c2 by least squares in log space; B_crit = c1/c2
  (McCandlish et al.'s S = S_min(1 + B_crit/B));
* `probe`: the local Lipschitz constant along training and the gradient
  noise scale B_simple, per sparsity;
* trials run on `trial_engine.TrialEngine` (Optuna storage, many workers);
  `report` gathers results.json and the plots.
"""

import dataclasses
import json
import math
import os
import time

import numpy as np


SCALES = ("log", "reverse_log", "linear", "int")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched metaparameter: `low`..`high` on `scale`."""

    name: str
    low: float
    high: float
    scale: str = "log"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Unknown scale. Expected one of {SCALES}. Received: scale={self.scale!r}")
        if not self.low < self.high:
            raise ValueError(f"Expected low < high. Received: low={self.low!r}, high={self.high!r}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"A log scale needs low > 0. Received: low={self.low!r}")
        if self.scale == "reverse_log" and not self.high < 1:
            raise ValueError(f"A reverse_log scale needs high < 1 (log-uniform in 1 - value). "
                             f"Received: high={self.high!r}")

    def value(self, u):
        """Maps u in [0, 1) to the parameter's scale."""
        if self.scale == "log":
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        if self.scale == "reverse_log":
            a, b = math.log(1 - self.low), math.log(1 - self.high)
            return float(1 - math.exp(a + u * (b - a)))
        if self.scale == "int":
            return int(min(self.high, math.floor(self.low + u * (self.high - self.low + 1))))
        return float(self.low + u * (self.high - self.low))


def sobol_points(space, n):
    """The first `n` points of the search, as dicts `{name: value}`.

    The unscrambled Sobol sequence of `scipy.stats.qmc` in `len(space)`
    dimensions, skipping its first (all-zero) point, as the authors do: for a
    log-scaled lr in [1e-4, 1] the first values are 0.01, 0.1, 0.001,
    0.00316, 0.316, ...
    """
    from scipy.stats import qmc

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n to be an int >= 1. Received: n={n!r}")
    if not space:
        raise ValueError("Expected at least one Param. Received: space=[]")
    sampler = qmc.Sobol(d=len(space), scramble=False)
    sampler.fast_forward(1)
    # Sobol wants powers of two; take the first n of the next power
    units = sampler.random(2 ** math.ceil(math.log2(n)))[:n] if n > 1 else sampler.random(1)
    return [{p.name: p.value(float(u)) for p, u in zip(space, row)} for row in units]


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


def fit_steps(batch_sizes, k_star):
    """Fits K* = c1/B + c2 (c1, c2 > 0) by least squares on log K*.

    Returns:
        dict with `c1`, `c2`, `b_crit` = c1/c2 (where K* is twice its
        minimum, S_min = c2: McCandlish et al. 2018) and `r2_log`, the R² of
        log K* under the fit.

    Raises:
        ValueError: fewer than two points, or non-positive values.
    """
    from scipy.optimize import least_squares

    b = np.asarray(batch_sizes, np.float64)
    k = np.asarray(k_star, np.float64)
    if b.shape != k.shape or b.size < 2:
        raise ValueError(f"Need at least two (B, K*) pairs of equal length. Received: "
                         f"batch_sizes={list(batch_sizes)}, k_star={list(k_star)}")
    if np.any(b <= 0) or np.any(k <= 0) or not np.all(np.isfinite(k)):
        raise ValueError(f"Expected positive batch sizes and steps. Received: "
                         f"batch_sizes={list(batch_sizes)}, k_star={list(k_star)}")
    log_k = np.log(k)

    def residual(theta):
        return np.log(np.exp(theta[0]) / b + np.exp(theta[1])) - log_k

    starts = [(np.log(k[0] * b[0]), np.log(k[-1]))]
    design = np.stack([1 / b, np.ones_like(b)], axis=1)
    c1, c2 = np.linalg.lstsq(design, k, rcond=None)[0]
    if c1 > 0 and c2 > 0:
        starts.append((np.log(c1), np.log(c2)))
    best = min((least_squares(residual, s) for s in starts), key=lambda r: r.cost)
    c1, c2 = (float(v) for v in np.exp(best.x))
    total = float(np.sum((log_k - log_k.mean()) ** 2))
    r2 = 1.0 - float(np.sum(best.fun ** 2)) / total if total > 0 else 1.0
    return {"c1": c1, "c2": c2, "b_crit": c1 / c2, "r2_log": r2}


# --- workloads ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Workload:
    """A fixed model, data, optimizer and goal; the searched metaparameters.

    `optimizer`: `sgd` (constant lr unless `decay_steps` is searched),
    `momentum` or `nesterov`. Searched names: `learning_rate`, `momentum`,
    `decay_steps` (linear decay over that many steps) and `final_lr_factor`.
    """

    name: str
    model: str
    dataset: str
    optimizer: str
    space: tuple
    goal_error: float
    max_steps: int
    max_examples: int = 0  # > 0: per-B budget min(max_steps, max_examples / B)
    eval_every: int = 100
    eval_growth: float = 1.0
    data_seed: int = 0
    score_batch_size: int = 100
    train_examples: int = 0  # > 0: use only the first N training examples (tests)

    def budget(self, batch_size):
        """The step budget of a trial at `batch_size`."""
        steps = self.max_steps
        if self.max_examples:
            steps = min(steps, max(1, self.max_examples // batch_size))
        return int(steps)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["space"] = [dataclasses.asdict(p) for p in self.space]
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["space"] = tuple(Param(**p) for p in d["space"])
        return cls(**d)


WORKLOADS = {
    # the authors' MNIST workload: Simple-CNN, plain SGD, constant lr, goal 2%, 40k steps
    "mnist_simple_cnn": Workload("mnist_simple_cnn", "dps_simple_cnn", "mnist", "sgd",
                                 (Param("learning_rate", 1e-4, 1.0, "log"),), 0.02, 40_000),
    # the authors' CIFAR-10 workload: ResNet-8 (no BN), Nesterov, linear decay, goal 40%, 100k steps
    "cifar10_resnet8": Workload("cifar10_resnet8", "dps_resnet8", "cifar10", "nesterov",
                                (Param("learning_rate", 1e-4, 1.0, "log"),
                                 Param("momentum", 0.9, 0.9999, "reverse_log"),
                                 Param("decay_steps", 30_000, 60_000, "int"),
                                 Param("final_lr_factor", 1e-4, 0.1, "log")), 0.40, 100_000),
    # what fits 2 CPU cores: the MNIST workload on the bundled digits (see RESULTS)
    "mnist10k_simple_cnn": Workload("mnist10k_simple_cnn", "dps_simple_cnn", "mnist10k", "sgd",
                                    (Param("learning_rate", 1e-3, 1.0, "log"),), 0.04, 20_000,
                                    max_examples=2_000_000, eval_every=10, eval_growth=1.1),
    # seconds per trial: for tests of the engine and the scripts
    "tiny": Workload("tiny", "lenet_300_100", "mnist10k", "sgd",
                     (Param("learning_rate", 1e-2, 0.5, "log"),), 0.5, 60, eval_every=10,
                     train_examples=512),
}


def get_workload(name):
    """A registered `Workload` by name; raises ValueError listing them otherwise."""
    try:
        return WORKLOADS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown workload. Expected one of {sorted(WORKLOADS)}. "
                         f"Received: workload={name!r}") from None


def study_name(sparsity, batch_size):
    return f"sparsity={sparsity:g},batch_size={batch_size}"


def make_spec(workload, *, sparsities, batch_sizes, trials, incumbent_cutoff=False, **overrides):
    """The JSON spec of a study grid: the workload (with `overrides` of its fields),
    the grid and the trial count."""
    workload = get_workload(workload) if isinstance(workload, str) else workload
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
            "studies": [study_name(s, b) for s in sparsities for b in batch_sizes]}


def _grid(spec):
    return {study_name(s, b): (s, b) for s in spec["sparsities"] for b in spec["batch_sizes"]}


def prepare(engine, spec):
    """Creates the grid's studies and enqueues the Sobol points once (see `TrialEngine.prepare`)."""
    workload = Workload.from_dict(spec["workload"])
    points = sobol_points(list(workload.space), spec["trials"])
    return engine.prepare(spec, {name: points for name in spec["studies"]})


# --- one trial --------------------------------------------------------------------
def _arrays(workload, split):
    from sniptf import data as data_lib
    x, y = data_lib.load_numpy(workload.dataset, split)
    if split == "train" and workload.train_examples:
        x, y = x[:workload.train_examples], y[:workload.train_examples]
    return x.astype(np.float32), y.astype(np.int64)


def build_model(workload, sparsity, seed, train):
    """The workload's model at init seed `seed`, SNIP-pruned to `sparsity` over one
    epoch of batches of `score_batch_size` (dense for sparsity 0)."""
    import keras

    from sniptf import data as data_lib
    from sniptf import models as models_lib
    from sniptf.pruning import prune

    keras.utils.set_random_seed(seed)
    info = data_lib.info(workload.dataset)
    model = models_lib.get(workload.model, info.input_shape, info.num_classes)
    if sparsity > 0:
        x, y = train
        batches = math.ceil(len(y) / workload.score_batch_size)
        model = prune(model, (x, y), kappa=1.0 - sparsity, num_batches=batches,
                      batch_size=workload.score_batch_size, seed=seed)
    return model


def _optimizer(workload, params):
    import keras

    lr = params["learning_rate"]
    if "decay_steps" in params:
        lr = keras.optimizers.schedules.PolynomialDecay(
            lr, decay_steps=int(params["decay_steps"]),
            end_learning_rate=lr * params.get("final_lr_factor", 0.0), power=1.0)
    if workload.optimizer == "sgd":
        return keras.optimizers.SGD(lr)
    return keras.optimizers.SGD(lr, momentum=params.get("momentum", 0.9),
                                nesterov=workload.optimizer == "nesterov")


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
    import keras
    import tensorflow as tf

    train, validation = data or (_arrays(workload, "train"), _arrays(workload, "validation"))
    model = build_model(workload, sparsity, index, train)
    budget = workload.budget(batch_size)
    optimizer = _optimizer(workload, params)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[1]), seed=workload.data_seed,
                                                          reshuffle_each_iteration=True)
    iterator = iter(ds.repeat().batch(batch_size, drop_remainder=True).prefetch(4))
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
    return {"status": status, "value": steps, "steps": steps, "trace": trace, "cut_off": cut_off,
            "budget": budget, "train_seconds": time.perf_counter() - start}


def work(engine, *, max_trials=None, log=print):
    """Runs WAITING trials of a prepared grid in this process until none is left."""
    spec = engine.spec()
    if spec is None:
        raise ValueError("The storage has no prepared spec; run prepare first.")
    workload = Workload.from_dict(spec["workload"])
    grid = _grid(spec)
    data = (_arrays(workload, "train"), _arrays(workload, "validation"))

    def run(name, params, index, best):
        sparsity, batch_size = grid[name]
        cutoff = best if spec["incumbent_cutoff"] else None
        result = run_trial(workload, sparsity, batch_size, params, index, cutoff=cutoff, data=data)
        import keras
        keras.backend.clear_session()
        log(f"  -> {result['status']} steps={result['steps']} ({result['train_seconds']:.1f} s)")
        return result

    return engine.work(run, max_trials=max_trials, log=log)


# --- results ----------------------------------------------------------------------
def collect(spec, records):
    """The `trials`, `points` and `fits` parts of results.json from engine records."""
    grid = _grid(spec)
    trials = []
    for r in sorted(records, key=lambda r: (r["study"], r["index"])):
        sparsity, batch_size = grid[r["study"]]
        trials.append({"sparsity": sparsity, "batch_size": batch_size, "sobol_index": r["index"],
                       "params": r["params"], "status": r["status"], "steps": r.get("steps"),
                       "cut_off": bool(r.get("cut_off")), "trace": r.get("trace", []),
                       "seconds": r.get("seconds")})
    points = []
    for s in spec["sparsities"]:
        for b in spec["batch_sizes"]:
            mine = [t for t in trials if t["sparsity"] == s and t["batch_size"] == b]
            reached = [t for t in mine if t["status"] == "reached"]
            best = min(reached, key=lambda t: t["steps"]) if reached else None
            points.append({"sparsity": s, "batch_size": b, "k_star": best["steps"] if best else None,
                           "reached": len(reached),
                           "not_reached": sum(t["status"] == "not_reached" for t in mine),
                           "diverged": sum(t["status"] == "diverged" for t in mine),
                           "trials": len(mine), "best_params": best["params"] if best else None})
    fits = []
    for s in spec["sparsities"]:
        pts = [p for p in points if p["sparsity"] == s and p["k_star"]]
        if len(pts) >= 2:
            fits.append({"sparsity": s, **fit_steps([p["batch_size"] for p in pts],
                                                    [p["k_star"] for p in pts])})
    return trials, points, fits


def probe(workload, sparsity, batch_size, params, *, steps, every, probe_examples=2000,
          microbatch=10, seed=0, log=print):
    """Trains one configuration with `model.fit`, measuring the local Lipschitz
    constant (`smoothness.LipschitzProbe`) and B_simple every `every` steps.

    The "full batch" of both is a fixed sample of `probe_examples` training
    examples (the authors use the whole training set; stated in RESULTS).

    Returns:
        `{"lipschitz": [[step, L], ...], "noise_scale": [[step, b_simple], ...]}`.
    """
    import keras

    from sniptf import smoothness

    train = _arrays(workload, "train")
    model = build_model(workload, sparsity, seed, train)
    rng = np.random.default_rng(workload.data_seed)
    pick = rng.permutation(len(train[1]))[:probe_examples]
    sample = (train[0][pick], train[1][pick])
    model.compile(_optimizer(workload, params),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    noise = [[0, smoothness.gradient_noise_scale(model, sample, microbatch=microbatch)["b_simple"]]]

    class Noise(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % every == 0:
                noise.append([step, smoothness.gradient_noise_scale(
                    self.model, sample, microbatch=microbatch)["b_simple"]])

    lipschitz = smoothness.LipschitzProbe(sample, every=every)
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[1]), seed=workload.data_seed)
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[lipschitz, Noise()])
    log(f"  probe sparsity={sparsity:g}: L {[round(v, 2) for _, v in lipschitz.history]}")
    keras.backend.clear_session()
    return {"lipschitz": [[int(s), float(v)] for s, v in lipschitz.history], "noise_scale": noise}


def run_probes(spec, points, *, batch_size, steps, every, cache_path=None, log=print):
    """`probe` per sparsity at `batch_size` with that point's best metaparameters.

    Results are cached in `cache_path` (JSON, keyed by sparsity and the probe
    settings), so a repeated report does not retrain.
    """
    workload = Workload.from_dict(spec["workload"])
    cache = {}
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    lipschitz, noise = [], []
    for s in spec["sparsities"]:
        point = next((p for p in points if p["sparsity"] == s and p["batch_size"] == batch_size), None)
        if point is None or point["best_params"] is None:
            log(f"  no probe for sparsity {s:g}: batch size {batch_size} has no reached trial")
            continue
        key = json.dumps([s, batch_size, steps, every, point["best_params"]])
        if key not in cache:
            cache[key] = probe(workload, s, batch_size, point["best_params"], steps=steps, every=every,
                               log=log)
            if cache_path:
                with open(cache_path + ".tmp", "w") as f:
                    json.dump(cache, f)
                os.replace(cache_path + ".tmp", cache_path)
        values = [v for _, v in cache[key]["lipschitz"]]
        lipschitz.append({"sparsity": s, "batch_size": batch_size, "steps": [st for st, _ in cache[key]["lipschitz"]],
                          "values": values, "mean": float(np.mean(values)) if values else None})
        noise += [{"sparsity": s, "step": st, "b_simple": b} for st, b in cache[key]["noise_scale"]]
    return lipschitz, noise


def summary_markdown(results):
    """Tables for RESULTS: K* per point, the fits beside B_simple, mean L."""
    from sniptf.studies.common import markdown_table

    spec = results["workload"]
    sizes = spec["batch_sizes"]
    k_rows = []
    for s in spec["sparsities"]:
        cells = []
        for b in sizes:
            p = next(p for p in results["points"] if p["sparsity"] == s and p["batch_size"] == b)
            cells.append(f"{p['k_star']}" if p["k_star"] else f"— ({p['not_reached']}/{p['diverged']})")
        k_rows.append([f"{100 * s:g}%"] + cells)
    text = "K* (steps to the goal; — means no trial reached it):\n\n"
    text += markdown_table(["sparsity"] + [f"B={b}" for b in sizes], k_rows)
    init_noise = {n["sparsity"]: n["b_simple"] for n in results["noise_scale"] if n["step"] == 0}
    later = {}
    for n in results["noise_scale"]:
        if n["step"] > 0:
            later.setdefault(n["sparsity"], []).append(n["b_simple"])
    lips = {entry["sparsity"]: entry["mean"] for entry in results["lipschitz"]}
    fit_rows = []
    for f in results["fits"]:
        s = f["sparsity"]
        fit_rows.append([f"{100 * s:g}%", f"{f['c1']:.4g}", f"{f['c2']:.4g}", f"{f['b_crit']:.1f}",
                         f"{f['r2_log']:.3f}",
                         f"{init_noise[s]:.1f}" if s in init_noise else "—",
                         f"{np.median(later[s]):.1f}" if s in later else "—",
                         f"{lips[s]:.2f}" if lips.get(s) is not None else "—"])
    text += "\nFit K* = c1/B + c2 per sparsity, beside the gradient noise scale and smoothness:\n\n"
    text += markdown_table(["sparsity", "c1", "c2", "B_crit = c1/c2", "R² (log K)", "B_simple at init",
                            "B_simple in training (median)", "mean L"], fit_rows)
    return text


def report(engine, study_dir, *, probe_batch_size=None, probe_steps=1000, probe_every=100,
           plots=True, log=print):
    """Writes `<study_dir>/results.json` (the schema in the README), `summary.md` and the plots.

    Returns:
        The results dict.
    """
    spec = engine.spec()
    if spec is None:
        raise ValueError("The storage has no prepared spec; run prepare first.")
    trials, points, fits = collect(spec, engine.records())
    lipschitz, noise = [], []
    if probe_batch_size:
        lipschitz, noise = run_probes(spec, points, batch_size=probe_batch_size, steps=probe_steps,
                                      every=probe_every, cache_path=os.path.join(study_dir, "probes.json"),
                                      log=log)
    results = {"workload": {k: v for k, v in spec.items() if k != "studies"}, "trials": trials,
               "points": points, "fits": fits, "lipschitz": lipschitz, "noise_scale": noise,
               "counts": engine.counts()}
    os.makedirs(study_dir, exist_ok=True)
    path = os.path.join(study_dir, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    with open(os.path.join(study_dir, "summary.md"), "w") as f:
        f.write(summary_markdown(results))
    if plots:
        from sniptf.studies import plots as plots_lib
        plots_lib.data_parallelism(results, study_dir)
    return results
