import numpy as np
import pytest

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
    with pytest.raises(ValueError, match=r"Score array 1 \(shape \(2,\)\) has NaN or infinite"):
        selection.select([np.ones(3), np.array([1.0, np.nan])], 2)
    with pytest.raises(ValueError, match=r"Received: scope='per_layer'"):
        selection.select([np.ones(3)], 2, scope="per_layer")
    with pytest.raises(ValueError, match="scores=\\[\\]"):
        selection.select([], 2)
