"""Exact top-κ mask selection from saliency scores.

The kept count is exactly what κ says. Scores above the threshold are kept;
among scores equal to it, the ones kept are drawn uniformly with `seed`, so
the same seed gives the same mask and no layer is favoured by its position.

The threshold is found without a concatenated copy of the scores: a radix
select over the scores' bits (each float mapped to an unsigned integer with
the same order), 16 bits per pass, from histograms summed over the arrays
one at a time. Memory: one boolean per score (the masks) and temporaries the
size of one array; score arrays may also be given as callables that compute
them on demand, so that not even the scores need be held all at once.
"""

import math
import numbers

import numpy as np

SCOPES = ("global", "layerwise", "erk")


def check_kappa(kappa):
    """Validates `kappa` on its own; returns it as an int or a float.

    Raises:
        TypeError: `kappa` is a bool, a string or another non-number.
        ValueError: a float outside (0, 1] or NaN, or an int below 1.
    """
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real):
        raise TypeError(
            "Expected `kappa` to be a float in (0, 1] (fraction of weights kept) "
            f"or an int >= 1 (number kept). Received: kappa={kappa!r}"
        )
    if isinstance(kappa, numbers.Integral):
        if kappa < 1:
            raise ValueError(
                "An int `kappa` is the number of weights kept and must be >= 1. "
                f"Received: kappa={kappa}"
            )
        return int(kappa)
    kappa = float(kappa)
    if not math.isfinite(kappa) or not 0.0 < kappa <= 1.0:
        raise ValueError(
            "A float `kappa` is the fraction of weights kept and must be in "
            f"(0, 1], e.g. 0.05 for 95% sparsity. Received: kappa={kappa}"
        )
    return kappa


def check_scope(scope):
    """Validates a selection `scope`; the one check of it (prune reuses it)."""
    if scope not in SCOPES:
        raise ValueError(
            f"Expected `scope` to be one of {SCOPES}. Received: scope={scope!r}")
    return scope


