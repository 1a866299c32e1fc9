"""Orthogonal initializers for signal propagation at initialization.

* `"orthogonal"`: Keras's orthogonal initializer (dense kernels; a conv
  kernel is treated as a `[kh*kw*cin, cout]` matrix).
* `"delta_orthogonal"`: for conv kernels, every tap is zero except the centre
  one, which is an orthogonal `[cin, cout]` matrix (Xiao et al. 2018), so the
  convolution is an isometry at initialization; for 2-D (dense) kernels it is
  plain orthogonal. Needs `cin <= cout` for conv kernels.
* `"conv_orthogonal"`: the block-orthogonal construction of Xiao et al.
  (ICML 2018, Algorithm 2) for 2-D conv kernels: the kernel is built as a
  product of 2x2 kernels of complementary symmetric projections, then rotated
  by an orthogonal matrix, so that Σ over taps of K_tap·K_tapᵀ = I (the
  convolution is an isometry, with circular padding) with the energy spread
  over all taps rather than held in the centre one. This is what the signal
  propagation authors' conv networks start from: in their code
  (namhoonlee/spp-public, `spp/network.py`) an `orthogonal` init becomes
  `conv_orthogonal` for every 4-D weight, and stays `orthogonal` for dense
  ones. Delta-orthogonal puts all the energy in the centre tap instead.
  Needs `cin <= cout` and a square kernel.
"""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="sniptf")
class DeltaOrthogonal(keras.initializers.Initializer):
    """Delta-orthogonal conv kernels (orthogonal centre tap, zeros elsewhere).

    Args:
        gain: multiplies the orthogonal matrix (e.g. sqrt(2) for ReLU nets).
        seed: an int for reproducible draws.

    Raises:
        ValueError: at call time, for a conv kernel with `cin > cout` (no
            isometry exists then) or an even-sized kernel (no centre tap).
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = float(gain)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        orthogonal = keras.initializers.Orthogonal(gain=self.gain, seed=self.seed)
        if len(shape) == 2:
            return orthogonal(shape, dtype=dtype)
        if len(shape) < 3:
            raise ValueError(f"delta_orthogonal needs a kernel of rank >= 2. Received: shape={shape}")
        *taps, cin, cout = shape
        if cin > cout:
            raise ValueError(
                f"delta_orthogonal needs cin <= cout for a conv kernel (an orthogonal centre "
                f"tap cannot be an isometry otherwise). Received: shape={shape} (cin={cin}, "
                f"cout={cout}); use 'orthogonal' for this layer.")
        if any(t % 2 == 0 for t in taps):
            raise ValueError(
                f"delta_orthogonal needs odd kernel sizes (a centre tap). Received: shape={shape}")
        kernel = np.zeros(shape, np.float32)
        # Keras's orthogonal gives orthonormal rows when cin < cout
        kernel[tuple(t // 2 for t in taps)] = keras.ops.convert_to_numpy(orthogonal((cin, cout)))
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


def get(identifier):
    """A Keras initializer from a name, config or instance; knows `delta_orthogonal`."""
    if isinstance(identifier, str) and identifier == "delta_orthogonal":
        return DeltaOrthogonal()
    if isinstance(identifier, str) and identifier == "conv_orthogonal":
        return ConvOrthogonal()
    try:
        return keras.initializers.get(identifier)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Unknown initializer: {e} Expected a Keras initializer name (e.g. 'he_normal', "
            "'orthogonal'), 'delta_orthogonal', 'conv_orthogonal', a config or an instance. "
            f"Received: kernel_initializer={identifier!r}") from None


@keras.saving.register_keras_serializable(package="sniptf")
class ConvOrthogonal(keras.initializers.Initializer):
    """Block-orthogonal 2-D conv kernels (Xiao et al. 2018): Σ_taps K Kᵀ = I.

    Args:
        gain: multiplies the kernel (e.g. sqrt(2) for ReLU nets).
        seed: an int for reproducible draws.

    Raises:
        ValueError: at call time, for a kernel that is not `[k, k, cin, cout]`
            with `cin <= cout`.
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = float(gain)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) == 2:
            return keras.initializers.Orthogonal(gain=self.gain, seed=self.seed)(shape, dtype=dtype)
        if len(shape) != 4 or shape[0] != shape[1] or shape[2] > shape[3]:
            raise ValueError(
                "conv_orthogonal needs a square 2-D conv kernel [k, k, cin, cout] with cin <= cout "
                f"(no isometry exists otherwise). Received: shape={shape}; use 'orthogonal' for "
                "this layer.")
        size, cin, cout = shape[0], shape[2], shape[3]
        rng = np.random.default_rng(self.seed)
        kernel = _block_orthogonal(size, cout, rng)  # {(i, j): [cout, cout]}
        rotation = _orthogonal(cout, rng)[:cin]      # orthonormal rows
        out = np.zeros(shape, np.float64)
        for (i, j), tap in kernel.items():
            out[i, j] = rotation @ tap
        return keras.ops.convert_to_tensor((self.gain * out).astype(np.float32), dtype=dtype)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


def _orthogonal(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # uniform (Haar) orthogonal


def _projection(n, rng):
    """A random symmetric projection: onto a random subset of a random basis."""
    basis = _orthogonal(n, rng) * rng.integers(0, 2, n)[None, :]
    return basis @ basis.T


def _two_by_two(n, rng):
    """The 2x2 block-orthogonal kernel of two random projections P, Q:
    taps PQ, P(I-Q), (I-P)Q, (I-P)(I-Q)."""
    p, q = _projection(n, rng), _projection(n, rng)
    i = np.eye(n)
    return {(0, 0): p @ q, (0, 1): p @ (i - q), (1, 0): (i - p) @ q, (1, 1): (i - p) @ (i - q)}


def _convolve(a, b):
    """The 2-D convolution of two kernels of matrices (taps multiply as matrices)."""
    out = {}
    for (i1, j1), m1 in a.items():
        for (i2, j2), m2 in b.items():
            key = (i1 + i2, j1 + j2)
            out[key] = out.get(key, 0) + m1 @ m2
    return out


def _block_orthogonal(size, n, rng):
    if size == 1:
        return {(0, 0): np.eye(n)}
    kernel = _two_by_two(n, rng)
    for _ in range(size - 2):
        kernel = _convolve(kernel, _two_by_two(n, rng))
    return kernel
