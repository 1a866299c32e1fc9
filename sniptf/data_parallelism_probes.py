"""Loss-landscape diagnostics along training: local Lipschitz smoothness and gradient noise.

* `local_lipschitz`: the data-parallelism-and-sparsity authors' probe (Lee et al.,
  ICLR 2021): with w the weights before an update, Δw the update and ∇L the
  full-batch gradient, max over γ of ‖∇L(w + γΔw) − ∇L(w)‖ / ‖γΔw‖.
* `LipschitzProbe`: that probe as a Keras callback (every N steps; CSV and
  TensorBoard).
* `gradient_noise_scale`: B_simple = tr(Σ) / ‖G‖² (McCandlish et al. 2018), the
  batch size beyond which data parallelism is predicted to stop paying.
"""

import csv
import os

import keras
import numpy as np
import tensorflow as tf

from sniptf import losses

GAMMAS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _norm(arrays):
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def local_lipschitz(gradient_fn, weights, delta, gradient=None, gammas=GAMMAS):
    """max over γ of ‖∇L(w + γΔ) − ∇L(w)‖ / ‖γΔ‖.

    Args:
        gradient_fn: `fn(list of arrays) -> list of arrays`, the full-batch
            gradient at those weights.
        weights: w, a list of arrays.
        delta: Δw, a list of arrays shaped like `weights` (the update).
        gradient: ∇L(w) if already known (saves one call).
        gammas: the fractions of the step probed.

    Returns:
        `(max, per_gamma)`: the estimate and the ratio at each γ.

    Raises:
        ValueError: Δw is zero (no update was made) or `gammas` is empty.
    """
    if not gammas:
        raise ValueError(f"Expected at least one gamma. Received: gammas={gammas!r}")
    size = _norm(delta)
    if size == 0.0:
        raise ValueError("The update Δw is zero, so the local Lipschitz constant is undefined. "
                         "Received: delta with norm 0")
    base = gradient if gradient is not None else gradient_fn(weights)
    ratios = []
    for g in gammas:
        moved = gradient_fn([w + g * d for w, d in zip(weights, delta)])
        ratios.append(_norm([a - b for a, b in zip(moved, base)]) / (g * size))
    return max(ratios), ratios


