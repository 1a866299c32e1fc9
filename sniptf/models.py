"""Model zoo: `get(name, input_shape, num_classes)` -> an uncompiled Keras model.

Every model outputs logits (no softmax), as the paper's networks do.
"""

import keras
from keras import layers

MODELS = {}


def register_model(name):
    """Decorator adding a builder `fn(input_shape, num_classes, **kw)` to the zoo."""
    def add(fn):
        MODELS[name] = fn
        return fn
    return add


def get(name, input_shape, num_classes, **kwargs):
    """Builds a zoo model.

    Args:
        name: one of `sniptf.models.MODELS`.
        input_shape: shape of one example, e.g. `(28, 28, 1)`.
        num_classes: number of output logits.
        **kwargs: builder options, e.g. `kernel_initializer`.

    Raises:
        ValueError: unknown `name` (the message lists the zoo), bad shape or
            class count.

    Example:

    ```python
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    ```
    """
    if name not in MODELS:
        raise ValueError(
            f"Unknown model. Expected one of {sorted(MODELS)}. Received: name={name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be an int >= 1. Received: num_classes={num_classes!r}")
    input_shape = tuple(input_shape)
    if not input_shape or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(
            f"Expected `input_shape` to be positive ints, e.g. (28, 28, 1). "
            f"Received: input_shape={input_shape!r}")
    return MODELS[name](input_shape, num_classes, **kwargs)


@register_model("lenet_300_100")
def lenet_300_100(input_shape, num_classes, kernel_initializer="variance_scaling",
                  activation="relu"):
    """LeNet-300-100 (LeCun et al. 1998): FC 300, FC 100, FC out; 266,610 weights on MNIST."""
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    x = layers.Dense(300, activation, kernel_initializer=kernel_initializer, name="fc1")(x)
    x = layers.Dense(100, activation, kernel_initializer=kernel_initializer, name="fc2")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="fc3")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


@register_model("lenet5_caffe")
def lenet5_caffe(input_shape, num_classes, kernel_initializer="variance_scaling",
                 activation="relu"):
    """LeNet-5-Caffe: conv 20 5×5, pool, conv 50 5×5, pool, FC 500, FC out; 431,080 weights."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(20, 5, kernel_initializer=kernel_initializer, name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, kernel_initializer=kernel_initializer, name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(500, activation, kernel_initializer=kernel_initializer, name="fc1")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="fc2")(x)
    return keras.Model(inputs, outputs, name="lenet5_caffe")
