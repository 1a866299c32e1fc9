"""The loss a criterion scores with, resolved once for every criterion.

`scoring_loss(model, loss)` says what the gradient passes differentiate: a
user's `loss`, else a compiled model's own `compute_loss` (`COMPILED`), else
sparse categorical cross-entropy (from logits unless the model ends in a
softmax). `summed_loss` turns a per-example loss into (sum, count), so passes
over several replicas and batches reduce to the global mean.
"""

import keras
import tensorflow as tf


def softmax_output(model):
    """Whether `model` ends in a softmax (its outputs are probabilities, not logits)."""
    layer = model.layers[-1] if model.layers else None
    while isinstance(layer, keras.Model) and layer.layers:
        layer = layer.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    if activation is None and hasattr(layer, "layer"):
        activation = getattr(layer.layer, "activation", None)
    name = getattr(activation, "__name__", None) or (
        activation if isinstance(activation, str) else None)
    return name == "softmax"


COMPILED = "compiled"  # score with the model's own `compute_loss`


def scoring_loss(model, loss=None):
    """What `saliency` scores with: `loss` if given (see `resolve_loss`); else, for a
    compiled model, `COMPILED`: everything Keras trains on (`model.compute_loss`: the
    compiled losses with their `loss_weights`, and `model.losses`); else sparse
    categorical cross-entropy.

    Raises:
        ValueError: an uncompiled model with several outputs, or with one output
            unit (binary or regression: no default fits), and no `loss`.
    """
    if loss is not None:
        return resolve_loss(model, loss)
    if getattr(model, "compiled", False):
        return COMPILED
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        raise ValueError(
            f"Model '{model.name}' has {len(outputs)} outputs and is not compiled, so there is no "
            "loss to score with. Compile it with its losses (SNIP then scores the loss Keras "
            "trains on) or pass loss=fn(y_true, y_pred) (it receives the structures of targets "
            "and predictions). Received: loss=None")
    if outputs and len(outputs[0].shape) >= 2 and outputs[0].shape[-1] == 1:
        raise ValueError(
            f"Model '{model.name}' has one output unit (output shape {tuple(outputs[0].shape)}) and is "
            "not compiled: the default scoring loss, sparse categorical cross-entropy, needs a unit "
            "per class. Compile the model with its loss (e.g. 'binary_crossentropy' or 'mse'; SNIP "
            "then scores the loss Keras trains on) or pass loss=. Received: loss=None")
    return resolve_loss(model, None)


def resolve_loss(model, loss=None):
    """The per-example loss function used for scoring.

    `loss` (a Keras loss name, object or `fn(y_true, y_pred)`) wins; else the
    model's compiled loss if it is a single loss; else sparse categorical
    cross-entropy, from logits unless the model ends in a softmax.
    """
    if loss is None and getattr(model, "compiled", False):
        loss = getattr(model, "loss", None)
        if isinstance(loss, (list, dict, tuple)):
            raise ValueError(
                "The model is compiled with several losses; pass the one to "
                f"score with as `loss=`. Received: model.loss={loss!r}"
            )
    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=not softmax_output(model))
    try:
        fn = keras.losses.get(loss)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Cannot use `loss` for scoring: {e}. Received: loss={loss!r}") from e
    if fn is None or not callable(fn):
        raise ValueError(f"Cannot use `loss` for scoring. Received: loss={loss!r}")
    return fn


def summed_loss(loss_fn, y, pred, sample_weight=None):
    """`(sum of per-example losses, example count)` as float32 tensors.

    With `sample_weight` ([batch]) each example's loss is weighted and the
    count stays the number of examples, as Keras's `sum_over_batch_size`
    reduction does in `fit`.
    """
    if isinstance(loss_fn, keras.losses.Loss):
        values = loss_fn.call(y, pred)
    else:
        values = loss_fn(y, pred)
    values = tf.cast(values, tf.float32)
    n = tf.cast(tf.shape(tf.nest.flatten(pred)[0])[0], tf.float32)
    if values.shape.rank == 0:
        if sample_weight is not None:
            raise ValueError(
                "The scoring loss returns one number per batch, so sample weights cannot be "
                "applied; return per-example losses of shape [batch] instead. Received: a scalar loss")
        return values * n, n
    if sample_weight is not None:
        w = tf.cast(tf.reshape(sample_weight, [-1] + [1] * (values.shape.rank - 1)), tf.float32)
        values = values * w
    return tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32)
