"""Magnitude pruning of the kept weights: the primitive gradual magnitude pruning
(`sniptf.GradualPruning`) and iterative magnitude pruning (`sniptf.studies.imp`,
`rewinding.next_round`) prune with."""

import numpy as np

from sniptf import selection
from sniptf import settings
from sniptf import transform

PRUNING_SCOPES = ("layerwise", "global")


def check_scope(scope, name="scope"):
    """The scopes magnitude pruning of kept weights takes (ERK's budgets are for a mask
    drawn at init, not for a schedule)."""
    return settings.check_choice(name, scope, PRUNING_SCOPES)


def magnitude_masks(entries, sparsity, *, scope="global", seed=0):
    """The masks that prune the smallest-|w| kept weights of `entries` until exactly
    round(sparsity * N) of the N masked weights are pruned (N over all of them with
    `scope="global"`, per tensor with `"layerwise"`). Masks only shrink: a tensor (or
    model) already that sparse keeps its mask. Ties: the lowest index is kept."""
    masks = [e.mask.numpy().astype(bool) for e in entries]
    # kept weights score |w|, pruned ones -1: never chosen over a kept one
    scores = [np.where(m, np.abs(e.weight.numpy()), -1.0).astype(np.float32) for e, m in zip(entries, masks)]
    if scope == "global":
        total = sum(m.size for m in masks)
        keep = total - int(round(sparsity * total))
        if keep >= sum(int(m.sum()) for m in masks):
            return masks
        new = selection.select_count(scores, max(keep, 1), scope="global", seed=seed, min_kept_per_layer=0)
    else:
        new = []
        for s, m in zip(scores, masks):
            keep = m.size - int(round(sparsity * m.size))
            new.append(m if keep >= m.sum() else selection.select_count(
                [s], max(keep, 1), scope="global", seed=seed, min_kept_per_layer=0)[0])
    return [n & m for n, m in zip(new, masks)]


def prune_to(model, sparsity, *, scope="global", seed=0):
    """Prunes a wrapped model by magnitude to `sparsity` (`magnitude_masks`); each pruned
    weight and its optimizer slots (if the model has a built optimizer) are set to 0.
    Returns the number of weights pruned by this call."""
    entries = transform.masked_entries(model)
    new = magnitude_masks(entries, sparsity, scope=check_scope(scope), seed=seed)
    removed, _ = transform.change_masks(entries, new, optimizer_of(model))
    return sum(int(r.sum()) for r in removed)


def optimizer_of(model):
    """The model's optimizer once it has slots to reset, else None."""
    optimizer = getattr(model, "optimizer", None)
    return optimizer if optimizer is not None and getattr(optimizer, "built", False) else None
