"""Structured sparsity at initialization: which weights are kept or removed together.

`sniptf.prune(..., structure=...)` takes, for every criterion:
- `"unstructured"` (default): each weight on its own.
- `"N:M"` (e.g. `"2:4"`): in each group of M consecutive weights along a
  kernel's input (reduction) axis exactly the N best-scored are kept — Dense
  `(in, out)`: `kernel[i*M:(i+1)*M, j]`; Conv `(h, w, in, out)`: consecutive in
  the flattened `(h, w, in)` order; a depthwise kernel `(h, w, in, mult)`: in the
  flattened `(h, w)` of each channel. Sparsity is 1 − N/M: `kappa` is None or
  N/M, and `scope` does not apply. A kernel whose input size is not a multiple
  of M has a shorter last group, padded: it keeps min(N, its size) (the layout
  a runtime pads the reduction axis to); the report names those kernels.
- `"blocks:K"` (e.g. `"blocks:4"`): the same groups of K kept or removed whole,
  a block scored by the sum of its weights' scores; the top blocks over all
  kernels (`scope="global"`) or per kernel (`"layerwise"`); `kappa` is the
  fraction of weights kept, rounded to whole blocks. TFLite's block-sparse
  FullyConnected reads this 1×K layout.
- `"channels"`: whole output units (a Dense unit, a conv filter, an embedding
  column) kept or removed: its kernel column and its bias (masked for this);
  a following BatchNormalization's entries go with it in `sniptf.compact`, which
  then gives the smaller dense model with `strip(pruned)`'s outputs. A unit is
  scored by the mean of its weights' scores (its fan-in's: see
  `CHANNEL_SCORE`); units are taken best first until `kappa` of the weights of
  these layers are kept (`"layerwise"`: `kappa` of each layer's units). The
  output layer's units are never removed; `min_kept_per_layer` counts units.
  Masked weights of other layers (recurrent cells, attention's EinsumDense,
  custom layers) stay dense and are named in the report.

`parse` checks a spelling once; `Structure.select` makes the masks from the
criterion's scores; `pattern_holds` checks a mask against a structure (the
report and the tests use it).
"""

import dataclasses
import math
import re

import keras
import numpy as np

from sniptf import _keras_compat
from sniptf import selection
from sniptf.masked_layer import MaskedModel

KINDS = ("unstructured", "N:M", "blocks:K", "channels")
UNSTRUCTURED = "unstructured"

# How a unit's weights' scores add up to the unit's: "mean" (over its fan-in) or "sum".
# A sum favours units of wide fan-in (LeNet-300-100's fc1 units have 784 weights, fc3's
# 100), so a global top-k of sums empties the narrow layers first.
CHANNEL_SCORE = "mean"

_UNIT_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                keras.layers.Embedding)
_UNIT_WEIGHTS = {"kernel", "embeddings"}


def _error(structure, why):
    return ValueError(f"{why} Use 'unstructured', 'N:M' with 0 < N < M (e.g. '2:4'), 'blocks:K' with "
                      f"K >= 2 (e.g. 'blocks:4') or 'channels'. Received: structure={structure!r}")


