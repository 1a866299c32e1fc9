"""Lottery-ticket rewinding (Frankle & Carbin, 2019; Frankle et al., 2020).

`RewindPoint(step)` is a callback that keeps a wrapped model's weights as they
are after `step` optimizer steps (step 0: before the first); `rewind(model,
checkpoint)` returns a copy of `model` with its current masks on those weights.
Iterative magnitude pruning (train, prune a fraction of the kept weights by
magnitude, rewind, repeat) is `sniptf.studies.imp.run` in one process; across
processes, one round per training run: a run keeps its final masks and weights
(`keep_final`) and the next starts from them (`next_round`: `sniptf-train
--criterion=imp --rewind_from=<previous run> --kappa=...`).
"""

import json
import os

import keras
import numpy as np

from sniptf import magnitude
from sniptf import run_dir
from sniptf import settings
from sniptf import transform
from sniptf.during_training.base import MaskUpdater


def _state(model):
    """Every weight of the model but its masks, by variable path."""
    masks = {id(e.mask) for e in transform.masked_entries(model)}
    return {w.path: np.array(w.numpy()) for w in model.weights if id(w) not in masks}


class RewindPoint(MaskUpdater):
    """Keeps the weights of a wrapped model after `step` optimizer steps.

    Args:
        step: the rewind step (0: the weights training starts from).
        path: also write them there (`.npz`, atomically) for a later process.

    After `fit` has passed `step`, `weights` holds `{variable path: array}`;
    `sniptf.rewind(model, checkpoint)` takes the callback, that dict or the file.
    A `fit` that starts past `step` (resumed) keeps the weights of its first
    step if nothing was kept yet. It changes no mask.
    """

    def __init__(self, step, path=None):
        super().__init__()
        self.step = settings.check_int("step", step)
        self.path = None if path is None else os.fspath(path)
        self.weights = None

    def is_update_step(self, step):
        return step == self.step

    def latest_due(self, after, upto):
        return upto if self.weights is None and upto >= self.step else None

    def begin(self, step):
        if self.weights is None and step == self.step:
            self.update(step)

    def update(self, step, logs=None):
        self.weights = _state(self.model)
        if self.path:
            run_dir.write_npz(self.path, self.weights)

    def settings_record(self):
        return {"step": self.step, "path": self.path}


def _weights_of(checkpoint, model):
    """`{path: array}` (in the order kept) of a rewind point for the wrapped `model`."""
    if isinstance(checkpoint, RewindPoint):
        if checkpoint.weights is None:
            raise ValueError(f"The RewindPoint has kept nothing yet: training has not reached step "
                             f"{checkpoint.step}. Received: a RewindPoint at step {checkpoint.step}")
        return checkpoint.weights
    if isinstance(checkpoint, dict):
        return checkpoint
    if isinstance(checkpoint, keras.Model):
        return _state(checkpoint)
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        if not os.path.exists(path):
            raise ValueError(f"No rewind file at {path!r}. Received: checkpoint={checkpoint!r}")
        if path.endswith(".keras"):
            return _state(keras.models.load_model(path, compile=False))
        if path.endswith(".weights.h5"):
            copy, _ = transform.copy_wrapped(model)
            try:
                copy.load_weights(path)
            except ValueError as e:  # Keras names the layer that differs
                raise ValueError(f"{path!r} holds the weights of another model than the wrapped "
                                 f"'{model.name}' ({e}); for the dense model's weights pass the dense "
                                 f"model itself. Received: checkpoint={checkpoint!r}") from e
            return _state(copy)
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    raise TypeError(f"Expected a RewindPoint, a dict of weights, a keras.Model, or an .npz, .keras or "
                    f".weights.h5 path. Received: checkpoint={checkpoint!r}")


def _matched(variables, weights, what):
    """The arrays of `weights` (`{path: array}`, in the order kept) for `variables`:
    by variable path where every path is there, else by position (the same model
    built in another process or reloaded from `.keras` may name its variables
    differently; its weights come in the same order with the same shapes).

    Raises:
        ValueError: `what` (a phrase naming the source) does not fit.
    """
    if all(v.path in weights for v in variables):
        values = [weights[v.path] for v in variables]
    else:
        values = list(weights.values())
    wrong = [v.path for v, a in zip(variables, values) if tuple(np.shape(a)) != tuple(v.shape)]
    if len(values) != len(variables) or wrong:
        missing = [v.path for v in variables if v.path not in weights]
        raise ValueError(f"{what}: {len(variables)} weights wanted by variable path (missing "
                         f"{missing[:5]}) or in order (of another shape {wrong[:5]}). "
                         f"Received: {len(weights)} weights")
    return values


