"""Optimizers whose update is another framework's, step for step.

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