@dataclasses.dataclass(frozen=True)
class Structure:
    """A parsed structure: `kind` one of "unstructured", "nm", "blocks", "channels";
    `n`, `m` for N:M; `m` the block size K for blocks."""

    kind: str
    n: int = 0
    m: int = 0

    def __str__(self):
        return {"nm": f"{self.n}:{self.m}", "blocks": f"blocks:{self.m}"}.get(self.kind, self.kind)

    @property
    def structured(self):
        return self.kind != UNSTRUCTURED

    def check_kappa(self, kappa):
        """`kappa` as this structure takes it: for N:M None or N/M (returned as N/M);
        otherwise as `selection.check_kappa`."""
        if self.kind == "nm":
            if kappa is None or (isinstance(kappa, float) and math.isclose(kappa, self.n / self.m, rel_tol=1e-9)):
                return self.n / self.m
            raise ValueError(f"structure={str(self)!r} keeps exactly {self.n} of every {self.m} weights: "
                             f"kappa must be None or {self.n}/{self.m} = {self.n / self.m:g}. "
                             f"Received: kappa={kappa!r} with structure={str(self)!r}")
        if kappa is None:
            raise ValueError(f"kappa=None is for an N:M structure (its sparsity is fixed). "
                             f"Received: kappa=None with structure={str(self)!r}")
        return selection.check_kappa(kappa)

    def check_scope(self, scope):
        selection.check_scope(scope)
        if self.structured and scope not in ("global", "layerwise"):
            raise ValueError(f"scope={scope!r} splits a count per weight tensor by its shape; with "
                             f"structure={str(self)!r} use scope='global' or 'layerwise'. "
                             f"Received: scope={scope!r} with structure={str(self)!r}")
        return scope

    # the masks ---------------------------------------------------------------

    def select(self, entries, scores, count, *, scope, seed, min_kept_per_layer, model=None):
        """Masks (a dict by entry key) keeping `count` weights (in the structure's
        units; ignored by N:M) from `scores` (key -> array or callable)."""
        get = {k: (s if callable(s) else (lambda s=s: s)) for k, s in scores.items()}
        if self.kind == "nm":
            return {e.key: _nm_mask(_as_matrix(e, get[e.key]()), self.n, self.m).reshape(e.mask.shape)
                    for e in entries}
        if self.kind == "blocks":
            return self._blocks(entries, get, count, scope, seed, min_kept_per_layer)
        return self._channels(entries, get, count, scope, seed, min_kept_per_layer, model)

    def _blocks(self, entries, get, count, scope, seed, min_kept):
        k = self.m
        block_scores = [_block_sums(_as_matrix(e, get[e.key]()), k) for e in entries]
        blocks = max(1, min(int(round(count / k)), sum(b.size for b in block_scores)))
        kept = selection.select_count(block_scores, blocks, scope=scope, seed=seed, min_kept_per_layer=min_kept)
        out = {}
        for e, chosen in zip(entries, kept):
            rows, _ = _matrix_shape(e)
            out[e.key] = np.repeat(chosen, k, axis=0)[:rows].reshape(e.mask.shape)
        return out

    def counted(self, entries):
        """The entries whose weights `kappa` counts: all of them, or for `"channels"` those
        of Dense, Conv and Embedding layers (none: a ValueError)."""
        if self.kind != "channels":
            return entries
        units = unit_entries(entries)
        if not units:
            raise ValueError("structure='channels' removes output units of Dense, Conv and Embedding "
                             "layers; this model has none to prune. Use 'unstructured', 'N:M' or "
                             "'blocks:K'. Received: structure='channels'")
        return units

    def check_model(self, model):
        """`"channels"` finds the output layer in the layer graph: a subclassed model is refused."""
        if self.kind == "channels" and not _keras_compat.has_layer_graph(model):
            raise ValueError(f"structure='channels' never removes the output layer's units, which it finds "
                             f"in the layer graph; model '{model.name}' is subclassed and has none. Build it "
                             f"as a Functional or Sequential model, or use 'N:M' or 'blocks:K'. "
                             f"Received: structure='channels' with a subclassed model")

    def _channels(self, entries, get, count, scope, seed, min_kept, model):
        units = self.counted(entries)
        fixed = output_layers(model) if model is not None else set()
        out = {e.key: np.ones(e.mask.shape, bool) for e in entries}  # other weights stay dense
        layers = {}
        for e in units:
            layers.setdefault(e.layer_key, []).append(e)
        scored = []  # (layer key, unit scores, weights per unit)
        for key, group in layers.items():
            kernel = next(e for e in group if e.path.split(".")[-1] in _UNIT_WEIGHTS)
            matrix = _as_matrix(kernel, get[kernel.key]())
            score = matrix.sum(axis=0) / (matrix.shape[0] if CHANNEL_SCORE == "mean" else 1)
            for e in group:
                if e is not kernel:  # a masked bias scores with its unit
                    score = score + np.ravel(get[e.key]()) / (matrix.shape[0] if CHANNEL_SCORE == "mean" else 1)
            per_unit = sum(int(np.prod(e.mask.shape)) for e in group) // matrix.shape[1]
            scored.append((key, score.astype(np.float64), per_unit))
        keep = _choose_units(scored, count, scope, min_kept, fixed)
        for key, chosen in keep.items():
            for e in layers[key]:
                mask = np.broadcast_to(chosen, _matrix_shape(e)[:1] + chosen.shape)
                out[e.key] = np.ascontiguousarray(mask).reshape(e.mask.shape)
        return out


