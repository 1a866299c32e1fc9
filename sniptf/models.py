"""Model zoo: `get(name, input_shape, num_classes)` -> an uncompiled Keras model.

Every model outputs logits (no softmax), as the paper's networks do.
"""

import keras
from keras import layers

from sniptf import initializers

MODELS = {}


def register_model(name):
    """Decorator adding a builder `fn(input_shape, num_classes, **kw)` to the zoo."""
    def add(fn):
        MODELS[name] = fn
        return fn
    return add


def check_name(name):
    """The zoo builder called `name`; raises ValueError listing the zoo otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model. Expected one of {sorted(MODELS)}. Received: name={name!r}") from None


def get(name, input_shape, num_classes, **kwargs):
    """Builds a zoo model.

    Args:
        name: one of `sniptf.models.MODELS`.
        input_shape: shape of one example, e.g. `(28, 28, 1)`.
        num_classes: number of output logits.
        **kwargs: builder options, e.g. `kernel_initializer` (any Keras
            initializer, or `"delta_orthogonal"`).

    Raises:
        ValueError: unknown `name` (the message lists the zoo), bad shape or
            class count.

    Example:

    ```python
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    ```
    """
    builder = check_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Expected `num_classes` to be an int >= 1. Received: num_classes={num_classes!r}")
    input_shape = tuple(input_shape)
    if not input_shape or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(
            f"Expected `input_shape` to be positive ints, e.g. (28, 28, 1). "
            f"Received: input_shape={input_shape!r}")
    if "kernel_initializer" in kwargs:
        kwargs["kernel_initializer"] = initializers.get(kwargs["kernel_initializer"])
    try:
        return builder(input_shape, num_classes, **kwargs)
    except ValueError as e:  # Keras's shape error, with the shape that caused it
        raise ValueError(f"Model '{name}' cannot be built for this input shape: {e} "
                         f"Received: input_shape={input_shape!r}") from e


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


def _conv_bn_relu(x, filters, kernel, strides, init, name):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same",
                      kernel_initializer=init, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dense_bn_relu(x, units, init, name):
    x = layers.Dense(units, kernel_initializer=init, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _alexnet(input_shape, num_classes, k, kernel_initializer, name):
    inputs = keras.Input(input_shape)
    x = inputs
    for i, (filters, size) in enumerate(((96, 11), (256, 5), (384, 3), (384, 3), (256, 3))):
        x = _conv_bn_relu(x, filters, size, 2, kernel_initializer, f"conv{i + 1}")
    x = layers.Flatten()(x)
    x = _dense_bn_relu(x, 1024 * k, kernel_initializer, "fc1")
    x = _dense_bn_relu(x, 1024 * k, kernel_initializer, "fc2")
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="fc3")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("alexnet_s")
def alexnet_s(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """AlexNet-s (SNIP paper, CIFAR-10): AlexNet's 5 convs (stride 2, BN), FC 1024-1024; 5.1m."""
    return _alexnet(input_shape, num_classes, 1, kernel_initializer, "alexnet_s")


