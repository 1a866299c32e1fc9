"""Prunes, strips and exports every image model in keras.applications.

    python experiments/check_applications.py [--models=ResNet50,...] [--kappa=0.05]

For each model (built with weights=None at a small input size it accepts):
SNIP-prune at kappa on two random images, check the kept count, strip,
export a SavedModel, reload it with tf.saved_model.load and compare its
output with the pruned model's. Prints one line per model and a summary;
budget on 2 cores: about 20 minutes for all of them.
"""

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import sniptf

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Application names; default: all.")
flags.DEFINE_float("kappa", 0.05, "Fraction of weights kept.")
flags.DEFINE_integer("num_classes", 10, "Classes of the head.", lower_bound=1)
flags.DEFINE_bool("in_process", False, "Check in this process (the driver runs one process per "
                  "model so memory is returned between models).")

# The smallest input each family accepts with weights=None (square RGB).
_MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetLarge": 331,
             "NASNetMobile": 224}


def application_names():
    return sorted(n for n, f in inspect.getmembers(keras.applications, callable)
                  if n[0].isupper() and "weights" in inspect.signature(f).parameters)


def check(name, kappa, num_classes):
    size = _MIN_SIZE.get(name, 32)
    builder = getattr(keras.applications, name)
    model = builder(weights=None, input_shape=(size, size, 3), classes=num_classes,
                    classifier_activation=None)
    rng = np.random.default_rng(0)
    x = rng.random((2, size, size, 3), dtype=np.float32) * 255
    y = np.array([0, 1])
    start = time.perf_counter()
    pruned = sniptf.prune(model, (x, y), kappa=kappa)
    t_prune = time.perf_counter() - start
    report = sniptf.sparsity(pruned)
    expected = sniptf.selection.kept_count(kappa, report.total.total)
    tmp = tempfile.mkdtemp()
    try:
        sniptf.export(pruned, os.path.join(tmp, "sm"))
        reloaded = tf.saved_model.load(os.path.join(tmp, "sm"))
        diff = float(np.max(np.abs(reloaded.serve(x).numpy() - pruned(x).numpy())))
        scale = float(np.max(np.abs(pruned(x).numpy()))) or 1.0
    finally:
        shutil.rmtree(tmp)
    ok = report.kept == expected and diff <= 1e-5 * max(1.0, scale)
    return ok, (f"params {model.count_params():>11,d}  prunable {report.total.total:>11,d}  "
                f"kept {report.kept:>9,d} (expected {expected:,d})  prune {t_prune:5.1f} s  "
                f"export max|diff| {diff:.1e} (output scale {scale:.1e})")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    names = FLAGS.models or application_names()
    unknown = sorted(set(names) - set(application_names()))
    if unknown:
        raise app.UsageError(f"Unknown --models {unknown}; choose from {application_names()}")
    failures = []
    for name in names:
        if not FLAGS.in_process:
            proc = subprocess.run([sys.executable, __file__, f"--models={name}", f"--kappa={FLAGS.kappa}",
                                   f"--num_classes={FLAGS.num_classes}", "--in_process"],
                                  capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith(("ok  ", "FAIL"))]
            print(lines[0] if lines else f"FAIL {name:22s} process exited {proc.returncode}: "
                  f"{proc.stderr.strip().splitlines()[-1:] or ''}", flush=True)
            if proc.returncode or not lines:
                failures.append(name)
            continue
        start = time.perf_counter()
        try:
            ok, line = check(name, FLAGS.kappa, FLAGS.num_classes)
        except Exception as e:  # report and continue: the summary lists it
            ok, line = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        print(f"{'ok  ' if ok else 'FAIL'} {name:22s} {line}  [{time.perf_counter() - start:.0f} s]",
              flush=True)
        if not ok:
            failures.append(name)
    print(f"{len(names) - len(failures)}/{len(names)} applications prune, strip and export; "
          f"failures: {failures or 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
