"""The search: metaparameters on their scales, and the Sobol points the trials take."""

import dataclasses
import math

from scipy.stats import qmc


SCALES = ("log", "reverse_log", "linear", "int")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched metaparameter: `low`..`high` on `scale`."""

    name: str
    low: float
    high: float
    scale: str = "log"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Unknown scale. Expected one of {SCALES}. Received: scale={self.scale!r}")
        if not self.low < self.high:
            raise ValueError(f"Expected low < high. Received: low={self.low!r}, high={self.high!r}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"A log scale needs low > 0. Received: low={self.low!r}")
        if self.scale == "reverse_log" and not self.high < 1:
            raise ValueError(f"A reverse_log scale needs high < 1 (log-uniform in 1 - value). "
                             f"Received: high={self.high!r}")

    def value(self, u):
        """Maps u in [0, 1) to the parameter's scale."""
        if self.scale == "log":
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        if self.scale == "reverse_log":
            a, b = math.log(1 - self.low), math.log(1 - self.high)
            return float(1 - math.exp(a + u * (b - a)))
        if self.scale == "int":
            return int(min(self.high, math.floor(self.low + u * (self.high - self.low + 1))))
        return float(self.low + u * (self.high - self.low))


def sobol_points(space, n):
    """The first `n` points of the search, as dicts `{name: value}`.

    The unscrambled Sobol sequence of `scipy.stats.qmc` in `len(space)`
    dimensions, skipping its first (all-zero) point, as the authors do: for a
    log-scaled lr in [1e-4, 1] the first values are 0.01, 0.1, 0.001,
    0.00316, 0.316, ...
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n to be an int >= 1. Received: n={n!r}")
    if not space:
        raise ValueError("Expected at least one Param. Received: space=[]")
    sampler = qmc.Sobol(d=len(space), scramble=False)
    sampler.fast_forward(1)
    # Sobol wants powers of two; take the first n of the next power
    units = sampler.random(2 ** math.ceil(math.log2(n)))[:n] if n > 1 else sampler.random(1)
    return [{p.name: p.value(float(u)) for p, u in zip(space, row)} for row in units]
