"""The `sparse_saved_model` export format: kept values plus a compact index.

Every prunable weight of the stripped model that is at least half zeros is
stored as its kept values (float) and the smaller of two indexes, measured
per weight:

* a bit mask, one bit per entry (`np.packbits`), n/8 bytes;
* the flat positions of the kept entries in the narrowest unsigned type that
  holds n - 1 (uint8, uint16, uint32, else int64), nnz x itemsize bytes.

At 95% sparsity the bit mask is smaller (n/8 bytes vs 0.05n x 4 for uint32
positions), at 99% the positions are (0.01n x 4). Everything else is stored as
it is.

The SavedModel computes each layer with the dense kernel rebuilt once, when
it is loaded (a resource initializer fills variables of undefined shape, which
the file stores empty), or, for `Dense` layers on 2-D inputs where a
measurement at export time found it faster for a batch of `batch_size_hint`,
with `tf.sparse.sparse_dense_matmul` for batches up to the largest size at
which it was still faster by 10% (the dense kernel above that): the choice
follows what was measured on the exporting machine. Loading needs TensorFlow
only.
"""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from sniptf import _keras_compat
from sniptf import transform

_POSITION_TYPES = (np.uint8, np.uint16, np.uint32, np.int64)
# bit weights of a packed byte, most significant first (np.packbits); a list, not a
# tensor: creating a tensor at import would initialize TensorFlow before
# sniptf.distribute can split the CPU into logical devices
_BITS = [128, 64, 32, 16, 8, 4, 2, 1]


@dataclasses.dataclass
class Encoded:
    """One weight in the sparse format."""

    variable: object          # the stripped model's Keras variable
    shape: tuple
    values: tf.Variable       # the kept entries, in flat order
    index: tf.Variable        # packed bits, or flat positions
    index_kind: str           # "bits" or "positions"
    cache: tf.Variable        # the dense kernel, rebuilt when the SavedModel is loaded

    @property
    def stored_bytes(self):
        """Bytes the SavedModel stores for this weight: its kept values plus its index."""
        return int(self.values.shape.num_elements()) * self.values.dtype.size + \
            int(self.index.shape.num_elements()) * self.index.dtype.size


def _position_type(n):
    for dtype in _POSITION_TYPES:
        if n - 1 <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def encode(variable, name):
    """`Encoded` for a weight that is at least half zeros, else None."""
    w = variable.numpy()
    n = w.size
    positions = np.flatnonzero(w)
    if positions.size * 2 > n:
        return None
    bits_bytes = -(-n // 8)
    dtype = _position_type(n)
    if positions.size * np.dtype(dtype).itemsize < bits_bytes:
        index, kind = positions.astype(dtype), "positions"
    else:
        index, kind = np.packbits(w.reshape(-1) != 0), "bits"
    values = tf.Variable(w.reshape(-1)[positions], trainable=False, name=f"{name}_values")
    return Encoded(variable, tuple(w.shape), values,
                   tf.Variable(index, trainable=False, name=f"{name}_{kind}"), kind,
                   tf.Variable(tf.zeros([0], w.dtype), shape=tf.TensorShape(None),
                               trainable=False, name=f"{name}_cache"))


def _positions(e):
    """int64 flat positions of the kept entries (a graph computation)."""
    if e.index_kind == "positions":
        return tf.cast(e.index, tf.int64)
    n = int(np.prod(e.shape))
    bits = tf.bitwise.bitwise_and(tf.cast(e.index, tf.int32)[:, None],
                                  tf.constant(_BITS, tf.int32)) > 0
    return tf.where(tf.reshape(bits, [-1])[:n])[:, 0]


def rebuild(e):
    """The dense kernel from values and index (a graph computation)."""
    n = int(np.prod(e.shape))
    flat = tf.scatter_nd(_positions(e)[:, None], e.values, [n])
    return tf.reshape(flat, e.shape)


class _RebuildAtLoad(_keras_compat.TrackableResourceHooks):
    """Fills the caches when the SavedModel is loaded.

    A SavedModel runs its resources' initializers after it has restored the
    variables (how lookup tables are filled; tested here with
    `tf.saved_model.load`, not with TF Serving's C++ loader, which runs the
    same init op for tables), so the serving graph reads the caches with no
    check per call.
    The resource itself is an unused handle; only its initializer matters.
    """

    def __init__(self, caches):
        self._caches = caches
        super().__init__()

    def create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.bool, shape=[], shared_name="")

    def initialize(self):
        return self._caches.fill()