def rewind(model, checkpoint):
    """A copy of the wrapped `model` with its current masks on the weights `checkpoint` kept.

    Every weight but the masks (kernels, biases, batch-norm statistics) is set
    to its value at the rewind step, then the pruned ones to 0. The copy is
    compiled like `model` (with a fresh optimizer), the input is not modified.

    Args:
        model: a wrapped model (sniptf.wrap / sniptf.prune), e.g. after training
            and pruning.
        checkpoint: a `RewindPoint` that has kept its weights, its `weights` dict or
            the `.npz` it wrote; or the model at the rewind step: a
            `keras.Model` (wrapped, or the dense model before `prune`), a
            `.keras` file or a `.weights.h5` file of `model` (e.g. from
            `keras.callbacks.ModelCheckpoint`). Weights are matched by variable
            path, or by position where the paths differ (a model built in
            another process or reloaded), the masks left out.

    Raises:
        ValueError: weights missing from `checkpoint` or of another shape.
        TypeError: a `checkpoint` of none of these kinds.
    """
    weights = _weights_of(checkpoint, model)
    copy, pairs = transform.copy_wrapped(model)
    masks = {id(e.mask) for e in transform.masked_entries(copy)}
    variables = [w for w in copy.weights if id(w) not in masks]
    values = _matched(variables, weights, f"The rewind weights do not fit model '{model.name}'")
    for w, value in zip(variables, values):
        w.assign(value)
    transform.apply_masks([c for _, c in pairs], {c.key: e.mask.numpy() for e, c in pairs})
    return copy


def keep_final(model, path):
    """Writes every weight of the wrapped `model`, masks included, to `path` (`.npz`,
    atomically): what the next round of iterative magnitude pruning starts from."""
    run_dir.write_npz(os.fspath(path), {w.path: np.array(w.numpy()) for w in model.weights})


def check_round_source(source_dir):
    """The one check that `source_dir` can start an IMP round: a finished run that kept
    its final state and a rewind point (`final.npz`, `rewind.npz`)."""
    for name in ("final.npz", "rewind.npz"):
        if not os.path.exists(os.path.join(source_dir, name)):
            raise ValueError(f"No {name} in {source_dir!r}: rewind_from takes a finished run that kept a "
                             f"rewind point (rewind_step >= 0, or itself a criterion='imp' run). "
                             f"Received: rewind_from={source_dir!r}")


def source_sparsity(source_dir):
    """The sparsity the finished run in `source_dir` ended at (its metrics.json's
    `final_sparsity`): the least an IMP round from it can prune to."""
    check_round_source(source_dir)
    try:
        with open(os.path.join(source_dir, run_dir.FINISHED)) as f:
            return float(json.load(f)["final_sparsity"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"The run in {source_dir!r} has no readable final_sparsity in its "
                         f"{run_dir.FINISHED} ({e}): rewind_from takes a finished sniptf-train run. "
                         f"Received: rewind_from={source_dir!r}") from e


def next_round(model, source_dir, sparsity, *, scope="global"):
    """The start of an iterative-magnitude-pruning round on a freshly built wrapped
    `model`: the masks and weights the run in `source_dir` ended with
    (`final.npz`), pruned by magnitude among its kept weights to exactly
    `sparsity` (`magnitude.prune_to`), the kept weights rewound to that run's
    `rewind.npz`. Returns the new model (`rewind`'s copy).

    Raises:
        ValueError: files missing, weights that do not fit, `sparsity` below
            the source's (masks only shrink), or a `scope` other than "global"
            and "layerwise"; `model` is left as it was.
    """
    magnitude.check_scope(scope)
    source_dir = os.fspath(source_dir)
    check_round_source(source_dir)
    final_path, rewind_path = (os.path.join(source_dir, n) for n in ("final.npz", "rewind.npz"))
    with np.load(final_path) as f:
        final = {k: f[k] for k in f.files}
    values = _matched(model.weights, final, f"The run in {source_dir!r} trained another model than "
                                            f"'{model.name}'")
    # every check before `model` changes
    with np.load(rewind_path) as f:
        rewind_weights = {k: f[k] for k in f.files}
    mask_ids = [id(e.mask) for e in transform.masked_entries(model)]
    _matched([w for w in model.weights if id(w) not in mask_ids], rewind_weights,
             f"The rewind weights in {source_dir!r} do not fit model '{model.name}'")
    by_variable = {id(w): v for w, v in zip(model.weights, values)}
    masks = [by_variable[i] for i in mask_ids]
    total = sum(int(m.size) for m in masks)
    source = 1.0 - sum(int(np.count_nonzero(m)) for m in masks) / total
    if round(sparsity * total) < round(source * total):
        raise ValueError(f"Expected a sparsity at least the source run's ({source:.6g}): masks only shrink. "
                         f"Received: sparsity={sparsity!r} from rewind_from={source_dir!r}")
    for w, value in zip(model.weights, values):
        w.assign(value)
    magnitude.prune_to(model, sparsity, scope=scope)
    return rewind(model, rewind_weights)
