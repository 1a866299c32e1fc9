"""Every private Keras name sniptf uses, in one place.

Each item says which Keras version needs it and why. Everything else in
sniptf uses public Keras API only; `tests/test_build.py` greps for strays.
"""

import contextlib
import functools

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

# the backend module: Keras 3.0-3.15 export no public way to run a function on
# symbolic tensors (`compute_output_spec` of a function); build_compiled_loss needs it.
from keras.src import backend as _backend

# global_state: Keras 3.0-3.15's TensorFlow `name_scope` pushes itself on Keras's
# name-scope stack *before* entering `tf.name_scope`, which can raise (a model named
# "_net" is not a valid root scope); the stack then keeps it, and every variable made
# later in the process gets that name in its path. Transforms restore the stack.
from keras.src.backend.common import global_state as _global_state

KERAS_VERSION = tuple(int(p) for p in keras.version().split(".")[:2])


def keeps_name_scopes(function):
    """Decorates a transform so that, however it ends, Keras's name-scope stack is as
    it was before (see `_global_state` above)."""
    @functools.wraps(function)
    def kept(*args, **kwargs):
        stack = _global_state.get_global_attribute("name_scope_stack")
        depth = len(stack) if stack else 0
        try:
            return function(*args, **kwargs)
        finally:
            stack = _global_state.get_global_attribute("name_scope_stack")
            if stack and len(stack) > depth:
                del stack[depth:]
    return kept


def is_graph_model(model):
    """True for Sequential and Functional models whose layer graph sniptf clones.

    A Functional subclass with its own `get_config` (KerasHub backbones and
    tasks) is rebuilt from that config instead, like a subclassed model:
    its class, its methods and the layers it shares across nested models
    (GPT-2's tied embedding) survive, and so does its `.keras` format.
    """
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, _Functional) and type(model).get_config is _Functional.get_config


def has_layer_graph(model):
    """True for Sequential and every Functional model, subclasses with their own
    config included (KerasHub tasks): models whose layers' symbolic inputs exist."""
    return isinstance(model, (keras.Sequential, _Functional))


def is_functional(model):
    """True for Functional (not Sequential) graph models."""
    return is_graph_model(model) and not isinstance(model, keras.Sequential)


def is_called_once(layer):
    """True if `layer` is called at one place of the graphs it belongs to.

    Keras 3.0-3.15: `layer.input` answers with the first call's tensors even
    for a shared layer; the list of inbound nodes (one per call) is private.
    """
    return len(layer._inbound_nodes) <= 1


def call_tensors(layer):
    """`(input tensors, output tensors)` of every call of `layer` (Keras 3.0-3.15:
    the inbound nodes are private)."""
    return [(list(n.input_tensors), list(n.output_tensors)) for n in layer._inbound_nodes]


def input_layer_name(tensor):
    """Name of the InputLayer that produced a Functional model's input tensor.

    Keras 3.0-3.15: `_keras_history` is the only link from a KerasTensor to
    its layer; a tensor made inside Sequential carries another name than its
    input layer, and `clone_model` would rename the inputs after the tensor.
    """
    return tensor._keras_history.operation.name



# --- Sub-layers held by custom layers (Keras 3.0-3.15) -----------------------
# Keras tracks a layer's sub-layers in a private list (`_layers`) that says
# nothing of where each is held. sniptf names a sub-layer by the attribute
# path the layer's own code uses (`"_self_attention_layer.query_dense"`,
# `"blocks.0"`), which stays the same when the layer is rebuilt from its
# config, so it reads the instance's attributes and skips the ones Keras
# itself sets on every layer and model.
# TensorFlow's Trackable adds `_self_unconditional_*` and friends (checkpoint
# dependencies, which list the sub-layers again) once something is tracked.
_KERAS_ATTRIBUTES = None
_TF_TRACKING_PREFIXES = ("_self_unconditional_", "_self_saveable_", "_self_update_uid",
                         "_self_name_based_", "_self_setattr_tracking")


def _keras_attributes():
    global _KERAS_ATTRIBUTES
    if _KERAS_ATTRIBUTES is None:
        names = set()
        for probe in (keras.layers.Layer(), keras.Model()):
            probe.sniptf_probe = keras.layers.Dense(1)  # sets the tracking attributes
            names |= set(vars(probe)) - {"sniptf_probe"}
        _KERAS_ATTRIBUTES = frozenset(names)
    return _KERAS_ATTRIBUTES


def layers_in(value, path):
    """`(path, layer)` for the layers in `value`: a layer, or lists/tuples/dicts of them."""
    if isinstance(value, keras.layers.Layer):
        return [(path, value)]
    found = []
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found.extend(layers_in(item, f"{path}.{i}"))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key and "." not in key and not key.isdigit():
                found.extend(layers_in(item, f"{path}.{key}"))
    return found


