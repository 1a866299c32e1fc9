"""Every private Keras name sniptf uses, in one place.

Each item says which Keras version needs it and why. Everything else in
sniptf uses public Keras API only; `tests/test_build.py` greps for strays.
"""

import contextlib

import keras
import tensorflow as tf

# Functional: Keras 3.0-3.15 have no public class for "a model built from a
# graph of layers" (`keras.Model(inputs, outputs)` returns an instance of this
# private class); graph transforms need to tell it apart from subclassed models.
from keras.src.models.functional import Functional as _Functional

# get_stateless_scope: Keras 3.0-3.15 export `keras.StatelessScope` but not the
# accessor for the scope currently open; MaskedLayer nests its own scope inside
# an outer one (model.stateless_call) and must keep the outer mapping.
from keras.src.backend import get_stateless_scope  # noqa: F401

KERAS_VERSION = tuple(int(p) for p in keras.version().split(".")[:2])


def is_graph_model(model):
    """True for Sequential and Functional models (a layer graph sniptf can clone)."""
    return isinstance(model, (keras.Sequential, _Functional))


def is_functional(model):
    """True for Functional (not Sequential) models."""
    return isinstance(model, _Functional) and not isinstance(model, keras.Sequential)


def input_layer_name(tensor):
    """Name of the InputLayer that produced a Functional model's input tensor.

    Keras 3.0-3.15: `_keras_history` is the only link from a KerasTensor to
    its layer; a tensor made inside Sequential carries another name than its
    input layer, and `clone_model` would rename the inputs after the tensor.
    """
    return tensor._keras_history.operation.name


# --- MultiWorkerMirrored `fit` (Keras 3.15.x; no fixed release known yet) ----
# Two bugs stop `model.fit` / `evaluate` under MultiWorkerMirroredStrategy:
#  1. the trainer reduces scalar step outputs with `strategy.reduce("MEAN", v,
#     axis=0)`, which fails on scalars (`reduce_per_replica`);
#  2. the symbolic build reduces a PerReplica data batch to build metrics.
# Both are worked around only inside `multi_worker_fit`, for the model it is
# given; nothing changes process-wide. Re-check on each Keras upgrade: the
# multi-worker tests fail if a release changes these internals.
_MULTI_WORKER_BUGS_FROM = (3, 0)
_MULTI_WORKER_BUGS_FIXED_IN = None  # unknown: apply for every version >= 3.0


def _needs_multi_worker_workaround(strategy):
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    fixed = _MULTI_WORKER_BUGS_FIXED_IN
    return KERAS_VERSION >= _MULTI_WORKER_BUGS_FROM and (fixed is None or KERAS_VERSION < fixed)


@contextlib.contextmanager
def multi_worker_fit(model, strategy, batch):
    """Lets `model.fit` / `model.evaluate` run under MultiWorkerMirrored.

    A no-op for every other strategy. `batch` is a plain `(x, y)` batch used
    to build the model's metrics before `fit` would try a PerReplica one.
    """
    if not _needs_multi_worker_workaround(strategy):
        yield
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and strategy_ is strategy:
            def reduce(v):
                # one replica per worker gives plain tensors, several PerReplica
                local = strategy_.experimental_local_results(v)[0]
                if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                    return strategy_.reduce("MEAN", v, axis=None)
                return original(v, strategy_, reduction)
            return tf.nest.map_structure(reduce, values)
        return original(values, strategy_, reduction)

    model._symbolic_build(data_batch=batch)
    had_own = "_maybe_symbolic_build" in vars(model)
    saved = vars(model).get("_maybe_symbolic_build")
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
        if had_own:
            model._maybe_symbolic_build = saved
        else:
            del model._maybe_symbolic_build


def current_reduce_per_replica():
    """The trainer's reduction function (tests check nothing leaks out)."""
    from keras.src.backend.tensorflow import trainer as tf_trainer
    return tf_trainer.reduce_per_replica


def compile_arguments(model):
    """The arguments `model.compile` was last called with, or None if not compiled.

    Keras 3.0-3.15 keep them raw only in `_compile_config.config`;
    `get_compile_config()` serializes them, which fails for plain Python loss
    functions. The transforms recompile their copies with these.
    """
    if not getattr(model, "compiled", False):
        return None
    config = getattr(model, "_compile_config", None)
    return dict(config.config) if config is not None else None


def _keras_scales_losses_by_replicas():
    try:
        from keras.src.losses import loss as loss_module
    except ImportError:  # pragma: no cover
        return False
    return hasattr(loss_module, "scale_loss_for_distribution")


# Keras >= 3.4 (TensorFlow backend) divides every loss, and every added loss, by
# num_replicas_in_sync inside a replica context (losses.loss.
# scale_loss_for_distribution), so that summed replica gradients give the global
# mean; detected by the presence of that function.
_LOSSES_SCALED_BY_REPLICAS = _keras_scales_losses_by_replicas()


def unscaled_compute_loss(model, x, y, y_pred, sample_weight, training):
    """`model.compute_loss` as the mean over this replica's examples.

    sniptf sums `mean x count` over replicas and divides by the global
    example count itself, which stays exact for uneven splits and sample
    weights; so Keras's division by the replica count is undone here.
    """
    value = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if _LOSSES_SCALED_BY_REPLICAS and replicas > 1 and tf.distribute.in_cross_replica_context() is False:
        value = value * tf.cast(replicas, value.dtype)
    return value
