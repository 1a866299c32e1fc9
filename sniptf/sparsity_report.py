"""`sparsity`: how many weights each layer keeps; `mask_digest`: are two masks equal."""

import dataclasses
import hashlib

import numpy as np

from sniptf import structure
from sniptf import transform


@dataclasses.dataclass(frozen=True)
class Count:
    """Kept and total prunable weights of one weight tensor, layer or model."""

    name: str
    kept: int
    total: int

    @property
    def kept_fraction(self):
        """Kept / total (0 for an empty count)."""
        return self.kept / self.total if self.total else 0.0

    @property
    def sparsity(self):
        """1 − kept fraction."""
        return 1.0 - self.kept_fraction


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per weight tensor, per layer and total counts of kept weights.

    `weights`, `layers` and `total` count the covered weights: those a mask
    (or, in a stripped model, a registered layer) covers. `uncovered` lists
    the model's other matrix weights (rank >= 2), which pruning leaves dense;
    `covered` and `all_weights` compare the two. `structure` is what the masks
    were made with (`sniptf.prune(..., structure=...)`; several, comma-joined,
    if layers differ), `broken` the masked weights whose mask no longer has
    that pattern (changed since), `padded` those with a short last group (N:M,
    blocks: the input size is not a multiple of the group).
    """

    weights: tuple
    layers: tuple
    total: Count
    uncovered: tuple = ()
    structure: str = "unstructured"
    broken: tuple = ()
    padded: tuple = ()

    @property
    def covered(self):
        """Prunable weights covered by masks (= `total.total`)."""
        return self.total.total

    @property
    def all_weights(self):
        """Covered plus uncovered matrix weights."""
        return self.total.total + sum(c.total for c in self.uncovered)

    @property
    def kept(self):
        """Weights kept over every masked weight."""
        return self.total.kept

    @property
    def sparsity(self):
        """1 − kept fraction."""
        return self.total.sparsity

    def to_dict(self):
        """The report as plain JSON-ready dicts (per weight, per layer, total, uncovered)."""
        row = lambda c: {"name": c.name, "kept": c.kept, "total": c.total,
                         "kept_fraction": c.kept_fraction, "sparsity": c.sparsity}
        return {"weights": [row(c) for c in self.weights],
                "layers": [row(c) for c in self.layers], "total": row(self.total),
                "uncovered": [row(c) for c in self.uncovered],
                "covered": self.covered, "all_weights": self.all_weights,
                "structure": self.structure, "broken": list(self.broken), "padded": list(self.padded)}

    def __str__(self):
        width = max(len(c.name) for c in self.layers + (self.total,))
        lines = [f"{'layer':<{width}}  {'kept':>10}  {'total':>10}  {'sparsity':>8}"]
        for c in self.layers + (self.total,):
            lines.append(f"{c.name:<{width}}  {c.kept:>10}  {c.total:>10}  {c.sparsity:>8.2%}")
        if self.uncovered:
            lines.append(f"covered: {self.covered:,} of {self.all_weights:,} matrix weights "
                         f"({self.covered / self.all_weights:.1%}); not covered (left dense):")
            lines.extend(f"  {c.name}  {c.total:,}" for c in self.uncovered)
        if self.structure != "unstructured":
            holds = f"does not hold on {', '.join(self.broken)}" if self.broken else "holds on every masked weight"
            short = f"; a short last group (padded) in {', '.join(self.padded)}" if self.padded else ""
            lines.append(f"structure: {self.structure} ({holds}{short})")
        return "\n".join(lines)


def sparsity(model):
    """Counts the kept prunable weights of a model, wrapped or plain.

    A `MaskedLayer` counts its mask's ones; a plain prunable layer (e.g. after
    `strip`) counts its non-zero prunable weights. Biases count only where
    they are masked. Matrix weights that nothing covers are listed apart
    (`.uncovered`), never silently left out.

    Returns:
        A `SparsityReport` with `.weights`, `.layers` (each a `Count` with
        `kept`, `total`, `kept_fraction`, `sparsity`), `.total`, and
        `.uncovered`, `.covered`, `.all_weights`.

    Raises:
        ValueError: the model has no prunable layer.

    Example:

    ```python
    report = sniptf.sparsity(pruned)
    print(report)            # a table
    report.total.sparsity    # e.g. 0.95
    ```
    """
    rows = [(e.key, e.layer_key, int(np.count_nonzero(e.mask.numpy())),
             int(np.prod(e.mask.shape))) for e in transform.masked_entries(model)]
    for layer_key, key, var in transform.plain_prunable_weights(model):
        rows.append((key, layer_key, int(np.count_nonzero(var.numpy())), int(np.prod(var.shape))))
    if not rows:
        raise ValueError(
            f"Model '{model.name}' has no prunable layer to report on.")
    weights = tuple(Count(k, kept, total) for k, _, kept, total in rows)
    per_layer = {}
    for _, layer, kept, total in rows:
        a, b = per_layer.get(layer, (0, 0))
        per_layer[layer] = (a + kept, b + total)
    layers = tuple(Count(n, a, b) for n, (a, b) in per_layer.items())
    total = Count("total", sum(c.kept for c in weights), sum(c.total for c in weights))
    uncovered = tuple(Count(path, int(np.count_nonzero(v.numpy())), int(np.prod(v.shape)))
                      for path, v in transform.uncovered_weights(model))
    return SparsityReport(weights, layers, total, uncovered, *_structure(transform.masked_entries(model)))


def _structure(entries):
    """(structure, broken, padded) of the masked weights (`sniptf/structure.py`)."""
    labels = list(dict.fromkeys(getattr(e.layer, "structure", "unstructured") for e in entries)) or ["unstructured"]
    broken, padded = [], []
    for e in entries:
        shape = structure.parse(getattr(e.layer, "structure", "unstructured"))
        if not shape.structured:
            continue
        if not structure.pattern_holds(shape, e, transform.mask_bits(e)):
            broken.append(e.key)
        if shape.kind in ("nm", "blocks") and structure.padded_kernels([e], shape.m):
            padded.append(e.key)
    return ", ".join(labels), tuple(broken), tuple(padded)


def mask_digest(model):
    """SHA-256 of every mask in model order: equal digests, equal masks.

    Cheap to compare across replicas, workers and resumed runs.
    """
    h = hashlib.sha256()
    for e in transform.masked_entries(model):
        h.update(e.key.encode())
        h.update(np.packbits(e.mask.numpy().astype(bool)).tobytes())
    return h.hexdigest()
