"""Masks that change while `fit` runs: gradual magnitude pruning, SET, RigL, and the
rewind point of iterative magnitude pruning — each a small `MaskUpdater`.

    base.py       MaskUpdater: update steps, the invariant, slot resets, the dense-gradient hook, records
    gradual.py    GradualPruning (Zhu & Gupta / TF-MOT's polynomial schedule)
    dynamic.py    SET, RigL (google-research/rigl's drop-and-grow)
    rewinding.py  RewindPoint, rewind, and one IMP round across processes (next_round)
    registry.py   METHODS: name -> class, read by sniptf-train and the studies
"""

from sniptf.during_training.base import MaskUpdater
from sniptf.during_training.dynamic import SET
from sniptf.during_training.dynamic import RigL
from sniptf.during_training.gradual import GradualPruning
from sniptf.during_training.registry import METHODS
from sniptf.during_training.rewinding import RewindPoint
from sniptf.during_training.rewinding import rewind
