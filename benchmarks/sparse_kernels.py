"""What bounds the sparse SavedModel at batch 1: TensorFlow's sparse products alone.

    python benchmarks/sparse_kernels.py

The 99%-sparse 784->4096->4096 MLP's two big kernels (random, 1% kept), batch 1 and 64:
the two products with tf.sparse.sparse_dense_matmul on W with adjoint_a=True (as
sniptf.exporters.sparse_format serves them), on a SparseTensor of W^T (as it did before),
with gather + unsorted_segment_sum, and the dense products, each in one
tf.function; per-call medians over interleaved rounds (this VM's speed drifts).
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from sniptf.exporters import sparse_format


def interleaved_ms(fns, rounds=100):
    """Median ms per call of each function, called in turn each round."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def one_block(kernel):
    rows, cols = np.nonzero(kernel)
    return tf.SparseTensor(np.stack([rows, cols], 1).astype(np.int64), kernel[rows, cols],
                           kernel.shape)


def transposed_product(kernel):
    rows, cols = np.nonzero(kernel.T)
    sparse_t = tf.SparseTensor(np.stack([rows, cols], 1).astype(np.int64),
                               kernel.T[rows, cols], kernel.T.shape)
    return lambda x: tf.transpose(tf.sparse.sparse_dense_matmul(sparse_t, tf.transpose(x)))


def segment_product(kernel):
    rows, cols = np.nonzero(kernel)
    r, c = tf.constant(rows.astype(np.int32)), tf.constant(cols.astype(np.int32))
    v = tf.constant(kernel[rows, cols])
    return lambda x: tf.transpose(tf.math.unsorted_segment_sum(
        tf.gather(tf.transpose(x), r) * v[:, None], c, kernel.shape[1]))


def main():
    rng = np.random.default_rng(0)
    kernels = []
    for shape in ((784, 4096), (4096, 4096)):
        k = rng.normal(size=shape).astype(np.float32)
        k[rng.random(shape) > 0.01] = 0
        kernels.append(k)
    blocks = [sparse_format.sparse_blocks(k) for k in kernels]
    whole = [[one_block(k)] for k in kernels]
    transposed = [transposed_product(k) for k in kernels]
    segments = [segment_product(k) for k in kernels]
    dense = [tf.constant(k) for k in kernels]
    two = {
        f"sparse_dense_matmul, W adjoint_a, {len(blocks[1])} column blocks (served)": tf.function(
            lambda x: sparse_format.blocks_product(blocks[1], tf.nn.relu(
                sparse_format.blocks_product(blocks[0], x)))),
        "sparse_dense_matmul, W adjoint_a, one block": tf.function(
            lambda x: sparse_format.blocks_product(whole[1], tf.nn.relu(
                sparse_format.blocks_product(whole[0], x)))),
        "sparse_dense_matmul, W^T (before)": tf.function(
            lambda x: transposed[1](tf.nn.relu(transposed[0](x)))),
        "gather + unsorted_segment_sum": tf.function(lambda x: segments[1](tf.nn.relu(segments[0](x)))),
        "dense matmul": tf.function(lambda x: tf.matmul(tf.nn.relu(tf.matmul(x, dense[0])), dense[1])),
    }
    print(f"kept weights: {sum(int(np.count_nonzero(k)) for k in kernels)}; TF {tf.__version__}, "
          f"{os.cpu_count()} cores")
    for batch in (1, 64):
        x = tf.random.normal([batch, 784])
        times = interleaved_ms({name: (lambda fn=fn: fn(x).numpy()) for name, fn in two.items()})
        for name, ms in times.items():
            print(f"two products, batch {batch}, {name}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
