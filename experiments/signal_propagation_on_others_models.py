"""The signal-propagation tools on models sniptf did not write: the keras-io MNIST convnet
and bidirectional-LSTM classifier as written there, a keras.applications MobileNetV2 and
small KerasHub BERT and ViT models (built offline, no pretrained weights; the builders of
experiments/during_training_on_others_models.py).

    python experiments/signal_propagation_on_others_models.py [--models=keras_io_mnist_convnet,...]

For each model: `sniptf.jacobian_singular_values` of the dense model and of its SNIP
mask at 90% (end to end, except for models fed token ids, and per prunable layer; finite,
one `SingularValues` per prunable layer), then
`sniptf.approximate_isometry` on the pruned kernels (its objective falls; the masks and
the pruned zeros are unchanged; the layerwise singular values move towards 1). Prints one
line per check, "ok" or "FAILED" with what differed, and the singular-value summaries.
"""

import numpy as np
from absl import app
from absl import flags

import sniptf
from sniptf import transform
from sniptf.studies import others_models

MODELS = {k: others_models.MODELS[k] for k in ("keras_io_mnist_convnet", "keras_io_bidirectional_lstm",
                                         "mobilenet_v2", "keras_hub_bert", "keras_hub_vit")}
FLAGS = flags.FLAGS
flags.DEFINE_multi_enum("models", list(MODELS), list(MODELS), "Models to try (repeat the flag).")
flags.DEFINE_integer("isometry_steps", 300, "Steps of approximate isometry.", lower_bound=1)


def _layer_distance(report):
    """Mean |σ − 1| over every layer's singular values."""
    return float(np.mean([np.abs(s.values - 1.0).mean() for s in report.layers]))


def checks(name, model, x, y, isometry_steps):
    """(check, passed, detail) for each tool on `model`."""
    probe = x[:2] if not isinstance(x, dict) else {k: v[:2] for k, v in x.items()}
    # token ids: no end-to-end Jacobian (sniptf refuses it, naming end_to_end=False)
    tokens = isinstance(x, dict) or not np.issubdtype(np.asarray(x).dtype, np.floating)
    jsv = lambda m: sniptf.jacobian_singular_values(m, probe, end_to_end=not tokens)  # noqa: E731
    e2e = lambda r: "none (token ids)" if r.end_to_end is None else f"{r.end_to_end.mean:.3g}"  # noqa: E731
    dense = jsv(model)
    finite = all(np.all(np.isfinite(s.values)) for s in dense.layers)
    yield "JSV of the dense model", finite and len(dense.layers) > 0, \
        f"{len(dense.layers)} layers, end to end mean {e2e(dense)}"
    pruned = sniptf.prune(others_models.compiled(model, name), (x, y), kappa=0.1)  # scores its loss
    entries = transform.masked_entries(pruned)
    before = jsv(pruned)
    layers = {s.name for s in before.layers}
    yield "JSV of the SNIP mask at 90%", len(before.layers) >= len({e.layer.name for e in entries}) \
        and all(np.all(np.isfinite(s.values)) for s in before.layers), \
        f"{len(before.layers)} layers ({', '.join(sorted({s.method for s in before.layers}))}), " \
        f"end to end mean {e2e(before)} (dense {e2e(dense)})"
    masks = [e.mask.numpy().copy() for e in entries]
    result = sniptf.approximate_isometry(pruned, steps=isometry_steps)
    after = jsv(pruned)
    same_masks = all(np.array_equal(m, e.mask.numpy()) for m, e in zip(masks, entries))
    zeros = all(np.all(e.weight.numpy()[e.mask.numpy() == 0] == 0) for e in entries)
    yield "approximate isometry: objective falls, masks and zeros kept", \
        result.history[-1] < result.history[0] and same_masks and zeros, \
        f"objective {result.history[0]:.4g} -> {result.history[-1]:.4g}"
    d0, d1 = _layer_distance(before), _layer_distance(after)
    yield "approximate isometry: layerwise singular values nearer 1", d1 < d0 and \
        {s.name for s in after.layers} == layers, f"mean |σ − 1| {d0:.3f} -> {d1:.3f}"


def main(argv):
    del argv
    failed = 0
    for name in FLAGS.models:
        model, x, y = MODELS[name]()
        for check, passed, detail in checks(name, model, x, y, FLAGS.isometry_steps):
            failed += not passed
            print(f"{name:28s} {check:62s} {'ok' if passed else 'FAILED'}  {detail}", flush=True)
    print(f"{failed} checks failed")
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(main)
