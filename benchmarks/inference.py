"""Serving a pruned model: file size and latency of the export formats and of compaction.

    python benchmarks/inference.py [--parts=formats,compaction] [--repeats=15] [--models=...]

Part `formats` (below); part `compaction` (see `measure_compaction`).

For each model and sparsity (magnitude pruning with scope="layerwise", so
every layer has the stated sparsity: the format's cost depends on each
layer's sparsity, not on which criterion chose the mask) it exports the dense SavedModel, the sparse
SavedModel (`batch_size_hint=1`) and TFLite, and prints:
- each file's size, the model's dense weights (4 bytes per parameter), and
  how much of each SavedModel is graph (saved_model.pb) rather than weights;
- batch-1 and batch-64 latency of the loaded sparse SavedModel and of the
  TFLite interpreter against the loaded dense SavedModel: the median of
  per-pair ratios over interleaved pairs (as benchmarks/core.py measures),
  with the IQR. This VM's speed drifts, so only side-by-side ratios mean
  anything.
"""

import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import sniptf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import ratio  # noqa: E402
from _timing import tflite_runner  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 15, "Interleaved pairs per ratio.", lower_bound=3)
flags.DEFINE_list("models", ["lenet_300_100", "lenet5_caffe", "mlp_4096", "vgg_like"],
                  "Models to measure.")
flags.DEFINE_list("sparsities", ["0.90", "0.95", "0.98", "0.99"], "Sparsities to measure (formats).")
flags.DEFINE_multi_enum("parts", ["formats", "compaction"], ["formats", "compaction"], "What to measure.")
flags.DEFINE_list("compaction_criteria", ["snip", "synflow", "random"], "Criteria (compaction).")
flags.DEFINE_list("compaction_sparsities", ["0.95", "0.98", "0.99"], "Sparsities (compaction).")


def mlp_4096():
    inputs = keras.Input((784,))
    h = keras.layers.Dense(4096, activation="relu")(inputs)
    h = keras.layers.Dense(4096, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h), name="mlp_4096")


def vgg_like():
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters in (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool"):
        if filters == "pool":
            x = keras.layers.MaxPooling2D()(x)
        else:
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="vgg_like")


MODELS = {
    "lenet_300_100": (lambda: sniptf.models.get("lenet_300_100", (28, 28, 1), 10), (28, 28, 1)),
    "lenet5_caffe": (lambda: sniptf.models.get("lenet5_caffe", (28, 28, 1), 10), (28, 28, 1)),
    "mlp_4096": (mlp_4096, (784,)),
    "vgg_like": (vgg_like, (32, 32, 3)),
}


def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


def measure(name, sparsity, pairs, work):
    build, shape = MODELS[name]
    keras.utils.set_random_seed(0)
    model = build()
    pruned = sniptf.prune(model, None, kappa=round(1 - sparsity, 6), criterion="magnitude",
                          scope="layerwise")
    weights = 4 * model.count_params()
    paths = {f: os.path.join(work, f"{name}_{sparsity}_{f}") for f in ("dense", "sparse", "tflite")}
    infos = {}
    for fmt, key in (("saved_model", "dense"), ("sparse_saved_model", "sparse"), ("tflite", "tflite")):
        infos[key] = sniptf.export(pruned, paths[key], format=fmt, batch_size_hint=1).export_info \
            if fmt != "tflite" else sniptf.export(pruned, paths[key], format=fmt).export_info
    graph = {k: infos[k]["graph_bytes"] for k in ("dense", "sparse")}
    print(f"{name} {sparsity:.0%}: weights {weights/1e6:.3f} MB; dense SavedModel {size(paths['dense'])/1e6:.3f} MB "
          f"(graph {graph['dense']/1e6:.3f}); sparse SavedModel {size(paths['sparse'])/1e6:.3f} MB "
          f"(graph {graph['sparse']/1e6:.3f}) = 1/{weights / size(paths['sparse']):.1f} of the weights; "
          f"TFLite {size(paths['tflite'])/1e6:.3f} MB = 1/{weights / size(paths['tflite']):.1f}; "
          f"sparse matmul layers {infos['sparse']['sparse_path'] or 'none'}")
    dense = tf.saved_model.load(paths["dense"])
    sparse = tf.saved_model.load(paths["sparse"])
    rng = np.random.default_rng(0)
    for batch_size in (1, 64):
        batch = rng.random((batch_size,) + shape, dtype=np.float32)
        x = tf.constant(batch)
        run_dense = lambda: dense.serve(x).numpy()
        run_sparse = lambda: sparse.serve(x).numpy()
        med, q1, q3, ta, tb = ratio(run_sparse, run_dense, pairs)
        print(f"  batch {batch_size:2d}: sparse/dense SavedModel {med:.3f} (IQR {q1:.3f}-{q3:.3f}; "
              f"{ta*1e3:.2f} vs {tb*1e3:.2f} ms) -> {1/med:.2f}x faster")
        med, q1, q3, ta, tb = ratio(tflite_runner(paths["tflite"], batch), run_dense, pairs)
        print(f"  batch {batch_size:2d}: TFLite/dense SavedModel {med:.3f} (IQR {q1:.3f}-{q3:.3f}; "
              f"{ta*1e3:.2f} vs {tb*1e3:.2f} ms)")


