"""TF1Momentum: TensorFlow 1's MomentumOptimizer, step for step, under a decaying lr."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sniptf import optimizers
from sniptf import training
from sniptf.studies import data_parallelism as dps

STEPS = 30
MOMENTUM = 0.999  # the CIFAR-10 workload searches 0.9 .. 0.9999


def _gradients(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)).astype("float32") for _ in range(STEPS)]


def _decay():  # the workload's schedule: linear from 0.5 to 0.5 * 0.01 over 20 steps
    return training.learning_rate_schedule("linear", 0.5, train_steps=20, end_factor=0.01)


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_tf1_momentum_optimizer_step_for_step_under_a_decaying_learning_rate(nesterov):
    """The same gradients through sniptf's optimizer, through TF1's own
    `tf.compat.v1.train.MomentumOptimizer` (lr fed per step), and through the formula
    in float64: accum ← m·accum + g; w ← w − lr_t·(g + m·accum) (Nesterov) or
    w ← w − lr_t·accum."""
    w0 = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    schedule = _decay()
    ours = keras.Variable(w0.copy())
    opt = optimizers.TF1Momentum(schedule, momentum=MOMENTUM, nesterov=nesterov)
    theirs = tf.Variable(w0.copy())
    fed_lr = tf.Variable(0.0)
    tf1 = tf.compat.v1.train.MomentumOptimizer(lambda: fed_lr, MOMENTUM, use_nesterov=nesterov)
    w, accum = w0.astype(np.float64), np.zeros((4, 3))
    for step, g in enumerate(_gradients()):
        lr = float(schedule(step))  # TF1's global_step and Keras's iterations: both count from 0
        opt.apply_gradients([(tf.constant(g), ours)])
        fed_lr.assign(lr)
        tf1.apply_gradients([(tf.constant(g), theirs)])
        accum = MOMENTUM * accum + g
        w = w - lr * (g + MOMENTUM * accum) if nesterov else w - lr * accum
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-5, atol=2e-5, err_msg=f"step {step}")
        np.testing.assert_allclose(ours.numpy(), w, rtol=2e-5, atol=2e-5, err_msg=f"step {step}")


@pytest.mark.parametrize("nesterov", [False, True])
def test_equals_keras_sgd_at_a_constant_rate_and_differs_once_it_decays(nesterov):
    def run(make, schedule):
        v = keras.Variable(np.ones((4, 3), "float32"))
        opt = make(schedule)
        for g in _gradients(2):
            opt.apply_gradients([(tf.constant(g), v)])
        return v.numpy()

    ours = lambda lr: optimizers.TF1Momentum(lr, momentum=MOMENTUM, nesterov=nesterov)  # noqa: E731
    keras_sgd = lambda lr: keras.optimizers.SGD(lr, momentum=MOMENTUM, nesterov=nesterov)  # noqa: E731
    np.testing.assert_allclose(run(ours, 0.05), run(keras_sgd, 0.05), rtol=1e-4, atol=1e-5)
    assert np.abs(run(ours, _decay()) - run(keras_sgd, _decay())).max() > 0.1


def test_by_name_in_training_and_in_the_cifar10_workload(tmp_path):
    opt = training.make_optimizer("tf1_nesterov", 0.1, momentum=0.95)
    assert isinstance(opt, optimizers.TF1Momentum) and opt.nesterov and opt.momentum == 0.95
    assert not training.make_optimizer("tf1_momentum", 0.1).nesterov
    workload = dps.get_workload("cifar10_resnet8")
    params = dps.sobol_points(list(workload.space), 1)[0]
    opt = dps.optimizer(workload, params)
    assert isinstance(opt, optimizers.TF1Momentum) and opt.nesterov
    assert opt.momentum == pytest.approx(params["momentum"])
    # a model compiled with it saves and reloads with its accumulators
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizers.TF1Momentum(0.1, momentum=0.9, nesterov=True), "mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, optimizers.TF1Momentum) and loaded.optimizer.nesterov
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_momentum_is_named():
    with pytest.raises(ValueError, match="Received: momentum=1.0"):
        optimizers.TF1Momentum(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Received: optimizer='tf2_nesterov'"):
        training.make_optimizer("tf2_nesterov", 0.1)
