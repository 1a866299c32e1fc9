"""What structured sparsity buys on stock runtimes, side by side with the dense model.

    python benchmarks/structured.py [--repeats=5] [--nets=mlp4096,lenet5_caffe] [--batches=1,64,1024]

For a 4096-4096-4096-10 MLP (4096 inputs) and LeNet-5-Caffe, pruned by SNIP on random
data of the input shape (the criterion does not change what a layout costs):
- dense; unstructured at 90% and at 50% kept-count twins of the structured masks;
  2:4 (50%); blocks:4 at 90%; channels at 50% and 75% of the weights removed, then
  `sniptf.compact` (a smaller dense model);
- stock TensorFlow (a `tf.function` of the stripped or compacted Keras model) and
  TFLite (`sniptf.export(..., format="tflite")`, the converter's sparsity encoding;
  the interpreter with 2 threads);
- at each batch size: the median over `--repeats` interleaved pairs of the variant's
  time ÷ the dense model's on the same runtime, and both medians;
- the .tflite sizes and how each sparse weight is stored (`export_info["sparse_tensors"]`:
  blocks 1x4 read as they are by the block-sparse FullyConnected, or densified at load);
- for channels, the FLOP ratio's ideal (dense multiply-adds ÷ compacted) beside the
  measured speed-up.
Goals (issue 39): channels compacted >= 0.8 x its FLOP ideal on stock TF at batch 64;
blocks:4 at 90% through TFLite faster than unstructured at 90% at batch 1. 2:4 has no
CPU kernel in TF or TFLite (its speed needs cuSPARSELt / TensorRT on a sparse tensor
core GPU): its size is printed, its time only to show it runs as dense.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import sniptf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import ratio  # noqa: E402
from _timing import tflite_runner  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Interleaved pairs per ratio.", lower_bound=3)
flags.DEFINE_list("nets", ["mlp4096", "lenet5_caffe"], "Nets: mlp4096, lenet5_caffe.")
flags.DEFINE_list("batches", ["1", "64", "1024"], "Batch sizes.")

# name: (structure, kappa, compacted)
VARIANTS = {
    "unstructured 90%": ("unstructured", 0.1, False),
    "blocks:4 90%": ("blocks:4", 0.1, False),
    "unstructured 50%": ("unstructured", 0.5, False),
    "2:4": ("2:4", None, False),
    "channels 50% compacted": ("channels", 0.5, True),
    "channels 75% compacted": ("channels", 0.25, True),
}


def _net(name):
    keras.utils.set_random_seed(0)
    if name == "lenet5_caffe":
        return sniptf.models.get("lenet5_caffe", (28, 28, 1), 10), (28, 28, 1)
    x = keras.Input((4096,))
    h = keras.layers.Dense(4096, activation="relu", name="fc1")(x)
    h = keras.layers.Dense(4096, activation="relu", name="fc2")(h)
    h = keras.layers.Dense(4096, activation="relu", name="fc3")(h)
    return keras.Model(x, keras.layers.Dense(10, name="out")(h), name="mlp4096"), (4096,)


def multiply_adds(model, shape):
    """Multiply-adds of one example through the model's Dense and Conv layers."""
    total = 0
    probe = keras.Model(model.inputs, [l.output for l in model.layers if l.weights]) \
        if any(l.weights for l in model.layers) else None
    outputs = probe(np.zeros((1,) + shape, np.float32)) if probe else []
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for layer, out in zip([l for l in model.layers if l.weights], outputs):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        spatial = int(np.prod(out.shape[1:-1])) if len(out.shape) > 2 else 1
        total += int(np.prod(kernel.shape)) * spatial
    return total


def _tf_runner(model, batch):
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.constant(batch)
    return lambda: fn(x).numpy()


def measure(name, batches, repeats, work):
    dense, shape = _net(name)
    rng = np.random.default_rng(0)
    x = rng.random((16,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, 16)
    models = {"dense": dense}
    infos = {}
    for variant, (structure, kappa, compacted) in VARIANTS.items():
        pruned = sniptf.prune(dense, (x, y), kappa=kappa, structure=structure)
        models[variant] = sniptf.compact(pruned) if compacted else sniptf.strip(pruned)
        path = os.path.join(work, f"{name}_{len(infos)}.tflite")
        infos[variant] = sniptf.export(pruned, path, format="tflite", compact=compacted).export_info
        infos[variant]["path"] = path
    path = os.path.join(work, f"{name}_dense.tflite")
    infos["dense"] = dict(sniptf.export(dense, path, format="tflite").export_info, path=path)
    flops = {k: multiply_adds(m, shape) for k, m in models.items()}
    print(f"\n{name}: {dense.count_params():,} parameters, {flops['dense']:,} multiply-adds per example")
    print(f"  {'variant':24s} {'params':>11s} {'FLOP ideal':>10s} {'tflite MB':>9s}  sparse weights in the .tflite")
    for k, m in models.items():
        layouts = sorted(set(infos[k]["sparse_tensors"].values())) or ["none"]
        print(f"  {k:24s} {m.count_params():11,d} {flops['dense'] / flops[k]:9.2f}x "
              f"{infos[k]['bytes'] / 1e6:9.3f}  {', '.join(layouts)} ({len(infos[k]['sparse_tensors'])} tensors)")
    for batch_size in batches:
        batch = rng.random((batch_size,) + shape, dtype=np.float32)
        runners = {k: (_tf_runner(m, batch), tflite_runner(infos[k]["path"], batch)) for k, m in models.items()}
        print(f"  batch {batch_size}: time / dense on the same runtime "
              f"(median of {repeats} pairs; ms variant vs dense)")
        for k in VARIANTS:
            cells = []
            for i, runtime in enumerate(("TF", "TFLite")):
                med, q1, q3, ta, tb = ratio(runners[k][i], runners["dense"][i], repeats)
                cells.append(f"{runtime} {med:.3f} ({ta * 1e3:.2f} vs {tb * 1e3:.2f})")
            print(f"    {k:24s} " + "   ".join(cells), flush=True)
        tf_blocks = ratio(runners["blocks:4 90%"][1], runners["unstructured 90%"][1], repeats)
        print(f"    TFLite blocks:4 90% / unstructured 90%: {tf_blocks[0]:.3f} "
              f"({tf_blocks[3] * 1e3:.2f} vs {tf_blocks[4] * 1e3:.2f} ms)", flush=True)


def main(argv):
    del argv
    print(f"structured sparsity on stock runtimes; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs; medians of {FLAGS.repeats} interleaved pairs")
    with tempfile.TemporaryDirectory() as work:
        for name in FLAGS.nets:
            measure(name, [int(b) for b in FLAGS.batches], FLAGS.repeats, work)


if __name__ == "__main__":
    app.run(main)