def held_sublayers(layer):
    """`(attribute path, sub-layer)` for the layers `layer` holds directly.

    A Sequential or Functional model holds its `layers` (`"layers.3"`); any
    other layer or model holds what its attributes refer to: a layer, or
    lists, tuples and dicts (string keys) of them, nested at any depth.
    """
    if is_graph_model(layer):
        return [(f"layers.{i}", sub) for i, sub in enumerate(layer.layers)]
    skip = _keras_attributes()
    found = []
    for name, value in vars(layer).items():
        if name in skip or name.startswith(_TF_TRACKING_PREFIXES):  # Keras's / TF's own
            continue
        found.extend(layers_in(value, name))
    return found

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


def wait_for_coordination_service_to_stop(timeout_seconds):
    """Blocks until the coordination service of a multi-worker job stops (its leader's
    process has exited) or `timeout_seconds` pass; returns whether it stopped.

    TensorFlow 2.16-2.21 give Python no call that shuts a task's coordination agent
    down (`context._reset_context` does not; the agent only stops with its process),
    so a task that exits is seen by the leader's service as one that "stopped sending
    heartbeats" ~10 s later, an error in the leader's log if it is still running
    then. A task waits here instead, on a key of the service's key-value store that is
    never set (`Context.get_config_key_value`, public on TensorFlow's private eager
    context): the call returns UNAVAILABLE as soon as the leader's process is gone.
    """
    from tensorflow.python.eager import context as _context

    try:
        _context.context().get_config_key_value("sniptf/never-set/leader-gone",
                                                timeout_in_ms=int(timeout_seconds * 1000))
    except tf.errors.DeadlineExceededError:
        return False
    except tf.errors.OpError:  # UNAVAILABLE (the leader's socket closed), or the service failed
        return True
    return False


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


def build_compiled_loss(model, batch):
    """Builds a compiled model's loss before sniptf traces a step that calls it.

    Keras 3.0-3.15 build `model.compile`'s loss (`model._compile_loss`) on its
    first call, and for several outputs that build creates a `Mean` tracker
    per loss: inside a `tf.function` that is a first trace that creates
    variables, which TensorFlow traces a second time. Keras's own `fit` builds
    it beforehand from symbolic tensors (`Trainer._symbolic_build`); this does
    the same for the loss alone (no optimizer slots). `batch`: an `(x, y[,
    sample_weight])` of arrays, tensors or `tf.TensorSpec`s. Best effort: if
    Keras changes, the step is traced twice as before.
    """
    compile_loss = getattr(model, "_compile_loss", None)
    if compile_loss is None or getattr(compile_loss, "built", True):
        return

    def symbolic(v):
        return None if v is None else keras.KerasTensor(tuple(v.shape), keras.backend.standardize_dtype(v.dtype))

    try:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            tf.nest.map_structure(symbolic, tuple(batch)))
        y_pred = model.compute_output_spec(x, training=False)
        _backend.compute_output_spec(model._compute_loss, x, y, y_pred, sample_weight=sample_weight,
                                     training=False)
    except Exception:  # noqa: BLE001 - an optimization only: the step is then traced twice
        return


def optimizer_slots(optimizer, variable):
    """The optimizer's per-weight state for `variable` (momentum, Adam's moments).

    Keras 3.0-3.15 name each slot `<variable path with / as _>_<slot name>`
    (`add_variable_from_reference`); there is no public map from a variable
    to its slots.
    """
    prefix = variable.path.replace("/", "_") + "_"
    return [v for v in optimizer.variables
            if v.name.startswith(prefix) and tuple(v.shape) == tuple(variable.shape)]


def optimizer_variable_index(optimizer, variable):
    """The index of `variable` among the variables `optimizer` was built with (Keras
    3.0-3.15's own optimizers index their slot lists with the private
    `Optimizer._get_variable_index`; a custom `update_step` has no public way)."""
    return optimizer._get_variable_index(variable)


def set_initial_epoch(model, epoch):
    """Makes the next `fit` start at `epoch` (what Keras's `BackupAndRestore` sets)."""
    model._initial_epoch = epoch


def all_layers(model):
    """Every layer inside `model`, itself included, nested at any depth (Keras 3.15:
    `_flatten_layers` is the only walk that sees wrapped and held sub-layers)."""
    return list(model._flatten_layers(include_self=True, recursive=True))


class BackupAndRestoreHooks(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore` with its private hooks given public names:
    Keras calls `_save_model()` at each save point, which calls `save_backup()`
    (override it; the default is Keras's own save), and `current_epoch` is the
    epoch being saved (Keras's `_current_epoch`)."""

    @property
    def current_epoch(self):
        """The epoch being backed up (0-based)."""
        return self._current_epoch

    def _save_model(self):
        self.save_backup()

    def save_backup(self):
        """Writes one backup (Keras's own save; `backup.Backup` overrides it)."""
        super()._save_model()


class TrackableResourceHooks(tf.saved_model.experimental.TrackableResource):
    """TensorFlow's `TrackableResource` with its subclass hooks given public names:
    TF calls `_create_resource()` and `_initialize()` (traced into a SavedModel and
    run at load), which call `create_resource()` and `initialize()`."""

    def _create_resource(self):
        return self.create_resource()

    def _initialize(self):
        return self.initialize()

