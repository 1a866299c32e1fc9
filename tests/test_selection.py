import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from sniptf import selection


def test_hand_computed_global_top_k():
    scores = [np.array([[0.9, 0.1], [0.5, 0.3]]), np.array([0.8, 0.2])]
    masks = selection.select(scores, 3)
    np.testing.assert_array_equal(masks[0], [[True, False], [True, False]])
    np.testing.assert_array_equal(masks[1], [True, False])


@pytest.mark.parametrize("kappa,expected", [(0.05, 50), (0.5, 500), (1.0, 1000), (0.0004, 0),
                                            (0.0005, 1), (1, 1), (999, 999), (1000, 1000)])
def test_kept_count(kappa, expected):
    if expected == 0:
        with pytest.raises(ValueError, match="keeps 0 of the 1000"):
            selection.kept_count(kappa, 1000)
    else:
        assert selection.kept_count(kappa, 1000) == expected


@pytest.mark.parametrize("kappa,error,match", [
    (0.0, ValueError, r"\(0, 1\].*Received: kappa=0.0"),
    (-0.1, ValueError, "Received: kappa=-0.1"),
    (1.5, ValueError, "Received: kappa=1.5"),
    (float("nan"), ValueError, "Received: kappa=nan"),
    (float("inf"), ValueError, "Received: kappa=inf"),
    (0, ValueError, "must be >= 1. Received: kappa=0"),
    (-3, ValueError, "Received: kappa=-3"),
    (1001, ValueError, r"\[1, 1000\].*Received: kappa=1001"),
    (True, TypeError, "Received: kappa=True"),
    ("0.1", TypeError, "Received: kappa='0.1'"),
    (None, TypeError, "Received: kappa=None"),
])
def test_bad_kappa(kappa, error, match):
    with pytest.raises(error, match=match):
        selection.kept_count(kappa, 1000)


@pytest.mark.parametrize("scope", selection.SCOPES)
@pytest.mark.parametrize("kappa", [1, 7, 0.01, 0.33, 0.999])
def test_exact_count_with_massive_ties(scope, kappa):
    rng = np.random.default_rng(0)
    scores = [np.round(rng.random((30, 20)), 1), np.zeros(100), np.ones((5, 5, 4))]
    masks = selection.select(scores, kappa, scope=scope, seed=3)
    total = sum(s.size for s in scores)
    assert sum(int(m.sum()) for m in masks) == selection.kept_count(kappa, total)
    for s, m in zip(scores, masks):
        assert m.shape == s.shape and m.dtype == bool
    if scope == "global":
        kept_min = min(s[m].min() for s, m in zip(scores, masks) if m.any())
        dropped_max = max(s[~m].max() for s, m in zip(scores, masks) if (~m).any())
        assert kept_min >= dropped_max


def test_ties_are_seeded_and_deterministic():
    scores = [np.zeros(50), np.zeros(50)]
    a = selection.select(scores, 10, seed=1)
    b = selection.select(scores, 10, seed=1)
    c = selection.select(scores, 10, seed=2)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))
    # ties are not resolved by position: both arrays get some
    assert a[0].any() and a[1].any()


def test_layerwise_keeps_the_same_fraction_per_array():
    rng = np.random.default_rng(1)
    scores = [rng.random(1000), rng.random(100), rng.random(10)]
    masks = selection.select(scores, 0.1, scope="layerwise")
    assert [int(m.sum()) for m in masks] == [100, 10, 1]


def test_bad_scores_and_scope():
    with pytest.raises(ValueError, match=r"Score array 1 has NaN or infinite.*Received: 1 non-finite of 2 entries"):
        selection.select([np.ones(3), np.array([1.0, np.nan])], 2)
    with pytest.raises(ValueError, match=r"Received: scope='per_layer'"):
        selection.select([np.ones(3)], 2, scope="per_layer")
    with pytest.raises(ValueError, match="scores=\\[\\]"):
        selection.select([], 2)


def _reference_top_k(scores, k, seed):
    """The partition-based selection this module used before the radix select."""
    rng = np.random.default_rng(seed)
    n = sum(s.size for s in scores)
    if k >= n:
        return [np.ones(s.shape, bool) for s in scores]
    flat = np.concatenate([np.ravel(s) for s in scores])
    flat.partition(n - k)
    threshold = flat[n - k]
    need = k - int(np.count_nonzero(flat[n - k + 1:] > threshold))
    masks = [s > threshold for s in scores]
    ties = [np.flatnonzero(np.ravel(s) == threshold) for s in scores]
    total = sum(t.size for t in ties)
    if need >= total:
        chosen = np.arange(total)
    elif need <= total - need:
        chosen = np.sort(rng.choice(total, size=need, replace=False))
    else:
        keep = np.ones(total, bool)
        keep[rng.choice(total, size=total - need, replace=False)] = False
        chosen = np.flatnonzero(keep)
    start = 0
    for mask, tie in zip(masks, ties):
        lo, hi = np.searchsorted(chosen, [start, start + tie.size])
        mask.reshape(-1)[tie[chosen[lo:hi] - start]] = True
        start += tie.size
    return masks


