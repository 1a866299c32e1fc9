"""Maximal compression before collapse (the SynFlow paper's measure) for keras.applications.

    python experiments/max_compression.py [--models=ResNet50,...] [--criteria=snip,...]

For each model (weights=None, 10 classes, a small input it accepts) and criterion,
the highest sparsity on a grid of kept fractions 10^-1, 10^-1.25, ..., 10^-4 at which
no masked layer is emptied (every layer keeps at least one weight), and the effective
sparsity of the mask there (`sniptf.effective_sparsity`: a layer can keep weights
and still be cut off from the input or the output), and the highest grid sparsity
at which every output still depends on the input (`max_connected_sparsity`; the
masks passed are nested, so it is found by bisection). Scoring data: 16 mnist10k digits
resized to the input size as RGB (real images; no ImageNet here).
* one-shot criteria (magnitude, random, snip, grasp): scored once, then each grid
  point is an exact top-k selection of the same scores;
* iterative criteria (synflow, force): one run of the criterion's own exponential
  schedule to 10^-4 (100 / 60 rounds), re-scored at the current mask each round;
  the answer is the last grid point passed before the first round that empties a
  layer. This is cheaper than one run per grid point (the paper's protocol) and
  can differ from it, because a run to 10^-4 shrinks faster than one to 10^-2.
One process per model (memory is returned between models). Prints one line per
(model, criterion) and a markdown table.
"""

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from sniptf import criteria as criteria_lib
from sniptf import criteria
from sniptf import selection
from sniptf import transform
import sniptf

FLAGS = flags.FLAGS
MODELS = ["MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0",
          "EfficientNetV2B0", "ResNet50", "ResNet50V2", "DenseNet121", "ConvNeXtTiny", "VGG16",
          "InceptionV3", "Xception"]
CRITERIA = ["magnitude", "random", "snip", "grasp", "synflow", "force"]
flags.DEFINE_list("models", MODELS, "keras.applications names.")
flags.DEFINE_list("criteria", CRITERIA, "Criteria.")
flags.DEFINE_integer("size", 96, "Input size (square RGB); at least what the family accepts.")
flags.DEFINE_string("output", "", "Append one JSON line per result to this file.")
flags.DEFINE_bool("in_process", False, "Internal: measure in this process.")
flags.DEFINE_bool("without_preprocessing", False,
                  "Build the models that have one (MobileNetV3, EfficientNetV2) with "
                  "include_preprocessing=False, as SynFlow needs (their Rescaling to [-1, 1] "
                  "leaves no positive flow).")

GRID = [10 ** (-e / 4) for e in range(4, 17)]  # 10^-1 ... 10^-4
_MIN_SIZE = {"InceptionV3": 75, "Xception": 71, "NASNetMobile": 224}


def _data(size):
    x, y = sniptf.data.load_numpy("mnist10k", "validation")
    x = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(x[:16])), (size, size)).numpy()
    return x * 255.0, y[:16]


def _emptied(entries, masks):
    kept = {}
    for e in entries:
        kept[e.layer_key] = kept.get(e.layer_key, 0) + int(masks[e.key].sum())
    return [k for k, v in kept.items() if v == 0]


def _packed(masks):
    return {k: np.packbits(np.asarray(m, bool).reshape(-1)) for k, m in masks.items()}