def macs(model):
    """Multiply-accumulates per example of a plain model's Dense and Conv layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape)) * int(np.prod(layer.output.shape[1:-1]) or 1)
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            total += int(np.prod(layer.kernel.shape)) * int(np.prod(layer.output.shape[1:-1]))
    return total


def hand_built(small, shape):
    """A model written by hand with the compacted model's live widths (random weights):
    what compaction's output is measured against."""
    widths = {l.name: (l.units if isinstance(l, keras.layers.Dense) else l.filters)
              for l in small.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))}
    kept_inputs = next((int(l.kernel.shape[0]) for l in small.layers if isinstance(l, keras.layers.Dense)), None)
    inputs = keras.Input(shape)
    x = inputs
    if len(shape) == 3 and any(isinstance(l, keras.layers.Conv2D) for l in small.layers):  # LeNet-5-Caffe
        x = keras.layers.Conv2D(widths["conv1"], 5)(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(widths["conv2"], 5)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    if kept_inputs < x.shape[-1]:
        x = keras.ops.take(x, np.arange(kept_inputs), axis=-1)
    dense = [l for l in small.layers if isinstance(l, keras.layers.Dense)]
    for layer in dense:
        x = keras.layers.Dense(layer.units, activation=layer.activation)(x)
    return keras.Model(inputs, x, name="hand_built")


def probe_functions(shape, batch):
    """The two floors of a call: a compiled function returning at once (call
    overhead) and one reading its whole input (input bandwidth)."""
    x = tf.constant(batch)
    nothing = tf.function(lambda a: a[:1, ...], input_signature=[tf.TensorSpec((None,) + shape)])
    read = tf.function(lambda a: tf.reduce_sum(a), input_signature=[tf.TensorSpec((None,) + shape)])
    nothing(x), read(x)
    return (lambda: nothing(x).numpy()), (lambda: read(x).numpy())


def timed_median(fn, pairs):
    fn()
    times = []
    for _ in range(pairs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_compaction(name, criterion, sparsity, pairs, work, x, y):
    """Compaction of `name` pruned by `criterion`: parameters, MACs, sizes of the dense
    SavedModel, the compacted one (dense / sparse format / TFLite) and a hand-built
    model of the live widths; batch 1, 64 and 1024 latency of each against the
    dense SavedModel (median of interleaved-pair ratios), and the floors."""
    build, shape = MODELS[name]
    keras.utils.set_random_seed(0)
    model = build()
    batch = (x[:100].reshape((100,) + shape), y[:100])
    pruned = sniptf.prune(model, batch, kappa=round(1 - sparsity, 6), criterion=criterion)
    small = sniptf.compact(pruned)
    effective = sniptf.effective_sparsity(pruned)
    plain = sniptf.strip(pruned)
    hand = hand_built(small, shape)
    paths = {k: os.path.join(work, f"{name}_{criterion}_{sparsity}_{k}") for k in
             ("dense", "compact", "compact_sparse", "compact_tflite", "hand")}
    sniptf.export(pruned, paths["dense"])
    sniptf.export(pruned, paths["compact"], compact=True)
    sniptf.export(pruned, paths["compact_sparse"], format="sparse_saved_model", compact=True)
    tfl = sniptf.export(pruned, paths["compact_tflite"], format="tflite", compact=True).export_info
    sniptf.export(hand, paths["hand"])
    live = [l.units if isinstance(l, keras.layers.Dense) else l.filters for l in small.layers
            if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))]
    inputs = next((int(l.kernel.shape[0]) for l in small.layers if isinstance(l, keras.layers.Dense)), None)
    print(f"{name} {criterion} {sparsity:.0%}: kept {effective.nominal.kept} weights, effective "
          f"{effective.kept}; live widths {live} (first Dense reads {inputs}); parameters "
          f"{plain.count_params()} -> {small.count_params()} ({plain.count_params() / small.count_params():.1f}x "
          f"fewer); MACs {macs(plain)} -> {macs(small)} ({macs(plain) / max(1, macs(small)):.1f}x fewer)")
    print(f"  sizes MB: dense SavedModel {size(paths['dense'])/1e6:.3f}, compacted {size(paths['compact'])/1e6:.3f}, "
          f"compacted+sparse {size(paths['compact_sparse'])/1e6:.3f}, compacted TFLite "
          f"{size(paths['compact_tflite'])/1e6:.3f} (TFLite sparsity: {tfl['sparsity']})")
    loaded = {k: tf.saved_model.load(paths[k]) for k in ("dense", "compact", "compact_sparse", "hand")}
    rng = np.random.default_rng(0)
    for batch_size in (1, 64, 1024):
        data = rng.random((batch_size,) + shape, dtype=np.float32)
        xt = tf.constant(data)
        run = {k: (lambda m=m: m.serve(xt).numpy()) for k, m in loaded.items()}
        run["compact_tflite"] = tflite_runner(paths["compact_tflite"], data)
        n = pairs if batch_size < 1024 else max(3, pairs // 3)
        cells = []
        for k in ("compact", "hand", "compact_sparse", "compact_tflite"):
            med, q1, q3, ta, _ = ratio(run[k], run["dense"], n)
            cells.append(f"{k} {1 / med:.2f}x ({ta * 1e3:.3f} ms; IQR of ratio {q1:.2f}-{q3:.2f})")
        med, _, _, _, _ = ratio(run["compact"], run["hand"], n)
        nothing, read = probe_functions(shape, data)
        floors = f"call {timed_median(nothing, n) * 1e3:.3f} ms, input read {timed_median(read, n) * 1e3:.3f} ms"
        print(f"  batch {batch_size:4d}: dense {timed_median(run['dense'], n) * 1e3:.3f} ms; "
              f"speed-up over dense: " + "; ".join(cells) +
              f"; compacted/hand-built time {med:.3f}; floors: {floors}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.models) - set(MODELS))
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {sorted(MODELS)}")
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}")
    work = tempfile.mkdtemp(prefix="sniptf-inference-")
    try:
        if "formats" in FLAGS.parts:
            for name in FLAGS.models:
                for sparsity in FLAGS.sparsities:
                    measure(name, float(sparsity), FLAGS.repeats, work)
        if "compaction" in FLAGS.parts:
            x, y = sniptf.data.load_numpy("mnist10k", "train")
            x = x.astype(np.float32)
            for name in ("lenet_300_100", "lenet5_caffe"):
                for criterion in FLAGS.compaction_criteria:
                    for sparsity in FLAGS.compaction_sparsities:
                        measure_compaction(name, criterion, float(sparsity), FLAGS.repeats, work, x, y)
            measure_compaction("mlp_4096", "snip", 0.99, FLAGS.repeats, work, x, y)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
