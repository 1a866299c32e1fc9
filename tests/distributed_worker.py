"""Run by test_distribute.py in a fresh process: SNIP under a tf.distribute strategy.

    python tests/distributed_worker.py MODE OUT.json

MODE is `mirrored` (2 logical CPUs) or `multi_worker` (TF_CONFIG set by the
caller). Prunes LeNet-5-Caffe from a fixed init on a fixed global batch, once
on a single device and once under the strategy, and writes the comparison.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
keras.config.disable_traceback_filtering()

import sniptf  # noqa: E402

KAPPA = 0.05


def masks_of(model):
    return [e.mask for e in sniptf.transform.masked_entries(model)]


def main():
    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = sniptf.data.load_numpy("mnist10k", "train")
    batch = (x[:64], y[:64])
    keras.utils.set_random_seed(7)
    reference = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    single = sniptf.prune(reference, batch, kappa=KAPPA)
    expected = [m.numpy() for m in masks_of(single)]
    with strategy.scope():
        model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
        model.set_weights(reference.get_weights())
        pruned = sniptf.prune(model, batch, kappa=KAPPA)
    # the compiled loss with sample weights, on an odd batch (uneven split over replicas):
    # the scores must equal the single device's, not only the masks
    weighted = (x[:63], y[:63], np.random.default_rng(0).uniform(0, 2, 63).astype(np.float32))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    plain.set_weights(reference.get_weights())
    plain.compile("sgd", loss)
    single_scores = sniptf.saliency(sniptf.wrap(plain), weighted)
    with strategy.scope():
        twin = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
        twin.set_weights(reference.get_weights())
        twin.compile("sgd", loss)
        scores = sniptf.saliency(sniptf.wrap(twin), weighted)
    weighted_diff = max(float(np.max(np.abs(scores[k] - v)) / np.max(np.abs(v))) for k, v in single_scores.items())
    replica_masks = []
    for m in masks_of(pruned):
        values = getattr(m.value, "values", (m.value,))
        replica_masks.append([v.numpy() for v in values])
    identical = all(np.array_equal(r[0], other) for r in replica_masks for other in r[1:])
    got = [r[0] for r in replica_masks]
    mismatch = int(sum(np.count_nonzero(a != b) for a, b in zip(got, expected)))
    # the global batch is split over replicas, not duplicated: examples counted once
    entries = sniptf.transform.masked_entries(pruned)
    with strategy.scope():
        run = sniptf.scoring._gradient_pass(pruned, [e.mask for e in entries],
                                            sniptf.losses.resolve_loss(pruned), False)
        _, _, count = run((tf.constant(batch[0]), tf.constant(batch[1]), None))
    zero = None
    if mode == "mirrored":
        # Keras 3.15's fit fails its symbolic build under MultiWorkerMirrored
        # (it reduces a PerReplica data batch), so training is checked here only.
        with strategy.scope():
            pruned.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                           keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        train = tf.data.Dataset.from_tensor_slices((x[:256], y[:256])).batch(64)
        pruned.fit(train, epochs=1, verbose=0)
        zero = all(np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0)
                   for e in sniptf.transform.masked_entries(pruned))
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "examples_scored": int(count.numpy()),
        "replica_copies": len(replica_masks[0]),
        "identical_across_replicas": bool(identical),
        "kept": int(sum(int(g.sum()) for g in got)),
        "expected_kept": int(sum(int(e.sum()) for e in expected)),
        "mismatch_vs_single_device": mismatch,
        "mask_digest": float(sum(float((g * np.arange(g.size).reshape(g.shape)).sum()) for g in got)),
        "pruned_weights_zero_after_training": zero,
        "weighted_scores_max_rel_diff": weighted_diff,
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
