"""The search: metaparameters on their scales, and the Sobol points the trials take."""

import dataclasses
import math

from sniptf.studies.data_parallelism import sobol


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
        """Maps u in [0, 1) to the parameter's scale, as the authors' `metaparameters.py`
        does: `log` log-uniform from `low` (u = 0) to `high`; `reverse_log` log-uniform in
        1 − value, from `high` (u = 0: 1 − value smallest) down to `low`; `int` truncates
        `low + u·(high − low)`; `linear` is uniform."""
        if self.scale == "log":
            return float(10 ** (math.log10(self.low) + u * (math.log10(self.high) - math.log10(self.low))))
        if self.scale == "reverse_log":
            top, bottom = math.log10(1 - self.high), math.log10(1 - self.low)
            return float(1 - 10 ** (top + u * (bottom - top)))
        if self.scale == "int":
            return int(self.low + u * (self.high - self.low))
        return float(self.low + u * (self.high - self.low))


def sobol_points(space, n):
    """The first `n` points of the search, as dicts `{name: value}`, one Sobol
    dimension per `Param` in `space` order.

    The authors' sequence: Bratley & Fox's generator (`sobol`), skipping the
    all-zero point, mapped through each `Param.value`. For a log-scaled lr in
    [1e-4, 1] the first values are 0.01, 0.1, 0.001, 0.00316, 0.316, ...
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n to be an int >= 1. Received: n={n!r}")
    if not space:
        raise ValueError("Expected at least one Param. Received: space=[]")
    units = sobol.points(len(space), n)
    return [{p.name: p.value(float(u)) for p, u in zip(space, row)} for row in units]