class Caches:
    """What is computed once, when the SavedModel is loaded: every encoded weight's
    dense kernel and, for Dense layers on the sparse path, the kept entries of
    each column block of the kernel (`column_blocks`) as (row, column) indices
    and values (variables of undefined shape, stored empty). The stored flat
    positions are row-major, so each block's entries are already in a
    SparseTensor's canonical order."""

    def __init__(self, encoded, sparse_layers):
        self.encoded = encoded
        self.sparse = [e for _, e in sparse_layers]
        self.blocks = [column_blocks(e.shape[1]) for e in self.sparse]
        self.kept = [[(tf.Variable(tf.zeros([0, 2], tf.int64), shape=tf.TensorShape(None),
                                   trainable=False, name="sparse_indices"),
                       tf.Variable(tf.zeros([0], e.values.dtype), shape=tf.TensorShape(None),
                                   trainable=False, name="sparse_values"))
                      for _ in blocks]
                     for e, blocks in zip(self.sparse, self.blocks)]
        self.at_load = _RebuildAtLoad(self)

    def tracked(self):
        """The cache variables the SavedModel must track (filled at load, never saved)."""
        return [e.cache for e in self.encoded] + [v for layer in self.kept for pair in layer
                                                  for v in pair]

    def fill(self):
        """Assigns every cache from the stored values and indexes (a graph computation)."""
        updates = [e.cache.assign(rebuild(e)) for e in self.encoded]
        for e, blocks, kept in zip(self.sparse, self.blocks, self.kept):
            p = _positions(e)
            rows, cols = p // e.shape[1], p % e.shape[1]
            for (lo, hi), (indices, values) in zip(blocks, kept):
                inside = tf.where(tf.logical_and(cols >= lo, cols < hi))[:, 0]
                updates.append(indices.assign(
                    tf.stack([tf.gather(rows, inside), tf.gather(cols, inside) - lo], 1)))
                updates.append(values.assign(tf.gather(e.values, inside)))
        with tf.control_dependencies(updates):
            return tf.constant(True)

    def read(self):
        """`(dense kernels, sparse kernels)`: graph tensors, and for each sparse-path
        layer a list of SparseTensors, one per column block."""
        kernels = [tf.reshape(e.cache.read_value(), e.shape) for e in self.encoded]
        sparse = [[tf.SparseTensor(tf.reshape(i.read_value(), [-1, 2]), tf.reshape(v.read_value(), [-1]),
                                   [e.shape[0], hi - lo])
                   for (lo, hi), (i, v) in zip(blocks, kept)]
                  for e, blocks, kept in zip(self.sparse, self.blocks, self.kept)]
        return kernels, sparse


# --- the sparse compute path for Dense layers --------------------------------

def column_blocks(width, min_width=128):
    """`(start, stop)` column ranges, one per CPU core of the exporting machine
    (at least `min_width` wide): TensorFlow runs the blocks' products side by
    side. On 2 cores, for the 99%-sparse 4096-wide MLP's kernels
    (benchmarks/sparse_kernels.py): 1.75-1.85x faster at batch 64, where it turns
    the sparse product from slower than dense to faster; no change at batch 1."""
    count = max(1, min(os.cpu_count() or 1, width // min_width))
    edges = np.linspace(0, width, count + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def sparse_blocks(kernel):
    """`column_blocks` SparseTensors of a numpy kernel (in, out), canonical order."""
    blocks = []
    for lo, hi in column_blocks(kernel.shape[1]):
        part = kernel[:, lo:hi]
        rows, cols = np.nonzero(part)
        blocks.append(tf.SparseTensor(np.stack([rows, cols], 1).astype(np.int64), part[rows, cols],
                                      part.shape))
    return blocks


def _sparse_product(sparse_kernel, x):
    """x @ W for W a SparseTensor: (W^T x^T)^T with `adjoint_a=True`. Measured on
    tf-cpu 2.21 (4096x4096, 1% and 5% kept): 1.1-1.7x faster at batch 1 than a
    SparseTensor of W^T (benchmarks/sparse_kernels.py; runs differ), and transposing x first is 2-5x
    faster than `adjoint_b=True` for batches of 16 or more."""
    return tf.transpose(tf.sparse.sparse_dense_matmul(sparse_kernel, tf.transpose(x),
                                                      adjoint_a=True))


def blocks_product(blocks, x):
    """x @ W from W's column blocks (SparseTensors)."""
    if len(blocks) == 1:
        return _sparse_product(blocks[0], x)
    return tf.concat([_sparse_product(b, x) for b in blocks], axis=1)


def crossover_batch(kernel, batch_size_hint, max_batch=256):
    """The largest batch (hint, 2x hint, ... up to max_batch) at which sparse matmul
    beat dense by 10% on this machine (median over interleaved pairs of single
    calls), or 0 if it did not at the hint."""
    blocks = sparse_blocks(kernel)
    dense = tf.constant(kernel)
    dense_fn = tf.function(lambda x: tf.matmul(x, dense))
    sparse_fn = tf.function(lambda x: blocks_product(blocks, x))
    best, batch = 0, batch_size_hint
    while batch <= max_batch:
        x = tf.random.normal([batch, kernel.shape[0]])
        if _median_ratio(lambda: sparse_fn(x).numpy(), lambda: dense_fn(x).numpy()) < 0.9:
            best, batch = batch, batch * 2
        else:
            break
    return best


def _median_ratio(fn_a, fn_b, pairs=15):
    """Median over interleaved pairs of time(fn_a) / time(fn_b): robust to a machine
    whose speed drifts while it is measured."""
    fn_a(), fn_b()
    ratios = []
    for i in range(pairs):
        times = {}
        for name, fn in (("a", fn_a), ("b", fn_b)) if i % 2 == 0 else (("b", fn_b), ("a", fn_a)):
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        ratios.append(times["a"] / times["b"])
    return float(np.median(ratios))


def sparse_dense_call(layer, crossover, kernel, blocks):
    """A `call` for a Dense layer: sparse matmul for 2-D batches <= crossover, the
    dense `kernel` otherwise (graph tensors of the serving function; `blocks`
    are the kernel's column blocks as SparseTensors)."""

    def call(inputs, training=None):
        del training
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank != 2:
            y = tf.tensordot(x, kernel, [[x.shape.rank - 1], [0]])
        else:
            y = tf.cond(tf.shape(x)[0] <= crossover, lambda: blocks_product(blocks, x),
                        lambda: tf.matmul(x, kernel))
        if layer.use_bias:
            y = y + layer.bias
        return layer.activation(y) if layer.activation is not None else y

    return call


def dense_layers_with(plain, encoded):
    """`(layer, Encoded)` for the plain model's Dense layers whose kernel is encoded."""
    by_var = {id(e.variable): e for e in encoded}
    found = []
    for _, layer in transform.walk_layers(plain):
        if type(layer) is keras.layers.Dense and layer.built and id(layer.kernel) in by_var:
            found.append((layer, by_var[id(layer.kernel)]))
    return found