class FullBatchGradient:
    """The mean-loss gradient of `model`'s trainable weights over a whole dataset.

    Args:
        model: a built Keras model (MaskedLayers included: pruned entries get 0).
        data: an `(x, y)` pair of arrays: the "full batch".
        loss: a loss for `losses.resolve_loss` (default: the compiled loss, else
            sparse categorical cross-entropy).
        chunk: examples per forward pass (memory only; the result is the mean
            over all examples).
    """

    def __init__(self, model, data, loss=None, chunk=1000):
        self.model = model
        self.variables = list(model.trainable_variables)
        x, y = data
        n = len(y)
        if n == 0:
            raise ValueError("The full batch is empty. Received: data with 0 examples")
        self.parts = [(x[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)]
        self.n = n
        loss_fn = losses.resolve_loss(model, loss)

        @tf.function(reduce_retracing=True)
        def summed(x, y):
            with tf.GradientTape() as tape:
                total, _ = losses.summed_loss(loss_fn, y, model(x, training=False))
            return tape.gradient(total, self.variables, unconnected_gradients="zero")

        self._summed = summed

    def current(self):
        """The gradient at the model's current weights (list of numpy arrays)."""
        total = None
        for x, y in self.parts:
            g = self._summed(x, y)
            total = g if total is None else [a + b for a, b in zip(total, g)]
        return [t.numpy() / self.n for t in total]

    def mean_of(self, x, y):
        """The mean-loss gradient over the examples `(x, y)` (one pass) at the current weights."""
        return [g.numpy() / len(y) for g in self._summed(x, y)]

    def at(self, weights):
        """The gradient at `weights`; the model's weights are restored afterwards."""
        saved = [v.numpy() for v in self.variables]
        try:
            for v, w in zip(self.variables, weights):
                v.assign(w)
            return self.current()
        finally:
            for v, w in zip(self.variables, saved):
                v.assign(w)


class LipschitzProbe(keras.callbacks.Callback):
    """Measures the local Lipschitz constant of the loss every `every` steps.

    As the authors' probe (`check.py`, called at step ≡ every − 1 and ≡ 0 mod
    every): before the update that makes step k·every it stores w and the
    full-batch gradient, and after that update it records `local_lipschitz`
    along the step Δw the optimizer took, as step k·every. The first value is
    therefore at step `every`, never at initialization. Values go to `self.history`
    (`[(step, L)]`), to `csv_path` (appended: step, lipschitz) and to
    TensorBoard under `log_dir` (scalar `lipschitz`).

    Args:
        data: the `(x, y)` full batch (e.g. the training set or a fixed sample).
        every: probe period in steps (the authors: 1,000).
        loss: see `FullBatchGradient`.
        gammas: the fractions of the step probed.
    """

    def __init__(self, data, every=1000, *, loss=None, gammas=GAMMAS, csv_path=None, log_dir=None):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Expected every to be an int >= 1. Received: every={every!r}")
        self.data, self.every, self.loss, self.gammas = data, every, loss, tuple(gammas)
        self.csv_path, self.log_dir = csv_path, log_dir
        self.history = []
        self._before = None
        self._gradient = None
        self._writer = None

    def on_train_begin(self, logs=None):
        self._gradient = FullBatchGradient(self.model, self.data, self.loss)
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        """At a probed step: keeps the weights and the full-batch gradient before the update."""
        if (self._step() + 1) % self.every == 0:  # the update into step k·every
            weights = [v.numpy() for v in self._gradient.variables]
            self._before = (self._step() + 1, weights, self._gradient.current())

    def on_train_batch_end(self, batch, logs=None):
        if self._before is None:
            return
        step, weights, gradient = self._before
        self._before = None
        now = [v.numpy() for v in self._gradient.variables]
        delta = [a - b for a, b in zip(now, weights)]
        if _norm(delta) == 0.0:
            return
        value, _ = local_lipschitz(self._gradient.at, weights, delta, gradient, self.gammas)
        self.history.append((step, value))
        if self.csv_path:
            new = not os.path.exists(self.csv_path)
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["step", "lipschitz"])
                writer.writerow([step, value])
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.scalar("lipschitz", value, step=step)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


def gradient_noise_scale(model, data, *, loss=None, microbatch=10):
    """B_simple = tr(Σ) / ‖G‖² at the model's current weights (McCandlish et al. 2018).

    The examples are split into m microbatches of `microbatch`; with G_j their
    mean gradients and Ḡ the mean of those, tr(Σ) ≈ b·Σ‖G_j − Ḡ‖²/(m − 1)
    (per-example covariance) and ‖G‖² ≈ ‖Ḡ‖² − tr(Σ)/n (unbiased).

    Returns:
        dict with `b_simple`, `trace_sigma`, `grad_norm_sq`, `examples`. `b_simple`
        is `inf` when the estimate of ‖G‖² is not positive (the gradient is
        lost in the noise).
    """
    x, y = data
    valid = not isinstance(microbatch, bool) and isinstance(microbatch, int) and microbatch >= 1
    m = len(y) // microbatch if valid else 0
    if m < 2:
        raise ValueError(f"Need at least two microbatches of an int microbatch >= 1. "
                         f"Received: microbatch={microbatch!r} for {len(y)} examples")
    n = m * microbatch
    grad = FullBatchGradient(model, (x[:microbatch], y[:microbatch]), loss, chunk=microbatch)
    cut = lambda a, j: a[j * microbatch:(j + 1) * microbatch]
    means = np.stack([np.concatenate([g.ravel() for g in grad.mean_of(cut(x, j), cut(y, j))])
                      .astype(np.float64) for j in range(m)])
    center = means.mean(axis=0)
    trace_sigma = microbatch * float(np.sum((means - center) ** 2)) / (m - 1)
    grad_norm_sq = float(center @ center) - trace_sigma / n
    b_simple = trace_sigma / grad_norm_sq if grad_norm_sq > 0 else float("inf")
    return {"b_simple": b_simple, "trace_sigma": trace_sigma, "grad_norm_sq": grad_norm_sq,
            "examples": n}