@register_model("alexnet_b")
def alexnet_b(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """AlexNet-b: as AlexNet-s with FC 2048-2048; 8.5m weights."""
    return _alexnet(input_shape, num_classes, 2, kernel_initializer, "alexnet_b")


_VGG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg(input_shape, num_classes, version, kernel_initializer, name):
    inputs = keras.Input(input_shape)
    x = inputs
    index = 0
    block_pos = 0
    for item in _VGG_D:
        if item == "M":
            x = layers.MaxPooling2D(2, padding="same")(x)
            block_pos = 0
            continue
        index += 1
        block_pos += 1
        # VGG-C: the third conv of blocks 3-5 is 1x1
        size = 1 if version == "C" and block_pos == 3 else 3
        x = _conv_bn_relu(x, item, size, 1, kernel_initializer, f"conv{index}")
    x = layers.Flatten()(x)
    x = _dense_bn_relu(x, 512, kernel_initializer, "fc1")
    if version != "like":
        x = _dense_bn_relu(x, 512, kernel_initializer, "fc2")
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("vgg_c")
def vgg_c(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """VGG-C for CIFAR (BN, FC 512-512): VGG-16 with 1x1 last convs in blocks 3-5; 10.5m."""
    return _vgg(input_shape, num_classes, "C", kernel_initializer, "vgg_c")


@register_model("vgg_d")
def vgg_d(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """VGG-D (VGG-16) for CIFAR with BN and FC 512-512; 15.2m weights."""
    return _vgg(input_shape, num_classes, "D", kernel_initializer, "vgg_d")


@register_model("vgg_like")
def vgg_like(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """VGG-like (Zagoruyko's CIFAR VGG): VGG-16 convs with BN, one FC 512; 15.0m."""
    return _vgg(input_shape, num_classes, "like", kernel_initializer, "vgg_like")


def _wide_resnet(input_shape, num_classes, depth, k, kernel_initializer, name):
    n = (depth - 4) // 6
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False,
                      kernel_initializer=kernel_initializer, name="conv0")(inputs)
    channels = 16
    for group, (width, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2))):
        for block in range(n):
            prefix = f"g{group + 1}b{block + 1}"
            s = stride if block == 0 else 1
            pre = layers.ReLU()(layers.BatchNormalization(name=f"{prefix}_bn1")(x))
            h = layers.Conv2D(width, 3, strides=s, padding="same", use_bias=False,
                              kernel_initializer=kernel_initializer, name=f"{prefix}_conv1")(pre)
            h = layers.ReLU()(layers.BatchNormalization(name=f"{prefix}_bn2")(h))
            h = layers.Conv2D(width, 3, padding="same", use_bias=False,
                              kernel_initializer=kernel_initializer, name=f"{prefix}_conv2")(h)
            if s != 1 or channels != width:
                x = layers.Conv2D(width, 1, strides=s, use_bias=False,
                                  kernel_initializer=kernel_initializer, name=f"{prefix}_shortcut")(pre)
            x = layers.Add()([x, h])
            channels = width
    x = layers.ReLU()(layers.BatchNormalization(name="final_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("wrn_16_8")
def wrn_16_8(input_shape, num_classes, kernel_initializer="he_normal"):
    """Wide ResNet 16-8 (Zagoruyko & Komodakis 2016), pre-activation; 11.0m weights."""
    return _wide_resnet(input_shape, num_classes, 16, 8, kernel_initializer, "wrn_16_8")


@register_model("wrn_16_10")
def wrn_16_10(input_shape, num_classes, kernel_initializer="he_normal"):
    """Wide ResNet 16-10; 17.1m weights."""
    return _wide_resnet(input_shape, num_classes, 16, 10, kernel_initializer, "wrn_16_10")


@register_model("wrn_22_8")
def wrn_22_8(input_shape, num_classes, kernel_initializer="he_normal"):
    """Wide ResNet 22-8; 17.2m weights."""
    return _wide_resnet(input_shape, num_classes, 22, 8, kernel_initializer, "wrn_22_8")


def _recurrent(input_shape, num_classes, cell, units, kernel_initializer, name):
    inputs = keras.Input(input_shape)
    x = inputs
    if len(input_shape) == 3:  # (28, 28, 1) images: rows are the time steps
        x = layers.Reshape((input_shape[0], input_shape[1] * input_shape[2]))(x)
    rnn = {"lstm": layers.LSTM, "gru": layers.GRU}[cell]
    x = rnn(units, return_sequences=True, kernel_initializer=kernel_initializer, name=f"{cell}1")(x)
    x = rnn(units, kernel_initializer=kernel_initializer, name=f"{cell}2")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


# Two stacked layers; the widths are set so the counts match the SNIP paper's
# (which gives counts, not widths): 102 units -> LSTM 138k / GRU 104k,
# 206 units -> LSTM 536k / GRU 404k on 28 steps of 28 pixels.
@register_model("lstm_s")
def lstm_s(input_shape, num_classes, kernel_initializer="glorot_uniform"):
    """LSTM-s: 2 x LSTM(102) on sequential MNIST (28 steps of 28 pixels); 137k weights."""
    return _recurrent(input_shape, num_classes, "lstm", 102, kernel_initializer, "lstm_s")


@register_model("lstm_b")
def lstm_b(input_shape, num_classes, kernel_initializer="glorot_uniform"):
    """LSTM-b: 2 x LSTM(206); 535k weights."""
    return _recurrent(input_shape, num_classes, "lstm", 206, kernel_initializer, "lstm_b")


@register_model("gru_s")
def gru_s(input_shape, num_classes, kernel_initializer="glorot_uniform"):
    """GRU-s: 2 x GRU(102); 104k weights."""
    return _recurrent(input_shape, num_classes, "gru", 102, kernel_initializer, "gru_s")


@register_model("gru_b")
def gru_b(input_shape, num_classes, kernel_initializer="glorot_uniform"):
    """GRU-b: 2 x GRU(206); 404k weights."""
    return _recurrent(input_shape, num_classes, "gru", 206, kernel_initializer, "gru_b")


@register_model("simple_cnn")
def simple_cnn(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """Simple-CNN (data-parallelism paper): conv5x5-32, pool, conv5x5-64, pool, FC 1024, no BN."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(32, 5, padding="same", activation="relu",
                      kernel_initializer=kernel_initializer, name="conv1")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu",
                      kernel_initializer=kernel_initializer, name="conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu", kernel_initializer=kernel_initializer, name="fc1")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


@register_model("resnet8")
def resnet8(input_shape, num_classes, kernel_initializer="he_normal"):
    """ResNet-8 without batch-norm (data-parallelism paper): conv16, 3 residual stages
    (16, 32, 64 filters, one 2-conv block each), global pooling, FC."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", activation="relu",
                      kernel_initializer=kernel_initializer, name="conv0")(inputs)
    channels = 16
    for stage, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
        prefix = f"stage{stage + 1}"
        h = layers.Conv2D(width, 3, strides=stride, padding="same", activation="relu",
                          kernel_initializer=kernel_initializer, name=f"{prefix}_conv1")(x)
        h = layers.Conv2D(width, 3, padding="same", kernel_initializer=kernel_initializer,
                          name=f"{prefix}_conv2")(h)
        if stride != 1 or channels != width:
            x = layers.Conv2D(width, 1, strides=stride, kernel_initializer=kernel_initializer,
                              name=f"{prefix}_shortcut")(x)
        x = layers.ReLU()(layers.Add()([x, h]))
        channels = width
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet8")


@register_model("dps_simple_cnn")
def dps_simple_cnn(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """The data-parallelism-and-sparsity authors' Simple-CNN (Lee et al., ICLR 2021 code):
    conv 5x5 32 VALID, max-pool 2, conv 5x5 64 VALID, max-pool 2, one dense layer to
    the logits, ReLU, no batch-norm; 62,346 weights on MNIST. (`simple_cnn` is Shallue
    et al.'s net with an extra FC-1024.)"""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(32, 5, padding="valid", activation="relu",
                      kernel_initializer=kernel_initializer, name="conv1")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 5, padding="valid", activation="relu",
                      kernel_initializer=kernel_initializer, name="conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name="dps_simple_cnn")


@keras.saving.register_keras_serializable(package="sniptf")
class ChannelPad(layers.Layer):
    """Appends `extra` all-zero channels (the parameter-free shortcut of a ResNet)."""

    def __init__(self, extra, **kwargs):
        super().__init__(**kwargs)
        if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
            raise ValueError(f"Expected an int >= 0. Received: extra={extra!r}")
        self.extra = extra

    def call(self, x):
        pad = [[0, 0]] * (len(x.shape) - 1) + [[0, self.extra]]
        return keras.ops.pad(x, pad)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (None if input_shape[-1] is None else input_shape[-1] + self.extra,)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


@register_model("dps_resnet8")
def dps_resnet8(input_shape, num_classes, kernel_initializer="variance_scaling"):
    """The data-parallelism-and-sparsity authors' ResNet-8 for CIFAR-10: conv 16, three
    stages (16, 32, 64 filters) of one pre-activation block (ReLU before each 3x3 conv),
    parameter-free shortcuts, no batch-norm, ReLU, global average pooling, FC; variance
    scaling (scale 1, fan-in) and zero biases, as their `network.py`. Where a stage
    changes width and stride, the shortcut average-pools the block's ReLU'd input and
    zero-pads its channels; the first stage's shortcut is its input itself.
    (`resnet8` uses 1x1 conv shortcuts.)"""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", kernel_initializer=kernel_initializer, name="conv0")(inputs)
    channels = 16
    for stage, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
        prefix = f"stage{stage + 1}"
        activated = layers.ReLU(name=f"{prefix}_relu1")(x)
        h = layers.Conv2D(width, 3, strides=stride, padding="same", kernel_initializer=kernel_initializer,
                          name=f"{prefix}_conv1")(activated)
        h = layers.ReLU()(h)
        h = layers.Conv2D(width, 3, padding="same", kernel_initializer=kernel_initializer,
                          name=f"{prefix}_conv2")(h)
        shortcut = x
        if stride != 1 or width != channels:
            shortcut = layers.AveragePooling2D(stride, padding="same", name=f"{prefix}_pool")(activated)
            shortcut = ChannelPad(width - channels)(shortcut)
        x = layers.Add()([shortcut, h])
        channels = width
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(x))
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    return keras.Model(inputs, outputs, name="dps_resnet8")


@register_model("mlp7")
def mlp7(input_shape, num_classes, kernel_initializer="variance_scaling", activation="tanh",
         width=100, depth=7):
    """A deep MLP for signal-propagation studies (Lee et al., ICLR 2020): `depth` Dense
    layers (`depth - 1` hidden of `width` units with `activation`, then the logits)."""
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    for i in range(depth - 1):
        x = layers.Dense(width, activation, kernel_initializer=kernel_initializer, name=f"fc{i + 1}")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name=f"fc{depth}")(x)
    return keras.Model(inputs, outputs, name="mlp7")