@settings(deadline=None)
@given(data=st.data())
def test_radix_select_equals_partition_select(data):
    """Any float32/float64 scores (negative, -0.0, ties, tiny and huge values),
    arrays or callables: the same masks as a full partition of a concatenated copy."""
    value = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5]),
                      st.floats(allow_nan=False, allow_infinity=False, width=32))
    dtypes = data.draw(st.lists(st.sampled_from([np.float32, np.float64]), min_size=1, max_size=4))
    scores = [np.array(data.draw(st.lists(value, min_size=1, max_size=40)), dtype)
              for dtype in dtypes]
    n = sum(s.size for s in scores)
    k = data.draw(st.integers(1, n))
    seed = data.draw(st.integers(0, 3))
    lazy = data.draw(st.booleans())
    given_scores = [(lambda s=s: s) for s in scores] if lazy else scores
    got = selection.select(given_scores, k, seed=seed)
    for a, b in zip(got, _reference_top_k(scores, k, seed)):
        np.testing.assert_array_equal(a, b)


def test_selection_holds_no_concatenated_copy():
    """Scores given as callables are computed one at a time and never concatenated:
    the peak memory of `select` is below the scores' total size (the partition-based
    selection copied them all, then added the masks; issue 11)."""
    size, count = 1 << 21, 5
    sources = [lambda i=i: np.random.default_rng(i).random(size, dtype=np.float32)
               for i in range(count)]
    tracemalloc.start()
    try:
        masks = selection.select(sources, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(int(m.sum()) for m in masks) == selection.kept_count(0.1, size * count)
    scores_bytes = 4 * size * count
    assert peak < 0.75 * scores_bytes, (peak, scores_bytes)


def test_erk_counts_by_hand():
    # densities ∝ (4+4)/16 = 0.5 and (100+100)/10000 = 0.02: k = ε·(8 + 200)
    assert selection.erk_counts([(4, 4), (100, 100)], 208) == [8, 200]
    # ε = 4.8 would give the small layer density 2.4: it is kept whole, the rest solved again
    assert selection.erk_counts([(4, 4), (100, 100)], 1000) == [16, 984]
    # a conv kernel (3, 3, 8, 16): (3+3+8+16)/1152; exact total whatever the rounding
    counts = selection.erk_counts([(3, 3, 8, 16), (256, 10), (10,)], 777)
    assert sum(counts) == 777 and counts[2] == 10  # the bias-like vector: density 1


def test_erk_scope_keeps_the_top_scores_inside_each_array():
    scores = [np.arange(16.0).reshape(4, 4), np.arange(10000.0).reshape(100, 100)]
    masks = selection.select(scores, 208, scope="erk")
    assert [int(m.sum()) for m in masks] == [8, 200]
    assert masks[0].ravel()[8:].all() and not masks[0].ravel()[:8].any()
    assert masks[1].ravel()[-200:].all()


def _top_k_by_sort(values, candidates, k, smallest):
    """The reference: a stable sort of the candidates' |values| (ties: lowest index first)."""
    idx = np.flatnonzero(candidates)
    a = np.abs(values.reshape(-1)[idx])
    return np.sort(idx[np.argsort(a if smallest else -a, kind="stable")[:k]])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), levels=st.integers(1, 6), density=st.floats(0.0, 1.0),
       k_fraction=st.floats(0.0, 1.0), smallest=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_flat_top_k_matches_a_stable_sort(n, levels, density, k_fraction, smallest, seed):
    # few distinct levels: many ties at the k-th value, which go to the lowest indices
    rng = np.random.default_rng(seed)
    values = (rng.integers(-levels, levels + 1, n) * 0.25).astype(np.float32)
    candidates = rng.random(n) < density
    k = int(k_fraction * candidates.sum())
    got = selection.flat_top_k(selection.magnitude_keys(values, candidates, smallest=smallest), k)
    np.testing.assert_array_equal(np.sort(got), _top_k_by_sort(values, candidates, k, smallest))


@pytest.mark.parametrize("layout", ["ascending", "descending", "blocks", "periodic"])
def test_flat_top_k_is_exact_when_the_strided_sample_misleads(layout):
    # keys laid out in order, or large exactly at the sample's stride (4 here): the
    # sample's bracket is wrong there and must widen
    n = 300_000
    values = np.linspace(0.0, 1.0, n, dtype=np.float32)
    if layout == "periodic":
        values = np.where(np.arange(n) % (n // 65536) == 0, 1.0 + values, values).astype(np.float32)
    elif layout == "descending":
        values = values[::-1].copy()
    elif layout == "blocks":
        values = np.repeat(np.arange(n // 1000, dtype=np.float32), 1000)
    candidates = np.ones(n, bool)
    for k in (1, 4_567, n // 2, n - 1):
        got = selection.flat_top_k(selection.magnitude_keys(values, candidates), k)
        np.testing.assert_array_equal(np.sort(got), _top_k_by_sort(values, candidates, k, False))


@pytest.mark.parametrize("density", [0.05, 0.9])
def test_random_flat_indices_draws_distinct_candidates_uniformly(density):
    # both paths (few candidates: an index array; most: rejection); seeded, so deterministic
    rng = np.random.default_rng(0)
    candidates = rng.random(200) < density
    count = int(candidates.sum())
    k = max(1, count // 3)
    hits = np.zeros(200)
    for draw in range(3000):
        chosen = selection.random_flat_indices(candidates, k, np.random.default_rng([7, draw]))
        assert chosen.size == k == np.unique(chosen).size and candidates[chosen].all()
        hits[chosen] += 1
    expected = 3000 * k / count  # each candidate's inclusion probability is k / count
    assert np.all(np.abs(hits[candidates] - expected) < 5 * np.sqrt(expected)) and hits[~candidates].sum() == 0
    again = selection.random_flat_indices(candidates, k, np.random.default_rng([7, 0]))
    np.testing.assert_array_equal(again, selection.random_flat_indices(candidates, k, np.random.default_rng([7, 0])))
