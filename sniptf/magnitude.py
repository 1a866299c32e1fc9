"""Magnitude pruning of the kept weights: the primitive gradual magnitude pruning
(`sniptf.GradualPruning`) and iterative magnitude pruning (`sniptf.studies.imp`,
`rewinding.next_round`) prune with."""

import numpy as np

from sniptf import selection
from sniptf import settings
from sniptf import structure as structure_lib
from sniptf import transform

PRUNING_SCOPES = ("layerwise", "global")


def check_scope(scope, name="scope"):
    """The scopes magnitude pruning of kept weights takes (ERK's budgets are for a mask
    drawn at init, not for a schedule)."""
    return settings.check_choice(name, scope, PRUNING_SCOPES)


def magnitude_masks(entries, sparsity, *, scope="global", structure="unstructured", model=None, masks=None):
    """The masks that prune the smallest-|w| kept weights of `entries` until exactly
    round(sparsity * N) of the N masked weights are pruned (N over all of them with
    `scope="global"`, per tensor with `"layerwise"`). Masks only shrink: a tensor (or
    model) already that sparse keeps its mask. Ties: the lowest index (in the order of
    `entries`) is kept.

    With a `structure` (`sniptf/structure.py`; `model`: the model, for "channels" to
    find its output layer) the kept weights' |w| score the groups: N:M keeps the N
    largest of every M (whatever `sparsity`: the caller checks it is 1 - N/M), blocks
    and channels prune whole groups until about `sparsity` (whole groups; channels
    counts the weights of Dense, Conv and Embedding layers). `masks`: the entries'
    current masks as boolean arrays, if the caller holds them (not read again)."""
    shape = structure_lib.parse(structure)
    if shape.structured:
        return _structured(entries, sparsity, scope, shape, model, masks)
    masks = list(masks) if masks is not None else [transform.mask_bits(e) for e in entries]
    groups = [range(len(entries))] if scope == "global" else [[i] for i in range(len(entries))]
    new = list(masks)
    for group in groups:
        total = sum(masks[i].size for i in group)
        keep = max(total - int(round(sparsity * total)), 1)
        if keep >= sum(int(np.count_nonzero(masks[i])) for i in group):
            continue
        # kept weights keyed by |w|, pruned ones 0: never chosen over a kept one
        keys = np.concatenate([selection.magnitude_keys(entries[i].weight.numpy(), masks[i]) for i in group])
        chosen = np.zeros(keys.size, bool)
        chosen[selection.flat_top_k(keys, keep)] = True
        start = 0
        for i in group:
            new[i] = chosen[start:start + masks[i].size].reshape(masks[i].shape)
            start += masks[i].size
    return new


def _structured(entries, sparsity, scope, shape, model, masks):
    masks = dict(zip((e.key for e in entries), masks)) if masks is not None else \
        {e.key: transform.mask_bits(e) for e in entries}
    counted = shape.counted(entries)
    total = sum(masks[e.key].size for e in counted)
    keep = max(total - int(round(sparsity * total)), 1)
    if shape.kind != "nm" and keep >= sum(int(np.count_nonzero(masks[e.key])) for e in counted):
        return [masks[e.key] for e in entries]
    scores = {e.key: (lambda e=e: np.abs(e.weight.numpy()) * masks[e.key]) for e in entries}
    new = shape.select(entries, scores, keep, scope=scope, seed=0, min_kept_per_layer=0, model=model)
    return [new[e.key] & masks[e.key] for e in entries]


def prune_to(model, sparsity, *, scope="global"):
    """Prunes a wrapped model by magnitude to `sparsity` (`magnitude_masks`); each pruned
    weight and its optimizer slots (if the model has a built optimizer) are set to 0.
    Returns the number of weights pruned by this call."""
    entries = transform.masked_entries(model)
    new = magnitude_masks(entries, sparsity, scope=check_scope(scope))
    removed, _ = transform.change_masks(entries, new, optimizer_of(model))
    return sum(int(r.sum()) for r in removed)


def optimizer_of(model):
    """The model's optimizer once it has slots to reset, else None."""
    optimizer = getattr(model, "optimizer", None)
    return optimizer if optimizer is not None and getattr(optimizer, "built", False) else None
