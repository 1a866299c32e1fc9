"""sniptf: sparse neural networks pruned at initialization, for Keras 3."""

from sniptf import backup
from sniptf import callbacks
from sniptf import data
from sniptf import distribute
from sniptf import during_training
from sniptf import initializers
from sniptf import magnitude
from sniptf import models
from sniptf import sanity
from sniptf import training
from sniptf.compaction import compact
from sniptf.effective_sparsity_report import effective_sparsity
from sniptf.criteria import register_criterion
from sniptf.during_training import RigL
from sniptf.during_training import SET
from sniptf.exporters import export
from sniptf.during_training import GradualPruning
from sniptf.isometry import approximate_isometry
from sniptf.jacobian import jacobian_singular_values
from sniptf.masked_layer import MaskedLayer, MaskedModel
from sniptf.pruning import prune
from sniptf.registry import register_container
from sniptf.registry import register_prunable
from sniptf.registry import supported_layers
from sniptf.sparsity_report import sparsity
from sniptf.during_training import RewindPoint
from sniptf.during_training import rewind
from sniptf.scoring import saliency
from sniptf.selection import select
from sniptf.transform import strip
from sniptf.transform import wrap

__version__ = "0.1.0"
