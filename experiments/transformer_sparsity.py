"""The example of docs/custom_layers.md: a small KerasHub BERT
classifier pruned to 90% with SNIP, and the sparsity table it reports.

    .venv/bin/python experiments/transformer_sparsity.py

Offline: the backbone is built from a config with no pretrained weights.
Needs keras-hub (the Makefile installs it for the tests).
"""

import warnings

import keras
import keras_hub
import numpy as np

import sniptf


def main():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=32)
    inputs = {k: keras.Input((32,), dtype="int32", name=k)
              for k in ("token_ids", "segment_ids", "padding_mask")}
    logits = keras.layers.Dense(3, name="head")(backbone(inputs)["pooled_output"])
    classifier = keras.Model(inputs, logits)

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 1000, (16, 32)).astype("int32")
    x = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens),
         "padding_mask": np.ones_like(tokens)}
    y = rng.integers(0, 3, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = sniptf.prune(classifier, (x, y), kappa=0.1)
    for w in caught:
        print("warning:", w.message)
    print(sniptf.sparsity(pruned))


if __name__ == "__main__":
    main()