def check_seed(seed):
    """Validates a `seed` (ties, the random criterion, re-initialization): an int >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"Expected `seed` to be an int >= 0. Received: seed={seed!r}")
    return int(seed)


def kept_count(kappa, total):
    """Number of weights kept for `kappa` out of `total` prunable weights.

    Args:
        kappa: a float in (0, 1], the fraction kept (rounded half up, as the
            authors' `round(N·κ)`), or an int >= 1, the exact number kept.
            Note `1` keeps one weight while `1.0` keeps all.
        total: the number of prunable weights.

    Returns:
        An int in [1, total].

    Raises:
        TypeError / ValueError: see `check_kappa`; also an int above `total`
        or a fraction that rounds to zero weights.
    """
    return count_for(check_kappa(kappa), total)


def count_for(kappa, total):
    """`kept_count` of a κ that `check_kappa` has already returned (prune checks
    it once, before any work, and counts here once it knows `total`)."""
    if isinstance(kappa, int):
        if kappa > total:
            raise ValueError(
                f"An int `kappa` is the number of weights kept and must be in "
                f"[1, {total}] (the model's prunable weights). Received: kappa={kappa}"
            )
        return kappa
    k = int(math.floor(total * kappa + 0.5))
    if k < 1:
        raise ValueError(
            f"kappa={kappa} keeps 0 of the {total} prunable weights; use a "
            "larger kappa or an int count."
        )
    return k


def _apportion(k, sizes):
    """Splits k over groups in proportion to sizes (largest remainder)."""
    total = sum(sizes)
    quotas = [k * s / total for s in sizes]
    counts = [min(int(math.floor(q)), s) for q, s in zip(quotas, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    left = k - sum(counts)
    for i in order:
        if left == 0:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
            left -= 1
    return counts


_BITS = 16  # per radix pass: histograms of 65,536 bins
_CHUNK = 1 << 18  # entries keyed at a time: bounds the temporaries to a few MB


def _keys(scores, width):
    """Unsigned integers ordered as the float `scores` are (-0.0 counted as 0.0)."""
    floats = np.ravel(scores).astype(np.float32 if width == 32 else np.float64, copy=False) + 0.0
    bits = floats.view(np.uint32 if width == 32 else np.uint64)
    top = bits.dtype.type(1 << (width - 1))
    return np.where(bits & top, ~bits, bits | top)


def _from_key(key, width):
    """The float whose `_keys` value is `key`."""
    utype = np.uint32 if width == 32 else np.uint64
    key = utype(key)
    top = utype(1 << (width - 1))
    bits = key & ~top if key & top else ~key
    return np.array([bits], utype).view(np.float32 if width == 32 else np.float64)[0]


def _kth_largest_key(sources, k, width):
    """The k-th largest key over all sources (1-based) and how many of the k are
    equal to it: a radix select, one histogram pass per 16 bits."""
    prefix, need = 0, k
    for shift in range(width - _BITS, -1, -_BITS):
        hist = np.zeros(1 << _BITS, np.int64)
        for source in sources:
            flat = np.ravel(source())
            for start in range(0, flat.size, _CHUNK):
                keys = _keys(flat[start:start + _CHUNK], width)
                if shift + _BITS < width:  # only the keys that share the prefix found so far
                    keys = keys[(keys >> keys.dtype.type(shift + _BITS)) == prefix]
                digits = (keys >> keys.dtype.type(shift)) & keys.dtype.type((1 << _BITS) - 1)
                hist += np.bincount(digits.astype(np.intp), minlength=1 << _BITS)
            del flat
        above = np.cumsum(hist[::-1])  # above[i]: entries in the i + 1 highest bins
        top = int(np.searchsorted(above, need))  # the bin where the count reaches `need`
        need -= int(above[top - 1]) if top else 0
        prefix = (prefix << _BITS) | ((1 << _BITS) - 1 - top)
    return prefix, need


def _guarded(sources, shapes, k, width, rng, scope, min_kept):
    """`select` with every array keeping its top `min_kept` entries first."""
    floors = [min(min_kept, int(np.prod(shape))) for shape in shapes]
    if sum(floors) > k:
        raise ValueError(
            f"min_kept_per_layer={min_kept} over {len(shapes)} weight arrays needs {sum(floors)} "
            f"kept weights, more than kappa keeps ({k}). Use a smaller min_kept_per_layer or a "
            f"larger kappa. Received: min_kept_per_layer={min_kept}")
    reserved = [_top_k([source], [shape], c, width, rng)[0] if c else np.zeros(shape, bool)
                for source, shape, c in zip(sources, shapes, floors)]
    # the reserved entries score -inf for the rest of the selection: never chosen twice
    rest = [lambda source=source, r=r: np.where(r, -np.inf, np.asarray(source(), np.float64))
            for source, r in zip(sources, reserved)]
    left = k - sum(floors)
    if left == 0:
        return reserved
    if scope == "global":
        extra = _top_k(rest, shapes, left, 64, rng)
    else:
        free = [int(np.prod(shape)) - f for shape, f in zip(shapes, floors)]
        counts = _apportion(left, free) if scope == "layerwise" else \
            _capped(erk_counts(shapes, k), floors, free, left)
        extra = [_top_k([source], [shape], c, 64, rng)[0] if c else np.zeros(shape, bool)
                 for source, shape, c in zip(rest, shapes, counts)]
    return [r | e for r, e in zip(reserved, extra)]


def _capped(targets, floors, free, left):
    """ERK counts beyond the floors, within what each array has left, summing to `left`."""
    counts = [min(max(t - f, 0), n) for t, f, n in zip(targets, floors, free)]
    over = sum(counts) - left
    for i in sorted(range(len(counts)), key=lambda i: -counts[i]):
        if over <= 0:
            break
        take = min(over, counts[i])
        counts[i] -= take
        over -= take
    for i in range(len(counts)):
        if over >= 0:
            break
        add = min(-over, free[i] - counts[i])
        counts[i] += add
        over += add
    return counts


def erk_counts(shapes, k):
    """Per-array kept counts summing to exactly `k`, by Erdős–Rényi-Kernel densities
    (Evci et al., RigL, ICML 2020): an array of shape (d_1, ..., d_n) gets density
    ε·(d_1 + ... + d_n)/(d_1·...·d_n), one ε for all, found as RigL finds it: an
    array whose density would exceed 1 is kept whole and ε is solved again over
    the rest. Counts are rounded by largest remainder."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    raw = [sum(shape) / size if size else 0.0 for shape, size in zip(shapes, sizes)]
    dense = set()
    while True:
        budget = k - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        eps = budget / weight if weight > 0 else 0.0
        over = {i for i in range(len(sizes)) if i not in dense and eps * raw[i] > 1.0}
        if not over:
            break
        dense |= over
    quotas = [float(sizes[i]) if i in dense else eps * raw[i] * sizes[i] for i in range(len(sizes))]
    counts = [min(int(math.floor(q)), n) for q, n in zip(quotas, sizes)]
    left = k - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    while left > 0:  # largest remainder first; never above an array's size
        for i in order:
            if left and counts[i] < sizes[i]:
                counts[i] += 1
                left -= 1
    return counts


def _top_k(sources, shapes, k, width, rng):
    """Boolean masks keeping exactly the k largest entries over `sources`
    (callables returning score arrays of `shapes`)."""
    if k >= sum(int(np.prod(shape)) for shape in shapes):
        return [np.ones(shape, bool) for shape in shapes]
    key, need = _kth_largest_key(sources, k, width)
    threshold = _from_key(key, width)
    masks, ties = [], []
    for source in sources:
        scores = np.asarray(source()).astype(threshold.dtype, copy=False)
        masks.append(scores > threshold)
        ties.append(np.flatnonzero(np.ravel(scores) == threshold))
        del scores
    total_ties = sum(t.size for t in ties)
    if need >= total_ties:
        chosen = np.arange(total_ties)
    elif need <= total_ties - need:
        chosen = np.sort(rng.choice(total_ties, size=need, replace=False))
    else:
        dropped = rng.choice(total_ties, size=total_ties - need, replace=False)
        keep = np.ones(total_ties, bool)
        keep[dropped] = False
        chosen = np.flatnonzero(keep)
    start = 0
    for mask, tie in zip(masks, ties):
        end = start + tie.size
        lo, hi = np.searchsorted(chosen, [start, end])
        mask.reshape(-1)[tie[chosen[lo:hi] - start]] = True
        start = end
    return masks


def check_min_kept(min_kept):
    """Validates `min_kept_per_layer`: an int >= 0."""
    if isinstance(min_kept, bool) or not isinstance(min_kept, (int, np.integer)) or min_kept < 0:
        raise ValueError(f"Expected `min_kept_per_layer` to be an int >= 0. "
                         f"Received: min_kept_per_layer={min_kept!r}")
    return int(min_kept)


def select(scores, kappa, *, scope="global", seed=0, min_kept_per_layer=0):
    """Masks keeping exactly the top-κ scores.

    Args:
        scores: a list of score arrays (higher = more important), or of
            zero-argument callables returning them (called as needed, a few
            times each, and must return the same array each time: only one is
            then held at a time).
        kappa: see `kept_count`.
        scope: `"global"` ranks all scores together (SNIP); `"layerwise"`
            keeps the same fraction in every array (the count is split by
            largest remainder, so the total is still exact); `"erk"` gives
            each array its Erdős–Rényi-Kernel share (`erk_counts`), then keeps
            the top scores inside each.
        seed: breaks ties at the threshold.
        min_kept_per_layer: a collapse guard: every array keeps at least this
            many of its entries (its top scores; all of a smaller array), and
            the rest of the count is selected by `scope` among the others. The
            total stays exactly what `kappa` says (an error if the guard alone
            needs more).

    Returns:
        A list of boolean arrays shaped like `scores`.
    """
    check_scope(scope)
    check_seed(seed)
    min_kept = check_min_kept(min_kept_per_layer)
    sources, shapes, width = _sources(scores)
    k = kept_count(kappa, sum(int(np.prod(shape)) for shape in shapes))
    return _select(sources, shapes, width, k, scope, seed, min_kept)


def select_count(scores, count, *, scope, seed, min_kept_per_layer):
    """`select` with the kept count given: for a caller that has checked `scope`,
    `seed` and `min_kept_per_layer` and turned κ into `count` itself (`prune` does
    once, then selects once per round). `scores` are checked here as in `select`."""
    sources, shapes, width = _sources(scores)
    total = sum(int(np.prod(shape)) for shape in shapes)
    if not 1 <= count <= total:
        raise ValueError(f"Expected a kept count in [1, {total}]. Received: count={count!r}")
    return _select(sources, shapes, width, count, scope, seed, min_kept_per_layer)


def _sources(scores):
    """Score sources as callables, their shapes, and the key width (32 or 64 bits)."""
    if not scores:
        raise ValueError(f"No scores to select from. Received: scores={scores!r}")
    sources = [s if callable(s) else (lambda s=np.asarray(s): s) for s in scores]
    shapes, width = [], 32
    for i, source in enumerate(sources):
        s = np.asarray(source())
        if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
            raise TypeError(f"Score array {i} is not real numbers. Received: dtype {s.dtype}")
        if not np.isfinite(s).all():
            raise ValueError(
                f"Score array {i} has NaN or infinite entries; the saliency pass diverged. "
                f"Received: {int(np.size(s) - np.isfinite(s).sum())} non-finite of {s.size} "
                f"entries in score array {i} (shape {s.shape})"
            )
        shapes.append(s.shape)
        if s.dtype.itemsize > 4 or np.issubdtype(s.dtype, np.integer):
            width = 64  # float64 (or integer) scores are compared as float64
        del s
    return sources, shapes, width


def _select(sources, shapes, width, k, scope, seed, min_kept):
    rng = np.random.default_rng(seed)
    if min_kept:
        return _guarded(sources, shapes, k, width, rng, scope, min_kept)
    if scope == "global":
        return _top_k(sources, shapes, k, width, rng)
    counts = (_apportion(k, [int(np.prod(shape)) for shape in shapes]) if scope == "layerwise"
              else erk_counts(shapes, k))
    return [_top_k([source], [shape], c, width, rng)[0] if c else np.zeros(shape, bool)
            for source, shape, c in zip(sources, shapes, counts)]


# Selection inside a training run (mask updates): exact, ties by lowest flat index, in a
# few passes over the arrays (no sort, no index array of the candidates).

_KEY_TOP = np.uint32(0x7FFFFFFF)


def magnitude_keys(values, candidates, *, smallest=False):
    """uint32 keys of `values` for `flat_top_k`: ordered as |values| (as -|values| with
    `smallest`), 0 where `candidates` (a boolean array of the same size) is False."""
    bits = np.abs(np.ravel(values)).astype(np.float32, copy=False).view(np.uint32)  # sign bit clear
    keys = (_KEY_TOP - bits) if smallest else (bits + np.uint32(1))
    np.multiply(keys, np.ravel(candidates), out=keys, casting="unsafe")  # 0 off the candidates
    return keys


def _all_or_none(flat, k):
    """The answer when `k` asks for every nonzero entry of `flat` or for none (else None),
    and the count of nonzero entries."""
    count = int(np.count_nonzero(flat))
    if k >= count:
        return np.flatnonzero(flat), count
    if k <= 0:
        return np.zeros(0, np.intp), count
    return None, count


def flat_top_k(keys, k):
    """Flat indices of the `k` largest nonzero `keys` (uint32, 0: never chosen); ties at
    the k-th value go to the lowest indices. Exact, in a few passes over the keys: a
    strided sample brackets the k-th value, counts confirm the bracket (else it widens),
    and only the keys inside it are partitioned."""
    keys = np.ravel(keys)
    trivial, _ = _all_or_none(keys, k)
    if trivial is not None:
        return trivial
    sample = np.sort(keys[::max(1, keys.size // 65536)])
    position = (1.0 - k / keys.size) * (sample.size - 1)  # of the k-th largest, in the sample
    margin = 4.0 * math.sqrt(sample.size) + 8
    while True:
        lo = sample[max(int(position - margin), 0)] if position - margin > 0 else np.uint32(0)
        hi = sample[int(position + margin)] if position + margin < sample.size - 1 else np.uint32(0xFFFFFFFF)
        above = int(np.count_nonzero(keys > hi))
        if above <= k <= int(np.count_nonzero(keys >= lo)):
            break
        margin *= 4  # the sample misled (keys laid out in order): a wider bracket
    need = k - above
    if need == 0:
        return np.flatnonzero(keys > hi)
    inside = keys[(keys >= lo) & (keys <= hi)]
    threshold = np.partition(inside, inside.size - need)[inside.size - need]  # the k-th largest
    chosen = np.flatnonzero(keys > threshold)
    return np.concatenate([chosen, np.flatnonzero(keys == threshold)[:k - chosen.size]])


def random_flat_indices(candidates, k, rng):
    """`k` flat indices drawn uniformly without replacement among the True entries of the
    boolean array `candidates`, from the numpy Generator `rng` (the same draw on any
    machine). Most entries candidates: sequential draws over the array, rejected off the
    candidates or repeated (no index array of the candidates)."""
    flat = np.ravel(candidates)
    trivial, count = _all_or_none(flat, k)
    if trivial is not None:
        return trivial
    if 4 * count < flat.size:
        idx = np.flatnonzero(flat)
        return idx[rng.choice(count, size=k, replace=False)]
    chosen = np.zeros(0, np.int64)
    while chosen.size < k:
        draw = rng.integers(0, flat.size, size=int((k - chosen.size) * flat.size / count * 1.1) + 16)
        chosen = np.concatenate([chosen, draw[flat[draw]]])
        _, first = np.unique(chosen, return_index=True)
        chosen = chosen[np.sort(first)]  # distinct, in the order drawn
    return chosen[:k]
