"""`TrainConfig`: everything a training run takes, declared once.

Each field is a `sniptf.settings.setting` (type, default, help, allowed values):
`sniptf-train`'s flags are made from them (`sniptf.commands.config_flags`) and
`metrics.json` records them as they are. The fields come in rooms:
`RunSettings` (model, data, optimizer, budget, strategy, output),
`starting_mask.StartSettings` (the mask at step 0) and each during-training
method's `Settings` (`during_training.registry`), so a new method's settings
join the config, the flags and the record without an edit here.
`prepare` checks a config before any work.
"""

import dataclasses
import math
import numbers

from sniptf import data as data_lib
from sniptf import distribute
from sniptf import initializers
from sniptf import models as models_lib
from sniptf import optimizers
from sniptf import run_dir
from sniptf import selection
from sniptf import starting_mask
from sniptf.during_training import registry
from sniptf.settings import BadSetting
from sniptf.settings import setting


@dataclasses.dataclass
class RunSettings:
    """Model, data, optimizer, budget, strategy and output of a run."""

    model: str = setting("lenet_300_100", "Zoo model.", choices=lambda: sorted(models_lib.MODELS))
    dataset: str = setting("mnist10k", "Dataset.", choices=lambda: sorted(data_lib.DATASETS))
    standardize: bool = setting(False, "Standardize inputs with the training split's per-channel mean and "
                                       "std, as the SNIP authors do (default: pixels in [0, 1]).")
    kernel_initializer: str = setting("", "Override the zoo model's kernel initializer (a Keras name).")
    batch_size: int = setting(100, "Global batch size.", lower_bound=1)
    train_steps: int = setting(1000, "Training steps.", lower_bound=1)
    eval_every: int = setting(100, "Steps between validations, checkpoints and backups (the last epoch "
                                   "is shorter if it does not divide --train_steps).", lower_bound=1)
    optimizer: str = setting("momentum", "Optimizer.", choices=optimizers.OPTIMIZERS)
    learning_rate: float = setting(0.1, "Initial learning rate.")
    momentum: float = setting(0.9, "Momentum (momentum / nesterov / tf1_*), in [0, 1).")
    lr_schedule: str = setting("piecewise", "Learning-rate schedule.", choices=optimizers.LR_SCHEDULES)
    lr_decay_every: int = setting(25000, "piecewise: steps between decays.")
    lr_decay_factor: float = setting(0.1, "piecewise: factor per decay.")
    lr_end_factor: float = setting(0.0, "linear: final learning rate / initial.")
    weight_decay: float = setting(0.0, "Decoupled weight decay (e.g. 5e-4), >= 0.")
    seed: int = setting(0, "Seed of the init, data order and mask.")
    strategy: str = setting("default", "tf.distribute strategy.", choices=distribute.STRATEGIES)
    tpu: str = setting("", "With --strategy=tpu: TPU name, 'local' or grpc://host:port.")
    num_cpu_devices: int = setting(0, "With --strategy=mirrored: split the CPU into N logical devices.",
                                   lower_bound=0)
    output_dir: str = setting("out/train", "Output directory.")
    overwrite: bool = setting(False, "Train again from scratch over a finished run in --output_dir "
                                     "(without it, such a directory is refused).")


@dataclasses.dataclass
class DuringTrainingSettings:
    """Which method changes the masks while training (`during_training.METHODS`)."""

    during_training: str = setting("", "Masks that change during training: gradual magnitude pruning "
                                       "(gmp), SET or RigL, on the pruned (or, with --criterion=none, "
                                       "dense-wrapped) model.", choices=registry.method_names)


@dataclasses.dataclass
class TrainConfig(*registry.settings_classes(), DuringTrainingSettings, starting_mask.StartSettings,
                  RunSettings):
    """Everything `training.run` needs; `sniptf-train` fills it from its flags."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked `TrainConfig` and what checking it produced; `prepare` makes it."""

    config: TrainConfig
    info: data_lib.DatasetInfo
    epochs: int
    steps_per_epoch: int


def check_types(config):
    """Each field of `config` of its declared type (an int is a float too; no bool is an
    int) and at least its `lower_bound`."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kind = field.type
        ok = (isinstance(value, bool) if kind is bool else
              not isinstance(value, bool) and isinstance(value, numbers.Integral) if kind is int else
              not isinstance(value, bool) and isinstance(value, numbers.Real) if kind is float else
              isinstance(value, kind))
        if not ok:
            raise BadSetting(field.name, value, f"a {kind.__name__}")
        bound = field.metadata.get("lower_bound")
        if bound is not None and value < bound:
            raise BadSetting(field.name, value, f"an int >= {bound}")


def prepare(config):
    """Checks every value of `config` with the function that uses it; no side effects.

    Returns:
        A `Plan` for `training.run`.

    Raises:
        ValueError / TypeError: the first bad value, named as `field=value`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"Expected a TrainConfig. Received: config={config!r}")
    check_types(config)
    models_lib.check_name(config.model)
    info = data_lib.info(config.dataset)
    starting_mask.check(config)
    optimizers.learning_rate_schedule(config.lr_schedule, config.learning_rate, train_steps=config.train_steps,
                                      decay_every=config.lr_decay_every, decay_factor=config.lr_decay_factor,
                                      end_factor=config.lr_end_factor)
    optimizers.check_optimizer(config.optimizer, config.momentum, config.weight_decay)
    selection.check_seed(config.seed)
    if config.kernel_initializer:
        initializers.get(config.kernel_initializer)
    distribute.check_strategy(config.strategy, tpu=config.tpu, num_cpu_devices=config.num_cpu_devices or None)
    registry.callbacks_for(config)  # each method checks its own values
    run_dir.check(config.output_dir, overwrite=config.overwrite)
    # epochs of eval_every steps; the last one is shorter when eval_every
    # does not divide train_steps (callbacks.StopAtStep ends it)
    steps_per_epoch = min(config.eval_every, config.train_steps)
    return Plan(config, info, math.ceil(config.train_steps / steps_per_epoch), steps_per_epoch)


def record(config):
    """`config` as `metrics.json` records it: every field, as given."""
    return dataclasses.asdict(config)
