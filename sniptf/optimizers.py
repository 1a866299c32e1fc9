"""Optimizers by name (`make_optimizer`), learning-rate schedules by name, and
optimizers whose update is another framework's, step for step.

`TF1Momentum` is TensorFlow 1's `tf.compat.v1.train.MomentumOptimizer`, the
optimizer of the authors' code of the SNIP and data-parallelism papers. It keeps an
accumulator of gradients, not of steps:

    accum ← m·accum + g
    w     ← w − lr_t·accum              (plain momentum)
    w     ← w − lr_t·(g + m·accum)      (use_nesterov=True)

Keras's `SGD(momentum=m)` keeps the velocity of the weights instead,
v ← m·v − lr_t·g; w ← w + v (Nesterov: w ← w + m·v − lr_t·g). The two are the same
at a constant learning rate (v = −lr·accum) and differ once lr_t changes: the
accumulator carries past gradients at the new rate, the velocity at the rates they
were taken with. Under the CIFAR-10 workload's linear decay with momentum up to
0.9999 (a memory of ~10,000 steps) that is a different optimizer.
"""

import keras
from keras import ops

from sniptf import _keras_compat


@keras.saving.register_keras_serializable(package="sniptf")
class TF1Momentum(keras.optimizers.Optimizer):
    """TensorFlow 1's `MomentumOptimizer` (see the module docstring).

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: m in [0, 1).
        nesterov: TF1's `use_nesterov`.
        **kwargs: the other `keras.optimizers.Optimizer` arguments (`weight_decay`
            is Keras's decoupled decay, applied before the step).

    Raises:
        ValueError: momentum outside [0, 1).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False, name="tf1_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"Expected momentum to be a float in [0, 1). Received: momentum={momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # named `<variable path>_accumulator` by Keras: `_keras_compat.optimizer_slots` finds them
        self.accumulators = [self.add_variable_from_reference(v, "accumulator") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = ops.cast(self.momentum, variable.dtype)
        accum = self.accumulators[_keras_compat.optimizer_variable_index(self, variable)]
        self.assign(accum, ops.add(ops.multiply(accum, m), gradient))
        if self.nesterov:
            self.assign_sub(variable, ops.multiply(lr, ops.add(gradient, ops.multiply(m, accum))))
        else:
            self.assign_sub(variable, ops.multiply(lr, accum))

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov)
        return config


OPTIMIZERS = ("sgd", "momentum", "nesterov", "tf1_momentum", "tf1_nesterov", "adam", "adamw")
LR_SCHEDULES = ("constant", "piecewise", "linear")


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
    `MomentumOptimizer` (`sniptf.TF1Momentum`: the same at a constant
    learning rate, not under a schedule)."""
    check_optimizer(name, momentum, weight_decay)
    decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, weight_decay=decay)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=name == "nesterov",
                                    weight_decay=decay)
    if name in ("tf1_momentum", "tf1_nesterov"):
        return TF1Momentum(learning_rate, momentum=momentum, nesterov=name == "tf1_nesterov",
                                      weight_decay=decay)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=decay)
    return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
