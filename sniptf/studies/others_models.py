"""Models sniptf did not write, built as their authors write them (offline: no pretrained
weights), with a small batch of their inputs: a keras.applications MobileNetV2, the keras-io
"Simple MNIST convnet" and "Bidirectional LSTM on IMDB" classifiers as written there, and small
KerasHub BERT, GPT-2 and ViT models. The experiments and tests that try sniptf's tools on
others' models share them (`MODELS[name]() -> (model, x, y)`, `compiled(model, name)`).
"""

import keras
import numpy as np

L = keras.layers


def mobilenet_v2():
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)
    return model, np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype("float32"), np.arange(16) % 5


def keras_io_mnist_convnet():  # keras-io "Simple MNIST convnet"
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        L.Conv2D(32, kernel_size=(3, 3), activation="relu"), L.MaxPooling2D(pool_size=(2, 2)),
        L.Conv2D(64, kernel_size=(3, 3), activation="relu"), L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(), L.Dropout(0.5), L.Dense(10, activation="softmax")])
    return model, np.random.default_rng(1).random((16, 28, 28, 1)).astype("float32"), np.arange(16) % 10


def keras_io_bidirectional_lstm():  # keras-io "Bidirectional LSTM on IMDB" (smaller vocabulary)
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = L.Embedding(2000, 128)(inputs)
    x = L.Bidirectional(L.LSTM(64, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(64))(x)
    model = keras.Model(inputs, L.Dense(1, activation="sigmoid")(x))
    return model, np.random.default_rng(2).integers(0, 2000, (16, 40)), (np.arange(16) % 2).astype("float32")


def _tokens(seed, with_segments):
    ids = np.random.default_rng(seed).integers(1, 500, (16, 16)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    if with_segments:
        x["segment_ids"] = np.zeros_like(ids)
    return x


def keras_hub_bert():
    import keras_hub
    backbone = keras_hub.models.BertBackbone(vocabulary_size=500, num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=16)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)
    return model, _tokens(3, True), np.arange(16) % 3


def keras_hub_gpt2():
    import keras_hub
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=500, num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=16)
    x = _tokens(4, False)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None), x, np.roll(x["token_ids"], -1, 1)


def keras_hub_vit():
    import keras_hub
    backbone = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=2,
                                            hidden_dim=32, mlp_dim=64)
    model = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=4, preprocessor=None)
    return model, np.random.default_rng(5).normal(size=(16, 16, 16, 3)).astype("float32"), np.arange(16) % 4


MODELS = {"mobilenet_v2": mobilenet_v2, "keras_io_mnist_convnet": keras_io_mnist_convnet,
          "keras_io_bidirectional_lstm": keras_io_bidirectional_lstm, "keras_hub_bert": keras_hub_bert,
          "keras_hub_gpt2": keras_hub_gpt2, "keras_hub_vit": keras_hub_vit}
# the loss each model's own example compiles with (the others: logits, sparse labels)
LOSSES = {"keras_io_mnist_convnet": "sparse_categorical_crossentropy",
          "keras_io_bidirectional_lstm": "binary_crossentropy", "mobilenet_v2": "sparse_categorical_crossentropy"}


def compiled(model, name):
    """`model` compiled as its example does (Adam 1e-3 and the loss in `LOSSES`)."""
    model.compile(keras.optimizers.Adam(1e-3),
                  LOSSES.get(name, keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
    return model
