"""Iterative magnitude pruning with rewinding (Frankle & Carbin, 2019; Frankle et al., 2020).

One trajectory: train the wrapped model (a `RewindPoint` keeps the weights at
`rewind_step` on the first round), prune `fraction` of the kept weights by
magnitude (globally), rewind the kept weights to the step-`rewind_step` values,
and repeat: after round r the sparsity is 1 - (1 - fraction)^r of the starting
mask's, counted exactly as `GradualPruning` counts.
"""

from sniptf import magnitude
from sniptf.during_training import rewinding
from sniptf import transform


def sparsity_after(rounds, fraction, start=0.0):
    """The trajectory's sparsity after `rounds` rounds from `start`."""
    return 1.0 - (1.0 - start) * (1.0 - fraction) ** rounds


def run(model, train, *, rounds, fraction=0.2, rewind_step=0, log=print):
    """Runs `rounds` rounds of train → prune → rewind on a wrapped model.

    Args:
        model: a wrapped model (sniptf.wrap: dense masks, or a PaI mask).
        train: `train(model, callbacks)`: compiles if needed and fits `model`
            (the same budget every round: the caller's recipe).
        rounds: pruning rounds.
        fraction: the fraction of the kept weights pruned per round (0.2-0.4 in
            Frankle et al.).
        rewind_step: the step the kept weights are rewound to (0: lottery tickets
            at init; a few hundred: rewinding).
        log: one line per round.

    Returns:
        `[(round, sparsity, model)]`: after each round, the pruned model rewound
        (train it with the full budget to evaluate that sparsity; the next round
        trains its own copy).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"Expected `rounds` to be an int >= 1. Received: rounds={rounds!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Expected `fraction` in (0, 1). Received: fraction={fraction!r}")
    entries = transform.masked_entries(model)
    total = sum(int(e.mask.numpy().size) for e in entries)
    start = 1.0 - sum(int(e.mask.numpy().sum()) for e in entries) / total
    point = rewinding.RewindPoint(rewind_step)
    trajectory = []
    for r in range(1, rounds + 1):
        train(model, [point] if point.weights is None else [])
        target = sparsity_after(r, fraction, start)
        magnitude.prune_to(model, target)
        model = rewinding.rewind(model, point)
        log(f"IMP round {r}: sparsity {target:.4%}, rewound to step {rewind_step}")
        trajectory.append((r, target, rewinding.rewind(model, point)))  # the caller's own copy
    return trajectory
