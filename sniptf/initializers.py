"""Orthogonal initializers for signal propagation at initialization.

* `"orthogonal"`: Keras's orthogonal initializer (dense kernels; a conv
  kernel is treated as a `[kh*kw*cin, cout]` matrix).
* `"delta_orthogonal"`: for conv kernels, every tap is zero except the centre
  one, which is an orthogonal `[cin, cout]` matrix (Xiao et al. 2018), so the
  convolution is an isometry at initialization; for 2-D (dense) kernels it is
  plain orthogonal. Needs `cin <= cout` for conv kernels.
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
    try:
        return keras.initializers.get(identifier)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Unknown initializer: {e} Expected a Keras initializer name (e.g. 'he_normal', "
            "'orthogonal'), 'delta_orthogonal', a config or an instance. "
            f"Received: kernel_initializer={identifier!r}") from None
