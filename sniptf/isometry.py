"""Approximate isometry (Lee et al., ICLR 2020): restore signal propagation after pruning.

With every mask C_l fixed, minimise Σ_l ||(C_l ⊙ W_l)ᵀ(C_l ⊙ W_l) − I||_F over
the masked kernels (the authors' objective: unsquared Frobenius norms summed
over layers). Conv kernels are reshaped to [kh·kw·cin, cout]. Pruned entries
get zero gradient and stay exactly zero.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sniptf import transform


@dataclasses.dataclass(frozen=True)
class IsometryResult:
    """`history`: the objective before each step, then after the last one;
    `gram`: per kernel, which Gram matrix was driven to I."""

    history: np.ndarray
    gram: dict


def _matrix(weight, mask):
    w = weight.value * tf.cast(mask.value, weight.dtype)
    return tf.reshape(w, (-1, w.shape[-1]))


def objective_terms(entries):
    """Per kernel ||G − I||_F, G the smaller Gram matrix of C ⊙ W (a tensor list)."""
    terms = []
    for e in entries:
        m = _matrix(e.weight, e.mask)
        rows, cols = m.shape
        # WᵀW (cols×cols) when rows >= cols; else WWᵀ (rows×rows), the one that can reach I
        gram = tf.matmul(m, m, transpose_a=True) if rows >= cols else tf.matmul(m, m, transpose_b=True)
        terms.append(tf.norm(gram - tf.eye(gram.shape[0], dtype=gram.dtype)))
    return terms


def _kernel_entries(model):
    return [e for e in transform.masked_entries(model) if len(e.weight.shape) >= 2]


def approximate_isometry(model, steps=10000, learning_rate=0.1, optimizer="sgd"):
    """Moves the unpruned kernel entries towards layerwise orthogonality.

    All masked kernels (dense, conv, recurrent; not biases or embeddings) are
    optimised together in one compiled step. A rectangular `[n, m]` kernel
    uses WᵀW when n >= m and WWᵀ otherwise (the Gram matrix that can equal I);
    `IsometryResult.gram` records the choice and it is logged.

    Args:
        model: a model with `MaskedLayer`s (e.g. from `sniptf.prune`); its
            kernels are updated in place.
        steps: optimisation steps (the authors: 10,000).
        learning_rate: step size (the authors: plain SGD, 0.1).
        optimizer: `"sgd"`, `"adam"` or a `keras.optimizers.Optimizer`.

    Returns:
        An `IsometryResult` with the objective's history (`steps + 1` values).

    Raises:
        ValueError: no masked kernel, or bad `steps` / `learning_rate` / `optimizer`.

    Example:

    ```python
    pruned = sniptf.prune(model, batch, kappa=0.05)
    result = sniptf.approximate_isometry(pruned, steps=2000)
    result.history[0], result.history[-1]
    ```
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"Expected `steps` to be an int >= 0. Received: steps={steps!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating)) \
            or not learning_rate > 0:
        raise ValueError(f"Expected `learning_rate` > 0. Received: learning_rate={learning_rate!r}")
    if isinstance(optimizer, str):
        makers = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
        if optimizer not in makers:
            raise ValueError(f"Expected `optimizer` in {sorted(makers)} or a Keras optimizer. "
                             f"Received: optimizer={optimizer!r}")
        optimizer = makers[optimizer](learning_rate)
    elif not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(f"Expected `optimizer` in ['adam', 'sgd'] or a Keras optimizer. "
                         f"Received: optimizer={optimizer!r}")
    entries = _kernel_entries(model)
    if not entries:
        raise ValueError(
            f"Model '{model.name}' has no masked kernel; call sniptf.prune or sniptf.wrap first.")
    gram = {}
    for e in entries:
        rows = int(np.prod(e.weight.shape[:-1]))
        cols = int(e.weight.shape[-1])
        gram[e.key] = f"WᵀW ({cols}×{cols})" if rows >= cols else f"WWᵀ ({rows}×{rows})"
        if rows < cols:
            logging.info("approximate_isometry: %s is %dx%d; driving WWᵀ to I", e.key, rows, cols)
    weights = [e.weight for e in entries]
    optimizer.build(weights)

    def step():
        with tf.GradientTape() as tape:
            loss = tf.add_n(objective_terms(entries))
        optimizer.apply(tape.gradient(loss, [w.value for w in weights]), weights)
        return loss

    @tf.function
    def run(n):  # all steps in one graph: no Python round trip per step
        losses = tf.TensorArray(tf.float32, size=n)
        for i in tf.range(n):
            losses = losses.write(i, tf.cast(step(), tf.float32))
        return losses.stack()

    history = list(run(tf.constant(steps)).numpy()) if steps else []
    history.append(float(tf.add_n(objective_terms(entries))))
    for e in entries:  # exact zeros, whatever the optimizer did in float arithmetic
        e.weight.assign(e.weight.numpy() * e.mask.numpy())
    return IsometryResult(np.asarray(history), gram)