def parse(structure):
    """A `Structure` from its spelling; a ValueError naming `structure` otherwise."""
    if isinstance(structure, Structure):
        return structure
    if not isinstance(structure, str):
        raise _error(structure, "Expected a string.")
    text = structure.strip().lower()
    if text in (UNSTRUCTURED, "channels"):
        return Structure(text)
    found = re.fullmatch(r"(\d+):(\d+)", text)
    if found:
        n, m = int(found.group(1)), int(found.group(2))
        if not 0 < n < m:
            raise _error(structure, f"N:M keeps N of every M weights, 0 < N < M; {n}:{m} does not.")
        return Structure("nm", n, m)
    found = re.fullmatch(r"blocks:(\d+)", text)
    if found:
        k = int(found.group(1))
        if k < 2:
            raise _error(structure, f"A block holds K >= 2 weights; K={k} does not.")
        return Structure("blocks", 0, k)
    raise _error(structure, "Not a structure sniptf knows.")


# the layout of a kernel: reduction axis first ------------------------------------

def _matrix_shape(entry):
    """(rows, columns) of an entry's weight with the reduction along the rows: a depthwise
    kernel (h, w, in, mult) is (h·w, in·mult); a bias (1, units); any other tensor (its
    axes but the last, the last)."""
    shape = tuple(int(d) for d in entry.mask.shape)
    if len(shape) <= 1:
        return (1, shape[0] if shape else 1)
    if entry.path.split(".")[-1] == "depthwise_kernel" and len(shape) >= 3:
        return (int(np.prod(shape[:-2])), shape[-2] * shape[-1])
    return (int(np.prod(shape[:-1])), shape[-1])


def _as_matrix(entry, array):
    return np.asarray(array).reshape(_matrix_shape(entry))


def _groups(matrix, m, fill):
    """(groups, m, columns): the matrix's rows in groups of m, the last padded with `fill`."""
    rows, cols = matrix.shape
    pad = -rows % m
    if pad:
        matrix = np.concatenate([matrix, np.full((pad, cols), fill, matrix.dtype)])
    return matrix.reshape(-1, m, cols)


