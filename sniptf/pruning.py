"""`prune`: wrap, score, select and fix the masks in one call (SNIP)."""

import warnings

import numpy as np

from sniptf import criteria
from sniptf import scoring_batches
from sniptf import registry
from sniptf import scoring
from sniptf import selection
from sniptf import structure as structure_lib
from sniptf import transform


def prune(model, dataset, kappa=0.05, *, criterion="snip", scope="global",
          num_batches=1, loss=None, batch_size=None, seed=0,
          include_biases=False, reinitialize=False, bn_training=False, isometry=False,
          min_kept_per_layer=0, invert=False, structure="unstructured"):
    """Prunes `model` at initialization, keeping the top-κ connections.

    SNIP (Lee et al., ICLR 2019): wrap every prunable layer in a
    `MaskedLayer`, compute the connection sensitivity |∂L/∂c| at c = 1 in one
    forward-backward pass, keep the κ most sensitive connections over all
    layers and set the masks. Pruned weights are set to exactly zero; the
    returned model then trains normally with the masks fixed.

    Args:
        model: a Keras model: Sequential, Functional or subclassed, with its
            prunable layers anywhere inside (custom blocks, nested models,
            KerasHub backbones); it is not modified. Matrix weights no
            registered layer holds stay dense, with a warning.
        dataset: what `model.fit` takes: a `tf.data.Dataset` of batches, or
            arrays `x`, `(x, y)` or `(x, y, sample_weight)` (tensors, tuples or dicts).
        kappa: a float in (0, 1], the fraction of prunable weights kept
            (0.05 = 95% sparse), or an int >= 1, the exact number kept; None
            for an N:M `structure` (its N/M).
        criterion: `"snip"` (default), `"magnitude"`, `"random"`, `"grasp"`,
            `"synflow"` (data-free: `dataset` may be None; 100 rounds),
            `"force"` (60 rounds of SNIP at the current mask), or a name added
            with `sniptf.register_criterion` (see `sniptf/criteria.py`).
        scope: `"global"` (the paper) or `"layerwise"` (same fraction per
            weight tensor).
        num_batches: batches to score on; gradients are summed before |·|.
        loss: the loss to score with (default: everything a compiled model
            trains on, via `model.compute_loss`; else sparse categorical
            cross-entropy, from logits unless the output is a softmax; an
            uncompiled model with one output unit needs `loss=`). See
            `sniptf.saliency`.
        batch_size: splits an `(x, y)` pair into batches.
        seed: fixes tie-breaking, the random criterion and re-drawn weights.
        include_biases: parity switch: biases are masked and scored too (at
            zero init they score 0 and are pruned first).
        reinitialize: parity switch: re-draw the masked weights after scoring.
        bn_training: parity switch: batch-norm in training mode while scoring.
        isometry: run `sniptf.approximate_isometry` on the pruned kernels right
            after pruning (Lee et al., ICLR 2020); True for its defaults, or a
            dict of its keyword arguments (e.g. `{"steps": 2000}`).
        min_kept_per_layer: collapse guard: every masked weight tensor keeps
            at least this many weights (its highest-scoring ones), so no layer
            is emptied at any sparsity; 0 (default) is the papers' selection.
            SynFlow avoids collapse by construction instead.
        invert: the sanity check of Frankle et al. (ICLR 2021): keep the
            *lowest*-scoring connections (the same count, criterion and scope;
            an iterative criterion keeps the lowest at every round). See
            `sniptf.sanity` for the other two checks.
        structure: which weights are kept or removed together (see
            `sniptf/structure.py`): `"unstructured"` (default), `"N:M"` (e.g.
            `"2:4"`: N of every M consecutive weights along a kernel's input
            axis; `kappa` None or N/M), `"blocks:K"` (blocks of K along it,
            kept whole) or `"channels"` (whole output units; then
            `sniptf.compact` gives the smaller dense model).

    Returns:
        A new model whose prunable layers are `MaskedLayer`s with fixed masks,
        compiled like `model` if `model` was compiled.

    Raises:
        TypeError / ValueError: bad `kappa`, `criterion` or `scope`, a model
            with no prunable layer, a subclassed model, data that is empty or
            does not fit the model, or a non-finite loss.

    Example:

    ```python
    pruned = sniptf.prune(model, train_ds, kappa=0.05)
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    pruned.fit(train_ds, epochs=10)
    ```
    """
    # the owners' checks, before any work (saliency and select use the same)
    rounds = criteria.get_criterion(criterion).rounds
    shape = structure_lib.parse(structure)
    shape.check_scope(scope)
    kappa = shape.check_kappa(kappa)
    selection.check_seed(seed)
    selection.check_min_kept(min_kept_per_layer)
    if not isinstance(invert, bool):
        raise TypeError(f"Expected `invert` to be True or False. Received: invert={invert!r}")
    if not isinstance(isometry, (bool, dict)):
        raise TypeError(f"Expected `isometry` to be a bool or a dict of approximate_isometry "
                        f"arguments. Received: isometry={isometry!r}")
    # "channels" removes a unit's bias with its kernel column: biases are masked for it
    shape.check_model(model)
    pruned = transform.wrap(model, include_biases=include_biases or shape.kind == "channels")
    if not pruned.built:
        x, _, _ = next(iter(scoring_batches.batches(dataset, 1, batch_size)), (None, None, None))
        if x is None:
            raise ValueError("The dataset yielded no batches; it is empty. "
                             "Received: a dataset of 0 batches")
        pruned(x)
    entries = transform.masked_entries(pruned)
    if not entries:
        raise ValueError(
            f"Model '{model.name}' has no prunable layer. Supported layer types: "
            f"{', '.join(registry.supported_layers())}; register others with "
            "sniptf.register_prunable.")
    for e in entries:  # score at c = 1, also when re-pruning a pruned model
        e.mask.assign(np.ones(e.mask.shape, e.mask.dtype))
    keys = [e.key for e in entries]
    counted = shape.counted(entries)
    total = sum(int(np.prod(e.mask.shape)) for e in counted)
    kept = selection.count_for(kappa, total)  # κ as a count, once
    # one round (SNIP, ...), or an exponential schedule of rounds, each scored at the
    # mask the previous one left (SynFlow, FORCE); only the masks change in between
    counts = criteria.exponential_counts(total, kept, rounds) if rounds > 1 else [kept]
    for count in counts:
        # scores computed on demand, one weight at a time (never all held: 100M-weight models)
        scores = scoring.score_sources(
            pruned, dataset, criterion=criterion, num_batches=num_batches, loss=loss,
            batch_size=batch_size, seed=seed, bn_training=bn_training)
        if invert:  # the lowest scores first: select the largest of the negated
            scores = {k: (lambda f=f: np.negative(f())) for k, f in scores.items()}
        if shape.structured:
            masks = shape.select(entries, scores, count, scope=scope, seed=seed,
                                 min_kept_per_layer=min_kept_per_layer, model=pruned)
        else:
            masks = dict(zip(keys, selection.select_count(
                [scores[k] for k in keys], count, scope=scope, seed=seed,
                min_kept_per_layer=min_kept_per_layer)))
        del scores
        if len(counts) > 1:
            for e in entries:
                e.mask.assign(masks[e.key])
    if reinitialize:
        transform.redraw(entries, seed)
    transform.apply_masks(entries, masks)
    transform.set_structure(pruned, str(shape))
    _warn_empty_layers(entries, masks)
    _warn_uncovered(pruned, entries)
    if isometry:
        from sniptf.isometry import approximate_isometry
        approximate_isometry(pruned, **(isometry if isinstance(isometry, dict) else {}))
    return pruned


