"""The PaI sanity checks (Frankle et al., ICLR 2021): shuffle within layers, reinitialize,
invert — counts, masks and names as specified, the input model untouched."""

import keras
import numpy as np
import pytest

import sniptf


def _pruned(kappa=0.05, criterion="snip", seed=0):
    x, y = sniptf.data.load_numpy("mnist10k", "train")
    keras.utils.set_random_seed(seed)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    return sniptf.prune(model, (x[:100], y[:100]), kappa=kappa, criterion=criterion), (x[:100], y[:100])


def _masks(model):
    return {e.key: e.mask.numpy().astype(bool) for e in sniptf.transform.masked_entries(model)}


def _weights(model):
    return {e.key: e.weight.numpy() for e in sniptf.transform.masked_entries(model)}


def test_shuffle_keeps_each_tensors_count_moves_the_positions_and_is_seeded():
    pruned, _ = _pruned()
    before = {k: v.copy() for k, v in _weights(pruned).items()}
    shuffled = sniptf.sanity.shuffle_within_layers(pruned, seed=3)
    assert [l.name for l in shuffled.layers] == [l.name for l in pruned.layers]
    old, new = _masks(pruned), _masks(shuffled)
    for key in old:
        assert new[key].sum() == old[key].sum()
        chance = old[key].sum() ** 2 / old[key].size  # the overlap of two random sets of that size
        assert (new[key] & old[key]).sum() < 1.3 * chance + 10 and not np.array_equal(new[key], old[key])
        w = _weights(shuffled)[key]
        assert np.all(w[~new[key]] == 0) and np.count_nonzero(w[new[key]]) == new[key].sum()
        both = new[key] & old[key]
        np.testing.assert_array_equal(w[both], before[key][both])  # kept in both: the same weight
    again = sniptf.sanity.shuffle_within_layers(pruned, seed=3)
    assert all(np.array_equal(_masks(again)[k], new[k]) for k in new)
    other = sniptf.sanity.shuffle_within_layers(pruned, seed=4)
    assert not all(np.array_equal(_masks(other)[k], new[k]) for k in new)
    assert all(np.array_equal(before[k], v) for k, v in _weights(pruned).items())  # input untouched


def test_reinitialize_keeps_the_masks_and_redraws_the_kept_weights():
    pruned, (x, _) = _pruned()
    fresh = sniptf.sanity.reinitialize(pruned, seed=1)
    assert [l.name for l in fresh.layers] == [l.name for l in pruned.layers]
    old_w, new_w = _weights(pruned), _weights(fresh)
    for key, mask in _masks(pruned).items():
        np.testing.assert_array_equal(_masks(fresh)[key], mask)
        assert np.all(new_w[key][~mask] == 0)
        assert not np.any(new_w[key][mask] == old_w[key][mask])  # every kept weight re-drawn
        # the same initializer: the kept values' scale is the layer's (Glorot/He), not SNIP's selection
        assert 0.3 < new_w[key][mask].std() / np.sqrt(2.0 / sum(mask.shape)) < 3
    assert np.isfinite(fresh(x).numpy()).all()
    assert all(np.array_equal(_weights(sniptf.sanity.reinitialize(pruned, seed=1))[k], v)
               for k, v in new_w.items())


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_invert_keeps_the_lowest_scores_with_the_same_count(scope):
    pruned, batch = _pruned()
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    scores = sniptf.saliency(sniptf.wrap(model), batch)
    inverted = sniptf.prune(model, batch, kappa=0.05, scope=scope, invert=True)
    masks = _masks(inverted)
    total = sum(m.size for m in masks.values())
    assert sum(m.sum() for m in masks.values()) == sniptf.selection.kept_count(0.05, total)
    if scope == "global":
        kept = np.concatenate([scores[k][masks[k]] for k in masks])
        dropped = np.concatenate([scores[k][~masks[k]] for k in masks])
        assert kept.max() <= dropped.min()  # every kept score is at most every pruned one
    else:
        for k in masks:
            assert masks[k].sum() == sniptf.selection.kept_count(0.05, masks[k].size)
            assert scores[k][masks[k]].max() <= scores[k][~masks[k]].min()


def test_sanity_checks_refuse_an_unpruned_model_and_bad_values():
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    with pytest.raises(ValueError, match="has no MaskedLayer"):
        sniptf.sanity.shuffle_within_layers(model)
    pruned, batch = _pruned()
    with pytest.raises(TypeError, match="Received: seed=-1"):
        sniptf.sanity.reinitialize(pruned, seed=-1)
    with pytest.raises(TypeError, match="Received: invert='yes'"):
        sniptf.prune(model, batch, invert="yes")