def _nm_mask(scores, n, m):
    """The N best of every M along the rows (ties: the first); a short last group keeps min(N, size)."""
    rows = scores.shape[0]
    grouped = _groups(scores.astype(np.float64), m, -np.inf)
    order = np.argsort(-grouped, axis=1, kind="stable")[:, :n, :]
    mask = np.zeros(grouped.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(-1, scores.shape[1])[:rows]


def _block_sums(scores, k):
    return _groups(scores.astype(np.float64), k, 0.0).sum(axis=1)


def padded_kernels(entries, m):
    """Keys of the entries whose reduction size is not a multiple of `m` (a short last group)."""
    return [e.key for e in entries if len(e.mask.shape) >= 2 and _matrix_shape(e)[0] % m]


# channels -----------------------------------------------------------------------

def unit_entries(entries):
    """The entries `"channels"` prunes: kernels (and masked biases) of Dense, Conv and
    Embedding layers."""
    return [e for e in entries if isinstance(e.layer.layer, _UNIT_LAYERS)
            and (e.path.split(".")[-1] in _UNIT_WEIGHTS or e.path == "bias")]


def output_layers(model):
    """Layer keys of the masked layers whose output reaches a model output through
    weightless layers only (Activation, Softmax, Reshape, ...): the units `"channels"`
    never removes. Nested models are followed to their own output layers."""
    found = set()

    def visit(graph, prefix):
        producers = {}
        for layer in graph.layers:
            for inputs, outputs in _keras_compat.call_tensors(layer):
                producers.update({id(t): (layer, inputs) for t in keras.tree.flatten(outputs)})
        stack, seen = list(keras.tree.flatten(graph.outputs)), set()
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen or id(tensor) not in producers:
                continue
            seen.add(id(tensor))
            layer, inputs = producers[id(tensor)]
            if _keras_compat.has_layer_graph(layer) or isinstance(layer, MaskedModel):
                visit(layer, prefix + (layer.name,))
            elif layer.weights:
                found.add("/".join(prefix + (layer.name,)))
            else:
                stack.extend(keras.tree.flatten(inputs))

    if _keras_compat.has_layer_graph(model):
        visit(model, ())
    return found


def _choose_units(scored, count, scope, min_kept, fixed):
    """{layer key: boolean per unit}: the output layers' units all, each layer's top
    `min_kept` units, then the best units until `count` weights are kept (globally, or
    the same fraction of each layer's units with `"layerwise"`)."""
    keep = {key: np.zeros(score.size, bool) for key, score, _ in scored}
    budget = count
    for key, score, per_unit in scored:
        if key in fixed:
            keep[key][:] = True
        elif min_kept:
            keep[key][np.argsort(-score, kind="stable")[:min(min_kept, score.size)]] = True
        budget -= int(keep[key].sum()) * per_unit
    if scope == "layerwise":
        total = sum(score.size * width for _, score, width in scored)
        for key, score, per_unit in scored:
            if key in fixed:
                continue
            want = max(int(round(count / total * score.size)), int(keep[key].sum()), 1)
            order = [i for i in np.argsort(-score, kind="stable") if not keep[key][i]]
            keep[key][order[:want - int(keep[key].sum())]] = True
        return keep
    candidates = sorted(((-s, i, j) for i, (key, score, _) in enumerate(scored) if key not in fixed
                         for j, s in enumerate(score) if not keep[key][j]))
    for _, i, j in candidates:
        key, _, per_unit = scored[i]
        if budget < per_unit:
            continue  # too wide for what is left; a narrower unit may fit
        keep[key][j] = True
        budget -= per_unit
    return keep


# checks ---------------------------------------------------------------------------

def pattern_holds(structure, entry, mask):
    """Whether `mask` (an entry's, boolean) has `structure`'s pattern: N:M at most N kept in
    every group of M (`prune` keeps exactly N; a sparser mask made N:M by GMP may keep
    fewer, which N:M kernels take too), blocks and channels kept or removed whole."""
    structure = parse(structure)
    if structure.kind == UNSTRUCTURED:
        return True
    matrix = _as_matrix(entry, np.asarray(mask).astype(bool))
    if structure.kind == "nm":
        rows = matrix.shape[0]
        sizes = np.minimum(structure.m, rows - np.arange(0, rows, structure.m))
        kept = _groups(matrix, structure.m, False).sum(axis=1)  # at most N a group: what N:M kernels take
        return bool(np.all(kept <= np.minimum(structure.n, sizes)[:, None]))
    if structure.kind == "blocks":
        grouped = _groups(matrix, structure.m, False)
        rows = matrix.shape[0]
        counts = grouped.sum(axis=1)
        sizes = np.minimum(structure.m, rows - np.arange(0, rows, structure.m))[:, None]
        return bool(np.all((counts == 0) | (counts == sizes)))
    return bool(np.all(matrix.all(axis=0) | ~matrix.any(axis=0)))  # channels: whole columns