def _warn_uncovered(model, entries):
    uncovered = transform.uncovered_weights(model)
    if not uncovered:
        return
    values = sum(int(np.prod(v.shape)) for _, v in uncovered)
    covered = sum(int(np.prod(e.weight.shape)) for e in entries)
    where = ", ".join(f"{p} {list(v.shape)}" for p, v in uncovered[:5])
    more = f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else ""
    warnings.warn(
        f"sniptf: {len(uncovered)} matrix weight(s) ({values:,} values; the masks cover "
        f"{covered:,} of {covered + values:,}) could not be masked and stay dense: "
        f"{where}{more}. A custom layer uses them directly, or their layer type is "
        "not registered; register it with sniptf.register_prunable(cls, [attr]) "
        "to prune them. sniptf.sparsity(model) lists them.", stacklevel=3)


def _warn_empty_layers(entries, masks):
    kept = {}
    for e in entries:
        kept[e.layer_key] = kept.get(e.layer_key, 0) + int(masks[e.key].sum())
    for key, count in kept.items():
        if count == 0:
            warnings.warn(
                f"sniptf: layer '{key}' keeps none of its weights; its output "
                "no longer depends on its input. Use min_kept_per_layer=1 (a collapse "
                "guard), criterion='synflow', scope='layerwise', or a larger kappa.", stacklevel=3)
