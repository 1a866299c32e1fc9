"""Exact top-κ mask selection from saliency scores.

The kept count is exactly what κ says. Scores above the threshold are kept;
among scores equal to it, the ones kept are drawn uniformly with `seed`, so
the same seed gives the same mask and no layer is favoured by its position.
Memory: one flat copy of the scores (partitioned in place) plus one
boolean per score.
"""

import math
import numbers

import numpy as np

SCOPES = ("global", "layerwise")


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
    kappa = check_kappa(kappa)
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


def _top_k(scores, k, rng):
    """Boolean masks keeping exactly the k largest entries over `scores`."""
    n = sum(s.size for s in scores)
    if k >= n:
        return [np.ones(s.shape, bool) for s in scores]
    flat = np.concatenate([np.ravel(s) for s in scores])
    flat.partition(n - k)
    threshold = flat[n - k]
    above = int(np.count_nonzero(flat[n - k + 1:] > threshold))
    del flat
    need = k - above
    masks = [s > threshold for s in scores]
    ties = [np.flatnonzero(np.ravel(s) == threshold) for s in scores]
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


def select(scores, kappa, *, scope="global", seed=0):
    """Masks keeping exactly the top-κ scores.

    Args:
        scores: a list of score arrays (higher = more important).
        kappa: see `kept_count`.
        scope: `"global"` ranks all scores together (SNIP); `"layerwise"`
            keeps the same fraction in every array (the count is split by
            largest remainder, so the total is still exact).
        seed: breaks ties at the threshold.

    Returns:
        A list of boolean arrays shaped like `scores`.
    """
    check_scope(scope)
    scores = [np.asarray(s) for s in scores]
    if not scores:
        raise ValueError("No scores to select from. Received: scores=[]")
    for i, s in enumerate(scores):
        if not np.isfinite(s).all():
            raise ValueError(
                f"Score array {i} (shape {s.shape}) has NaN or infinite entries; "
                "the saliency pass diverged."
            )
    total = sum(s.size for s in scores)
    k = kept_count(kappa, total)
    rng = np.random.default_rng(seed)
    if scope == "global":
        return _top_k(scores, k, rng)
    counts = _apportion(k, [s.size for s in scores])
    return [_top_k([s], c, rng)[0] if c else np.zeros(s.shape, bool)
            for s, c in zip(scores, counts)]
