"""A seeded prune gives the same mask on any core count: one core and two, bit for bit."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRITERIA = ("snip", "grasp", "synflow", "force", "magnitude", "random")

# every criterion on a dense net, a conv net and a residual net with batch-norm; prints
# {"model/criterion": sha256 of the masks} and the threads TensorFlow had
_PRUNE_ALL = """
import hashlib, json, os
import numpy as np
import keras, tensorflow as tf
import sniptf
from sniptf import transform
x, y = sniptf.data.load_numpy("mnist10k", "train")
rgb = np.random.default_rng(0).normal(size=(32, 32, 32, 3)).astype("float32")
cases = {"lenet_300_100": ((28, 28, 1), (x[:100], y[:100]), 0.02),
         "lenet5_caffe": ((28, 28, 1), (x[:100], y[:100]), 0.05),
         "resnet8": ((32, 32, 3), (rgb, y[:32]), 0.05)}
out = {"cpus": len(os.sched_getaffinity(0))}
for name, (shape, data, kappa) in cases.items():
    for criterion in %r:
        keras.utils.set_random_seed(0)
        model = sniptf.models.get(name, shape, 10)
        pruned = sniptf.prune(model, None if criterion == "synflow" else data, kappa=kappa,
                              criterion=criterion, seed=0)
        h = hashlib.sha256()
        for e in transform.masked_entries(pruned):
            h.update(e.key.encode() + np.packbits(e.mask.numpy().astype(bool)).tobytes())
        out[name + "/" + criterion] = h.hexdigest()
print(json.dumps(out))
""" % (CRITERIA,)


def _prune_all(prefix):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.Popen([*prefix, sys.executable, "-c", _PRUNE_ALL], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_masks_are_bit_identical_on_one_core_and_on_two_for_every_criterion():
    """The same seeded prune in two processes, one pinned to a single core (TensorFlow and
    oneDNN then run every op on one thread) and one on two cores (threaded matmuls,
    convolutions and reductions): every criterion's mask on every model is the same bit
    for bit — FORCE's 60 re-scored rounds and SynFlow's 100 included."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil.which("taskset"):
        pytest.skip("needs 2 CPU cores and taskset (util-linux) to compare 1 core with 2")
    procs = [_prune_all(["taskset", "-c", str(cpus[0])]), _prune_all(["taskset", "-c", f"{cpus[0]},{cpus[1]}"])]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    one, two = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert (one.pop("cpus"), two.pop("cpus")) == (1, 2)
    assert len(one) == 3 * len(CRITERIA)
    differ = sorted(k for k in one if one[k] != two[k])
    assert not differ, f"masks differ between 1 and 2 cores: {differ}"
