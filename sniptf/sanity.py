"""Sanity checks for a mask found at initialization (Frankle et al., ICLR 2021,
"Pruning neural networks at initialization: why are we missing the mark?").

If a criterion's mask matters connection by connection, these should hurt:
- `shuffle_within_layers`: each mask permuted within its own tensor (the same
  count per tensor, the positions random);
- `reinitialize`: the same masks, fresh weights;
- `sniptf.prune(..., invert=True)`: the *lowest*-scoring connections kept.

Each returns a new wrapped model with the same layers, in the same order and
with the same names as its input; the input is not modified. They are meant for
a freshly pruned model (at initialization): sniptf zeroes pruned weights, so a
position a check newly keeps takes a fresh draw from its layer's initializer —
what the original initialization at that position was a draw from.
"""

import numpy as np

from sniptf import selection
from sniptf import transform


def reinitialize(model, seed=0):
    """The same masks on fresh weights: every masked weight re-drawn from its
    layer's own initializer (seeded), pruned weights 0; other weights (biases,
    normalization) as they were.

    Args:
        model: a pruned (wrapped) model; not modified.
        seed: seeds the draw.

    Returns:
        A new wrapped model with `model`'s layers, names and masks.
    """
    selection.check_seed(seed)
    copy, pairs = transform.copy_wrapped(model)
    transform.redraw([c for _, c in pairs], seed)
    transform.apply_masks([c for _, c in pairs], {c.key: e.mask.numpy() for e, c in pairs})
    return copy


def shuffle_within_layers(model, seed=0):
    """Each mask permuted at random within its own tensor (the kept count of every
    tensor unchanged). A position kept in both masks keeps its weight; a newly
    kept one takes a fresh draw from its layer's initializer.

    Args:
        model: a pruned (wrapped) model; not modified.
        seed: seeds the permutations and the draws.

    Returns:
        A new wrapped model with `model`'s layers and names.
    """
    selection.check_seed(seed)
    copy, pairs = transform.copy_wrapped(model)
    kept_values = {c.key: c.weight.numpy() for _, c in pairs}
    transform.redraw([c for _, c in pairs], seed)
    rng = np.random.default_rng(seed)
    masks = {}
    for original, c in pairs:
        old = original.mask.numpy().astype(bool)
        new = rng.permutation(old.reshape(-1)).reshape(old.shape)
        c.weight.assign(np.where(old & new, kept_values[c.key], c.weight.numpy()))
        masks[c.key] = new
    transform.apply_masks([c for _, c in pairs], masks)
    return copy
