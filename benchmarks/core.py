"""Core overheads of sniptf, each measured side by side with its dense baseline.

    python benchmarks/core.py [--repeats=5]

Prints, for each measurement, both timings and their ratio:
1. saliency time for one batch / one compiled dense forward+backward on the
   same batch (LeNet-5-Caffe and a VGG-style conv net): the first call on a
   freshly wrapped model vs a freshly traced dense step (tracing included in
   both, as a user pays it), a repeat call vs a warm dense step (the batch as
   arrays and as a one-batch tf.data.Dataset), and num_batches=5 vs five warm
   dense steps;
2. masked training epoch / dense training epoch (same model, data, optimizer)
   for LeNet-300-100 and LeNet-5-Caffe, in wall and process CPU time, with
   Keras's default compilation and with XLA (jit_compile=True);
3. mask selection for 100M prunable weights (25 Dense 2000x2000): wall time
   and peak extra memory, against the time of np.partition alone;
4. the whole `prune(criterion="magnitude")` on that 100M-weight MLP, in a
   fresh process: its wall time and the peak resident memory it adds over the
   model (VmHWM), against np.partition over the same 100M scores and the
   model's weights; then the same steps timed one by one (wrap, scores,
   selection, masks).
"""

import gc
import os
import subprocess
import sys
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import sniptf

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 15, "Interleaved pairs per ratio (at least 15; 25 for training).",
                     lower_bound=1)
flags.DEFINE_multi_enum("only", ["saliency", "training", "selection", "prune"],
                        ["saliency", "training", "selection", "prune"], "Which benchmarks to run.")
flags.DEFINE_bool("prune_child", False, "Internal: the prune benchmark's own process.")


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


def timed(fn):
    """(wall, cpu) seconds of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def compare(name, label, fn_a, fn_b, pairs):
    """Interleaves fn_a / fn_b `pairs` times; prints the median per-pair ratio a/b
    (and its IQR) in wall and process CPU time. This VM's speed drifts by tens
    of percent over seconds, so only side-by-side ratios mean anything."""
    a, b = [], []
    for i in range(pairs):
        first, second = (fn_a, fn_b) if i % 2 == 0 else (fn_b, fn_a)
        t1, t2 = timed(first), timed(second)
        a.append(t1 if i % 2 == 0 else t2)
        b.append(t2 if i % 2 == 0 else t1)
    a, b = np.array(a), np.array(b)
    for k, kind in enumerate(("wall", "cpu")):
        ratios = a[:, k] / b[:, k]
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        print(f"{name:30s} {label:22s} {kind:4s}: {np.median(a[:, k])*1e3:8.1f} ms vs "
              f"{np.median(b[:, k])*1e3:8.1f} ms -> ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}, {pairs} pairs)")


def bench_saliency(repeats):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pairs = max(repeats, 15)
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

        fresh = []

        def cold_saliency():
            sniptf.saliency(fresh.pop(), (x, y))

        def cold_dense():
            [g.numpy() for g in dense_step_fn()(x, y)]

        # first call on a freshly wrapped model vs a freshly traced dense step
        fresh.extend(sniptf.wrap(dense) for _ in range(pairs))
        compare(f"saliency {name}", "first call (traced)", cold_saliency, cold_dense, pairs)
        step = dense_step_fn()
        warm_dense = lambda: [g.numpy() for g in step(x, y)]
        warm_dense()
        sniptf.saliency(wrapped, (x, y))
        compare(f"saliency {name}", "repeat call", lambda: sniptf.saliency(wrapped, (x, y)),
                warm_dense, pairs)
        one_batch = tf.data.Dataset.from_tensors((x, y))  # the same batch as a dataset
        sniptf.saliency(wrapped, one_batch)
        compare(f"saliency {name}", "repeat call (dataset)",
                lambda: sniptf.saliency(wrapped, one_batch), warm_dense, pairs)
        xs, ys = np.concatenate([x] * 5), np.concatenate([y] * 5)
        sniptf.saliency(wrapped, (xs, ys), batch_size=batch, num_batches=5)
        five = lambda: sniptf.saliency(wrapped, (xs, ys), batch_size=batch, num_batches=5)
        five_dense = lambda: [warm_dense() for _ in range(5)]
        compare(f"saliency {name}", "5 batches", five, five_dense, pairs)


def bench_training(repeats):
    x, y = sniptf.data.load_numpy("mnist10k", "train")
    pairs = max(repeats, 25)
    for name, jit in (("lenet_300_100", False), ("lenet5_caffe", False),
                      ("lenet_300_100", True), ("lenet5_caffe", True)):
        keras.utils.set_random_seed(0)
        dense = sniptf.models.get(name, (28, 28, 1), 10)
        masked = sniptf.prune(dense, (x[:100], y[:100]), kappa=0.05)
        for model in (dense, masked):
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
            model.fit(x, y, batch_size=100, epochs=1, verbose=0)  # trace
        epoch = lambda m: (lambda: m.fit(x, y, batch_size=100, epochs=1, verbose=0))
        compare(f"training {name}{' (XLA)' if jit else ''}", "masked / dense epoch",
                epoch(masked), epoch(dense), pairs)


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
        e.mask.assign(m.astype(bool))
    t_assign = time.perf_counter() - start
    kept = sum(int(m.sum()) for m in masks)
    print(f"selection 100M: select {t_select:.2f} s + assign {t_assign:.2f} s = {t_select + t_assign:.2f} s "
          f"(np.partition alone {t_part:.2f} s); kept {kept} = 5% exactly: {kept == 5_000_000}")
    print(f"selection 100M: peak extra memory {peak / 2**20:.0f} MiB = {peak / score_bytes:.2f}x "
          f"the scores ({score_bytes / 2**20:.0f} MiB); the boolean masks returned take "
          f"{mask_bytes / 2**20:.0f} MiB")


def _resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak():
    """Starts the peak (VmHWM) afresh: ru_maxrss would carry the peak of the parent
    this process was forked from (Linux keeps it across exec)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024  # KiB


