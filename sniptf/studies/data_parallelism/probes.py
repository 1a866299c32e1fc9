"""Probes along training: the local Lipschitz constant and the gradient noise scale."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from sniptf import run_dir
from sniptf import smoothness
from sniptf.studies.data_parallelism.workloads import Workload
from sniptf.studies.data_parallelism.workloads import _arrays
from sniptf.studies.data_parallelism.workloads import build_model
from sniptf.studies.data_parallelism.workloads import optimizer as optimizer_for


def probe(workload, sparsity, batch_size, params, *, steps, every, probe_examples=2000,
          microbatch=10, seed=0, log=print):
    """Trains one configuration with `model.fit`, measuring the local Lipschitz
    constant (`smoothness.LipschitzProbe`) and B_simple every `every` steps.

    The "full batch" of both is a fixed sample of `probe_examples` training
    examples (the authors use the whole training set; stated in RESULTS).

    Returns:
        `{"lipschitz": [[step, L], ...], "noise_scale": [[step, b_simple], ...]}`.
    """
    train = _arrays(workload, "train")
    model = build_model(workload, sparsity, seed, train)
    rng = np.random.default_rng(workload.data_seed)
    pick = rng.permutation(len(train[1]))[:probe_examples]
    sample = (train[0][pick], train[1][pick])
    model.compile(optimizer_for(workload, params),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    noise = [[0, smoothness.gradient_noise_scale(model, sample, microbatch=microbatch)["b_simple"]]]

    class Noise(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % every == 0:
                noise.append([step, smoothness.gradient_noise_scale(
                    self.model, sample, microbatch=microbatch)["b_simple"]])

    lipschitz = smoothness.LipschitzProbe(sample, every=every)
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[1]), seed=workload.data_seed)
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[lipschitz, Noise()])
    log(f"  probe sparsity={sparsity:g}: L {[round(v, 2) for _, v in lipschitz.history]}")
    keras.backend.clear_session()
    return {"lipschitz": [[int(s), float(v)] for s, v in lipschitz.history], "noise_scale": noise}


def run_probes(spec, points, *, batch_size, steps, every, cache_path=None, log=print):
    """`probe` per sparsity at `batch_size` with that point's best metaparameters.

    Results are cached in `cache_path` (JSON, keyed by sparsity and the probe
    settings), so a repeated report does not retrain.
    """
    workload = Workload.from_dict(spec["workload"])
    cache = {}
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    lipschitz, noise = [], []
    for s in spec["sparsities"]:
        point = next((p for p in points if p["sparsity"] == s and p["batch_size"] == batch_size), None)
        if point is None or point["best_params"] is None:
            log(f"  no probe for sparsity {s:g}: batch size {batch_size} has no reached trial")
            continue
        key = json.dumps([s, batch_size, steps, every, point["best_params"]])
        if key not in cache:
            cache[key] = probe(workload, s, batch_size, point["best_params"], steps=steps, every=every,
                               log=log)
            if cache_path:
                run_dir.write_text(cache_path, json.dumps(cache))
        values = [v for _, v in cache[key]["lipschitz"]]
        lipschitz.append({"sparsity": s, "batch_size": batch_size, "steps": [st for st, _ in cache[key]["lipschitz"]],
                          "values": values, "mean": float(np.mean(values)) if values else None})
        noise += [{"sparsity": s, "step": st, "b_simple": b} for st, b in cache[key]["noise_scale"]]
    return lipschitz, noise
