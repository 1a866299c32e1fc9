"""Serving a pruned model: file size and latency of the three export formats.

    python benchmarks/inference.py [--repeats=15] [--models=...] [--sparsities=...]

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
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import sniptf

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 15, "Interleaved pairs per ratio.", lower_bound=3)
flags.DEFINE_list("models", ["lenet_300_100", "lenet5_caffe", "mlp_4096", "vgg_like"],
                  "Models to measure.")
flags.DEFINE_list("sparsities", ["0.90", "0.95", "0.98", "0.99"], "Sparsities to measure.")


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


def tflite_runner(path, batch):
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], batch.shape)
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]

    def run():
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return run


def ratio(fn_a, fn_b, pairs):
    """Median and IQR of per-pair time ratios a/b over interleaved pairs, and the medians."""
    fn_a(), fn_b()
    a, b = [], []
    for i in range(pairs):
        for fn, sink in ((fn_a, a), (fn_b, b)) if i % 2 == 0 else ((fn_b, b), (fn_a, a)):
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    r = np.array(a) / np.array(b)
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return med, q1, q3, np.median(a), np.median(b)


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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.models) - set(MODELS))
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; choose from {sorted(MODELS)}")
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}")
    work = tempfile.mkdtemp(prefix="sniptf-inference-")
    try:
        for name in FLAGS.models:
            for sparsity in FLAGS.sparsities:
                measure(name, float(sparsity), FLAGS.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