def prune_100m_child():
    """Runs in a fresh process, so that nothing else is in its peak."""
    from sniptf import scoring, selection, transform
    model = keras.Sequential([keras.Input((2000,))] +
                             [keras.layers.Dense(2000, use_bias=False) for _ in range(25)])
    weights_mib = sum(int(np.prod(v.shape)) * 4 for v in model.weights) / 2**20
    gc.collect()
    _reset_peak()
    base = _resident_mib()  # the peak is measured first, before anything else grows it
    start = time.perf_counter()
    pruned = sniptf.prune(model, None, kappa=0.05, criterion="magnitude")
    t_prune = time.perf_counter() - start
    peak = _peak_mib() - base
    held = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in pruned.weights) / 2**20
    del pruned
    gc.collect()
    stages = {}  # the same steps as prune, timed one by one
    start = time.perf_counter()
    wrapped = transform.wrap(model)
    stages["wrap (clone + masks)"] = time.perf_counter() - start
    entries = transform.masked_entries(wrapped)
    t = time.perf_counter()
    sources = scoring.score_sources(wrapped, None, criterion="magnitude")
    stages["scores (one pass)"] = time.perf_counter() - t
    t = time.perf_counter()
    masks = selection.select([sources[e.key] for e in entries], 0.05)
    stages["selection (radix passes)"] = time.perf_counter() - t
    t = time.perf_counter()
    transform.apply_masks(entries, masks)
    stages["mask assignment"] = time.perf_counter() - t
    total = time.perf_counter() - start
    del wrapped, masks, entries, sources
    gc.collect()
    flat = np.concatenate([np.abs(v.numpy()).ravel() for v in model.weights])
    start = time.perf_counter()
    flat.partition(flat.size - flat.size // 20)
    t_part = time.perf_counter() - start
    del flat
    print(f"prune 100M: np.partition alone {t_part:.2f} s; "
          f"sniptf.prune(criterion='magnitude') {t_prune:.2f} s ({t_prune / t_part:.1f}x); stages " +
          ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()) +
          f" = {total:.2f} s ({total / t_part:.1f}x the partition)")
    print(f"prune 100M: peak extra resident memory of sniptf.prune {peak:.0f} MiB = "
          f"{peak / weights_mib:.2f}x the model's weights ({weights_mib:.0f} MiB); the pruned "
          f"model itself holds {held:.0f} MiB (weights + bool masks)")


def bench_prune(repeats):
    del repeats  # one run, in a fresh process
    subprocess.run([sys.executable, os.path.abspath(__file__), "--prune_child"], check=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.prune_child:
        prune_100m_child()
        return
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}")
    if "saliency" in FLAGS.only:
        bench_saliency(FLAGS.repeats)
    if "training" in FLAGS.only:
        bench_training(FLAGS.repeats)
    if "selection" in FLAGS.only:
        bench_selection(FLAGS.repeats)
    if "prune" in FLAGS.only:
        bench_prune(FLAGS.repeats)


if __name__ == "__main__":
    app.run(main)
