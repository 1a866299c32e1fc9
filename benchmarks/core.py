"""Core overheads of sniptf, each measured side by side with its dense baseline.

    python benchmarks/core.py [--repeats=5]

Prints, for each measurement, both timings and their ratio:
1. saliency time for one batch / one compiled dense forward+backward on the
   same batch (LeNet-5-Caffe and a VGG-style conv net): the first call on a
   freshly wrapped model vs a freshly traced dense step (tracing included in
   both, as a user pays it), a repeat call vs a warm dense step, and the cost
   of each extra batch with num_batches > 1 vs a warm dense step;
2. masked training epoch / dense training epoch (same model, data, optimizer)
   for LeNet-300-100 and LeNet-5-Caffe;
3. mask selection for 100M prunable weights (25 Dense 2000x2000): wall time
   and peak extra memory, against the time of np.partition alone.
"""

import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import sniptf  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 9, "Timed repetitions (the median is reported).", lower_bound=1)
flags.DEFINE_multi_enum("only", ["saliency", "training", "selection"],
                        ["saliency", "training", "selection"], "Which benchmarks to run.")


def vgg_style(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (64, 64, "pool", 128, 128, "pool", 256, 256, "pool"):
        if filters == "pool":
            x = keras.layers.MaxPooling2D()(x)
        else:
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="vgg_style")


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_saliency(repeats):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for name, build, shape, batch in (
            ("lenet5_caffe", lambda: sniptf.models.get("lenet5_caffe", (28, 28, 1), 10), (28, 28, 1), 100),
            ("vgg_style", lambda: vgg_style((32, 32, 3), 10), (32, 32, 3), 128)):
        rng = np.random.default_rng(0)
        x = rng.random((batch,) + shape, dtype=np.float32)
        y = rng.integers(0, 10, batch)
        dense = build()
        wrapped = sniptf.wrap(dense)

        def dense_step_fn():
            @tf.function
            def step(x, y):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, dense(x))
                return tape.gradient(loss, dense.trainable_variables)
            return step

        def cold_dense():
            [g.numpy() for g in dense_step_fn()(x, y)]

        def cold_saliency():
            fresh = sniptf.wrap(dense)  # a new model: its pass is traced again
            start = time.perf_counter()
            sniptf.saliency(fresh, (x, y))
            return time.perf_counter() - start

        cold_dense()
        cold_saliency()  # warm Python-level caches for both
        t_dense_cold = median_time(cold_dense, repeats)
        t_sal_cold = float(np.median([cold_saliency() for _ in range(repeats)]))
        step = dense_step_fn()
        [g.numpy() for g in step(x, y)]
        t_dense_warm = median_time(lambda: [g.numpy() for g in step(x, y)], repeats)
        sniptf.saliency(wrapped, (x, y))
        t_sal_warm = median_time(lambda: sniptf.saliency(wrapped, (x, y)), repeats)
        xs = np.concatenate([x] * 11)
        ys = np.concatenate([y] * 11)
        t_1 = median_time(lambda: sniptf.saliency(wrapped, (xs[:batch], ys[:batch])), repeats)
        t_11 = median_time(lambda: sniptf.saliency(wrapped, (xs, ys), batch_size=batch, num_batches=11), repeats)
        t_extra = (t_11 - t_1) / 10
        for label, t_sal, t_dense in (("first call (traced)", t_sal_cold, t_dense_cold),
                                      ("repeat call", t_sal_warm, t_dense_warm),
                                      ("per extra batch", t_extra, t_dense_warm)):
            print(f"saliency {name:13s} {label:20s} {t_sal*1e3:8.1f} ms vs dense fwd+bwd "
                  f"{t_dense*1e3:8.1f} ms -> ratio {t_sal / t_dense:.2f}")


def bench_training(repeats):
    x, y = sniptf.data.load_numpy("mnist10k", "train")
    for name in ("lenet_300_100", "lenet5_caffe"):
        keras.utils.set_random_seed(0)
        dense = sniptf.models.get(name, (28, 28, 1), 10)
        masked = sniptf.prune(dense, (x[:100], y[:100]), kappa=0.05)
        times = {}
        models = {"dense": dense, "masked": masked}
        for key, model in models.items():
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x, y, batch_size=100, epochs=1, verbose=0)  # trace
        # interleave so machine noise hits both alike
        samples = {"dense": [], "masked": []}
        for _ in range(repeats):
            for key, model in models.items():
                start = time.perf_counter()
                model.fit(x, y, batch_size=100, epochs=1, verbose=0)
                samples[key].append(time.perf_counter() - start)
        for key in samples:
            times[key] = float(np.median(samples[key]))
        print(f"training {name:13s} epoch: masked {times['masked']*1e3:7.1f} ms vs dense "
              f"{times['dense']*1e3:7.1f} ms -> ratio {times['masked'] / times['dense']:.3f}")


def bench_selection(repeats):
    del repeats  # one run: 100M weights
    rng = np.random.default_rng(0)
    scores = [rng.random((2000, 2000), dtype=np.float32) for _ in range(25)]
    score_bytes = sum(s.nbytes for s in scores)
    flat = np.concatenate([s.ravel() for s in scores])
    start = time.perf_counter()
    flat.partition(flat.size - flat.size // 20)
    t_part = time.perf_counter() - start
    del flat
    gc.collect()
    model = keras.Sequential([keras.Input((2000,))] + [keras.layers.Dense(2000, use_bias=False) for _ in range(25)])
    wrapped = sniptf.wrap(model)
    entries = sniptf.transform.masked_entries(wrapped)
    start = time.perf_counter()
    masks = sniptf.select(scores, 0.05)
    t_select = time.perf_counter() - start
    del masks
    gc.collect()
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    masks = sniptf.select(scores, 0.05)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    mask_bytes = sum(m.nbytes for m in masks)
    start = time.perf_counter()
    for e, m in zip(entries, masks):
        e.mask.assign(m.astype(np.float32))
    t_assign = time.perf_counter() - start
    kept = sum(int(m.sum()) for m in masks)
    print(f"selection 100M: select {t_select:.2f} s + assign {t_assign:.2f} s = {t_select + t_assign:.2f} s "
          f"(np.partition alone {t_part:.2f} s); kept {kept} = 5% exactly: {kept == 5_000_000}")
    print(f"selection 100M: peak extra memory {peak / 2**20:.0f} MiB = {peak / score_bytes:.2f}x "
          f"the scores ({score_bytes / 2**20:.0f} MiB); the boolean masks returned take "
          f"{mask_bytes / 2**20:.0f} MiB")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}")
    if "saliency" in FLAGS.only:
        bench_saliency(FLAGS.repeats)
    if "training" in FLAGS.only:
        bench_training(FLAGS.repeats)
    if "selection" in FLAGS.only:
        bench_selection(FLAGS.repeats)


if __name__ == "__main__":
    app.run(main)
