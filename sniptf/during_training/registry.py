"""The during-training methods by name: what `sniptf-train --during_training`, the
where-PaI study and the plots read. A new method is one `MaskUpdater` subclass
(its `name`, `Settings` and `from_config`) and one entry here; its settings become
`TrainConfig` fields, `sniptf-train` flags and `metrics.json` records by themselves.
"""

import dataclasses

from sniptf import settings
from sniptf.during_training.dynamic import SET
from sniptf.during_training.dynamic import RigL
from sniptf.during_training.gradual import GradualPruning

METHODS = {cls.name: cls for cls in (GradualPruning, SET, RigL)}
OFF = ""


def settings_classes():
    """Each method's `Settings` dataclass, once each, in registry order."""
    return tuple(dict.fromkeys(cls.Settings for cls in METHODS.values()))


def method_names():
    """The values `TrainConfig.during_training` takes ("" for none)."""
    return (OFF,) + tuple(METHODS)


def callbacks_for(config):
    """The callback `config.during_training` names, built from its fields (`[]` for
    none); a field of a method that is not chosen, set to other than its default, is
    refused rather than ignored.

    Raises:
        ValueError: an unknown method, or a bad or stray setting, named as its field.
    """
    name = settings.check_choice("during_training", config.during_training, method_names())
    chosen = METHODS[name].Settings if name else None
    for cls in settings_classes():
        if cls is chosen:
            continue
        for field in dataclasses.fields(cls):
            value = getattr(config, field.name)
            if value != field.default:
                users = [n for n, m in METHODS.items() if m.Settings is cls]
                raise ValueError(f"{field.name} is a setting of during_training={' or '.join(map(repr, users))}. "
                                 f"Received: {field.name}={value!r} with during_training={name!r}")
    if name and not METHODS[name].takes_structure and config.structure != "unstructured":
        raise ValueError(f"during_training={name!r} changes single connections and would break "
                         f"structure={config.structure!r}; use during_training='gmp' or "
                         f"structure='unstructured'. Received: during_training={name!r} with "
                         f"structure={config.structure!r}")
    return [METHODS[name].from_config(config)] if name else []