def _unpacked(bits, shape):
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def measure(name, criterion, size, without_preprocessing=False):
    import inspect
    import keras
    size = max(size, _MIN_SIZE.get(name, 32))
    keras.utils.set_random_seed(0)
    build = getattr(keras.applications, name)
    options = {}
    if without_preprocessing and "include_preprocessing" in inspect.signature(build).parameters:
        options["include_preprocessing"] = False
    model = build(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None,
                  **options)
    data = None if criterion == "synflow" else _data(size)
    wrapped = sniptf.wrap(model)
    entries = transform.masked_entries(wrapped)
    keys = [e.key for e in entries]
    total = sum(int(np.prod(e.mask.shape)) for e in entries)
    rounds = criteria.get_criterion(criterion).rounds
    best, first_empty, passed = None, None, []
    if rounds == 1:
        scores = sniptf.saliency(wrapped, data, criterion=criterion)
        for kappa in GRID:
            masks = dict(zip(keys, selection.select([scores[k] for k in keys], kappa)))
            emptied = _emptied(entries, masks)
            if emptied:
                first_empty = emptied[0]
                break
            best = kappa
            passed.append((kappa, _packed(masks)))
    else:
        counts = criteria_lib.exponential_counts(total, selection.kept_count(GRID[-1], total), rounds)
        for count in counts:
            scores = sniptf.saliency(wrapped, data, criterion=criterion)
            masks = dict(zip(keys, selection.select([scores[k] for k in keys], count)))
            emptied = _emptied(entries, masks)
            if emptied:
                first_empty = emptied[0]
                break
            best = min([k for k in GRID if k >= count / total], default=None)
            for e in entries:
                e.mask.assign(masks[e.key])
            if best is not None and (not passed or passed[-1][0] != best):
                passed.append((best, _packed(masks)))
        if first_empty is None:  # the whole schedule ran: 10^-4 reached, no layer emptied
            best = GRID[-1]
            if passed and passed[-1][0] != best:
                passed.append((best, passed[-1][1]))
    result = {"model": name, "criterion": criterion, "prunable": total,
              "max_sparsity": None if best is None else 1.0 - best, "first_emptied": first_empty}
    if passed:  # the masks passed are nested: connectivity is lost once, at most
        def connected(i):
            for e in entries:
                e.mask.assign(_unpacked(passed[i][1][e.key], e.mask.shape))
            report = sniptf.effective_sparsity(wrapped)
            return report, report.kept > 0 and report.dead_units[-1].dead == 0
        at_max, ok = connected(len(passed) - 1)
        result.update(nominal_sparsity_at_max=at_max.nominal.sparsity, effective_sparsity_at_max=at_max.sparsity,
                      effective_kept_at_max=at_max.kept, dead_outputs_at_max=at_max.dead_units[-1].dead)
        lo, hi = -1, len(passed) - 1  # passed[lo] connected (-1: none), passed[hi] not, unless ok
        if ok:
            lo = hi
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if connected(mid)[1]:
                    lo = mid
                else:
                    hi = mid
        result["max_connected_sparsity"] = None if lo < 0 else 1.0 - passed[lo][0]
    return result


def _percent(value):
    return "< 90%" if value is None else f"{value:.2%}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.criteria) - set(criteria.CRITERIA))
    if unknown:
        raise app.UsageError(f"Unknown criteria. Received: --criteria={unknown}")
    if FLAGS.in_process:
        for name in FLAGS.models:
            for criterion in FLAGS.criteria:
                start = time.perf_counter()
                try:
                    result = measure(name, criterion, FLAGS.size, FLAGS.without_preprocessing)
                    result["without_preprocessing"] = FLAGS.without_preprocessing
                except Exception as e:  # noqa: BLE001 - e.g. SynFlow with no positive flow: report it
                    result = {"model": name, "criterion": criterion, "max_sparsity": None,
                              "first_emptied": None,
                              "error": f"{type(e).__name__}: " + " ".join(str(e).split())[:200]}
                result["seconds"] = round(time.perf_counter() - start, 1)
                print("RESULT " + json.dumps(result), flush=True)
        return 0
    results = []
    for name in FLAGS.models:
        proc = subprocess.run([sys.executable, __file__, f"--models={name}",
                               f"--criteria={','.join(FLAGS.criteria)}", f"--size={FLAGS.size}",
                               f"--without_preprocessing={FLAGS.without_preprocessing}",
                               "--in_process"], capture_output=True, text=True)
        found = [json.loads(l[7:]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or len(found) != len(FLAGS.criteria):
            print(f"FAIL {name}: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        for r in found:
            s = (f"n/a ({r['error']})" if r.get("error") else "collapses above 90%"
                 if r["max_sparsity"] is None else f"{r['max_sparsity']:.4%}"
                 + (" (the grid's end)" if r["first_emptied"] is None else ""))
            print(f"{r['model']:18s} {r['criterion']:9s} max sparsity without an emptied layer {s}"
                  f"  (first emptied: {r['first_emptied']}; {r['seconds']} s)"
                  + (f"; effective there {r['effective_sparsity_at_max']:.4%} ({r['effective_kept_at_max']} "
                     f"weights on a path, {r['dead_outputs_at_max']} dead outputs); every output connected "
                     f"up to {_percent(r['max_connected_sparsity'])}"
                     if "effective_sparsity_at_max" in r else ""), flush=True)
            if FLAGS.output:
                with open(FLAGS.output, "a") as f:
                    f.write(json.dumps(r) + "\n")
        results += found
    print("Each cell: the max sparsity without an emptied layer (the max with every output connected).")
    header = "| model | " + " | ".join(FLAGS.criteria) + " |"
    print(header + "\n|" + " --- |" * (len(FLAGS.criteria) + 1))
    for name in FLAGS.models:
        cells = []
        for criterion in FLAGS.criteria:
            r = next((r for r in results if r["model"] == name and r["criterion"] == criterion), None)
            cells.append("—" if r is None else "n/a" if r.get("error") else
                         "< 90%" if r["max_sparsity"] is None else f"{r['max_sparsity']:.2%}"
                         + (f" ({_percent(r['max_connected_sparsity'])})" if "max_connected_sparsity" in r else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    app.run(main)
