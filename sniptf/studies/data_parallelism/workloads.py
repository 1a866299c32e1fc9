"""Workloads: a fixed model, data, optimizer and goal; the model and optimizer of a trial."""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from sniptf import data as data_lib
from sniptf import models as models_lib
from sniptf import training
from sniptf.pruning import prune
from sniptf.studies.data_parallelism.search import Param


@dataclasses.dataclass(frozen=True)
class Workload:
    """A fixed model, data, optimizer and goal; the searched metaparameters.

    `optimizer`: any `training.OPTIMIZERS` name — `sgd` (constant lr unless
    `decay_steps` is searched), `momentum` / `nesterov` (Keras's SGD) or
    `tf1_momentum` / `tf1_nesterov` (TF1's MomentumOptimizer, the authors'
    update: it differs from Keras's once the lr decays). Searched names: `learning_rate`, `momentum`,
    `decay_steps` (linear decay over that many steps) and `final_lr_factor`.
    `standardize`: inputs standardized with the training split's per-channel
    mean and std (the authors' preprocessing). `include_biases`: biases are
    scored and pruned with the weights (the authors' code: zero at init, they
    are pruned first). `data_seed` alone fixes the order of the training
    examples, the same for every trial whatever its init seed.
    """

    name: str
    model: str
    dataset: str
    optimizer: str
    space: tuple
    goal_error: float
    max_steps: int
    max_examples: int = 0  # > 0: per-B budget min(max_steps, max_examples / B)
    eval_every: int = 100
    eval_growth: float = 1.0
    data_seed: int = 0
    score_batch_size: int = 100
    train_examples: int = 0  # > 0: use only the first N training examples (tests)
    standardize: bool = True
    include_biases: bool = True

    def budget(self, batch_size):
        """The step budget of a trial at `batch_size`."""
        steps = self.max_steps
        if self.max_examples:
            steps = min(steps, max(1, self.max_examples // batch_size))
        return int(steps)

    def to_dict(self):
        """The workload as JSON-ready dicts (what a study's spec stores)."""
        d = dataclasses.asdict(self)
        d["space"] = [dataclasses.asdict(p) for p in self.space]
        return d

    @classmethod
    def from_dict(cls, d):
        """The workload `to_dict` described (a spec written before a field existed gets
        that field's default)."""
        d = dict(d)
        d["space"] = tuple(Param(**p) for p in d["space"])
        return cls(**d)


WORKLOADS = {
    # the authors' MNIST workload: Simple-CNN, plain SGD, constant lr, goal 2%, 40k steps
    "mnist_simple_cnn": Workload("mnist_simple_cnn", "dps_simple_cnn", "mnist", "sgd",
                                 (Param("learning_rate", 1e-4, 1.0, "log"),), 0.02, 40_000),
    # the authors' CIFAR-10 workload: ResNet-8 (no BN), TF1's Nesterov momentum (their
    # MomentumOptimizer(use_nesterov=True)), linear decay, goal 40%, 100k steps
    "cifar10_resnet8": Workload("cifar10_resnet8", "dps_resnet8", "cifar10", "tf1_nesterov",
                                (Param("learning_rate", 1e-4, 1.0, "log"),
                                 Param("momentum", 0.9, 0.9999, "reverse_log"),
                                 Param("decay_steps", 30_000, 60_000, "int"),
                                 Param("final_lr_factor", 1e-4, 0.1, "log")), 0.40, 100_000),
    # what fits 2 CPU cores: the MNIST workload on the bundled digits (see RESULTS)
    "mnist10k_simple_cnn": Workload("mnist10k_simple_cnn", "dps_simple_cnn", "mnist10k", "sgd",
                                    (Param("learning_rate", 1e-3, 1.0, "log"),), 0.04, 20_000,
                                    max_examples=2_000_000, eval_every=10, eval_growth=1.1),
    # the MNIST recipe on full Fashion-MNIST (the authors' code takes --datasource fashion-mnist;
    # the goal of 12% validation error is ours, set for this Simple-CNN without an FC layer)
    "fashion_mnist_simple_cnn": Workload("fashion_mnist_simple_cnn", "dps_simple_cnn", "fashion_mnist",
                                         "sgd", (Param("learning_rate", 1e-4, 1.0, "log"),), 0.12,
                                         40_000),
    # seconds per trial: for tests of the engine and the scripts
    "tiny": Workload("tiny", "lenet_300_100", "mnist10k", "sgd",
                     (Param("learning_rate", 1e-2, 0.5, "log"),), 0.5, 60, eval_every=10,
                     train_examples=512),
}


def register_workload(workload):
    """Adds (or replaces) a `Workload` under its `name`, for `make_spec`, the command's
    `--workload` and `--workload_module` (a module that calls this when imported).

    Raises:
        TypeError: not a `Workload`.
        ValueError: a model or dataset sniptf does not know.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"Expected a data_parallelism.Workload. Received: workload={workload!r}")
    models_lib.check_name(workload.model)
    data_lib.info(workload.dataset)
    if not workload.space or not all(isinstance(p, Param) for p in workload.space):
        raise TypeError(f"Expected Workload.space to be a tuple of Param. Received: space={workload.space!r}")
    WORKLOADS[workload.name] = workload
    return workload


def get_workload(name):
    """A registered `Workload` by name; raises ValueError listing them otherwise."""
    try:
        return WORKLOADS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown workload. Expected one of {sorted(WORKLOADS)}. "
                         f"Received: workload={name!r}") from None


def _arrays(workload, split):
    x, y = data_lib.load_numpy(workload.dataset, split, standardize=workload.standardize)
    if split == "train" and workload.train_examples:
        x, y = x[:workload.train_examples], y[:workload.train_examples]
    return x.astype(np.float32), y.astype(np.int64)


def workload_data(workload):
    """`(train, validation)`: the `(x, y)` arrays a trial of `workload` trains and
    validates on (standardized if the workload says so)."""
    return _arrays(workload, "train"), _arrays(workload, "validation")


def _epochs(seed, n):
    rng = np.random.RandomState(seed)  # the authors': one RandomState for the run's shuffles
    while True:
        yield rng.permutation(n).astype(np.int64)


def train_batches(workload, train, batch_size):
    """The training stream of a trial: every epoch a permutation of `train` drawn from a
    `RandomState(workload.data_seed)` (nothing else: not TensorFlow's global seed, which
    the init seed sets), as one stream of examples cut into batches of `batch_size`
    (a batch may span two epochs, as in the authors' generator). Infinite.

    No autotuning and no `prefetch`: their threads belong to the iterator, and a worker
    that had run many trials spent tens of seconds at exit stopping every trial's
    (py-spy showed the main thread in ~IteratorResource, waiting on tf.data's
    thread pool; 6.6 s after 3 tiny trials beside a busy worker, 30-57 s after 12
    real ones). The gather of a batch from memory is cheap inline."""
    x, y = (tf.constant(a) for a in train)
    order = tf.data.Dataset.from_generator(
        lambda: _epochs(workload.data_seed, len(train[1])),
        output_signature=tf.TensorSpec([len(train[1])], tf.int64))
    batches = order.unbatch().batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False  # no autotuning thread to stop either
    return batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i))).with_options(options)


def build_model(workload, sparsity, seed, train):
    """The workload's model at init seed `seed`, SNIP-pruned to `sparsity` over one
    epoch of batches of `score_batch_size` (dense for sparsity 0)."""
    keras.utils.set_random_seed(seed)
    info = data_lib.info(workload.dataset)
    model = models_lib.get(workload.model, info.input_shape, info.num_classes)
    if sparsity > 0:
        x, y = train
        batches = math.ceil(len(y) / workload.score_batch_size)
        model = prune(model, (x, y), kappa=1.0 - sparsity, num_batches=batches,
                      batch_size=workload.score_batch_size, seed=seed,
                      include_biases=workload.include_biases)
    return model


def optimizer(workload, params):
    """The workload's optimizer at `params` (a linear decay if `decay_steps` is searched)."""
    lr = params["learning_rate"]
    if "decay_steps" in params:
        lr = training.learning_rate_schedule("linear", lr, train_steps=int(params["decay_steps"]),
                                             end_factor=params.get("final_lr_factor", 0.0))
    return training.make_optimizer(workload.optimizer, lr, momentum=params.get("momentum", 0.9))
