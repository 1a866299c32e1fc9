"""The masks-that-change callbacks and the sanity checks on models sniptf did not write
(issue 25): a keras.applications MobileNetV2, the keras-io MNIST convnet and
bidirectional-LSTM text classifier as written there, and small KerasHub BERT, GPT-2
and ViT models (built offline, no pretrained weights).

    python experiments/during_training_on_others_models.py [--models=mobilenet_v2,...]

For each model, on random data of its input shape: GradualPruning from a dense wrap
(the sparsity at the last step equals the schedule's), GradualPruning on top of a SNIP
mask, SET and RigL on a SNIP mask (every mask keeps its count), RewindPoint + rewind
(kept weights back at their step-k values), the three sanity checks (same layer names;
shuffle keeps each tensor's count, reinitialize each mask) and a `.keras` round trip in
the middle of a GradualPruning schedule (the reloaded model continues it). Prints one
line per check, "ok" or "FAILED" with what differed.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import sniptf
from sniptf import during_training
from sniptf import transform
from sniptf.studies import others_models

FLAGS = flags.FLAGS
L = keras.layers


MODELS = others_models.MODELS
_compiled = others_models.compiled
flags.DEFINE_multi_enum("models", list(MODELS), list(MODELS), "Models to try (repeat the flag).")


def _counts(model):
    return [int(e.mask.numpy().sum()) for e in transform.masked_entries(model)]


def _schedule(step, **schedule):
    return during_training.gradual.polynomial_sparsity(step, power=3, **schedule)


def checks(name, model, x, y):
    """(check, passed, detail) for each capability on `model`."""
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # 4 steps per epoch
    schedule = dict(initial_sparsity=0.0, final_sparsity=0.8, begin_step=2, end_step=10)
    wrapped = _compiled(sniptf.wrap(model), name)
    wrapped.fit(data, epochs=2, verbose=0, callbacks=[sniptf.GradualPruning(0.8, 2, 10, frequency=2, scope="global")])
    total = sniptf.sparsity(wrapped).total.total
    exact = lambda sparsity: round(sparsity * total) / total  # noqa: E731 - exact counts
    expected, got = exact(_schedule(8, **schedule)), sniptf.sparsity(wrapped).sparsity
    yield "GradualPruning from dense, step 8", abs(got - expected) < 1e-9, f"sparsity {got:.4f} (schedule {expected:.4f})"
    path = os.path.join(tempfile.mkdtemp(), "mid.keras")
    wrapped.save(path)
    reloaded = keras.models.load_model(path)
    reloaded.fit(data, epochs=1, verbose=0, callbacks=[sniptf.GradualPruning(0.8, 2, 10, frequency=2, scope="global")])
    got = sniptf.sparsity(reloaded).sparsity
    yield (".keras round trip at step 8, then 4 steps", abs(got - exact(0.8)) < 1e-9
           and int(reloaded.optimizer.iterations.numpy()) == 12, f"step {int(reloaded.optimizer.iterations.numpy())}, sparsity {got:.4f} (final 0.8)")

    pruned = _compiled(sniptf.prune(model, (x, y), kappa=0.5), name)
    pruned.fit(data, epochs=2, verbose=0, callbacks=[sniptf.GradualPruning(0.9, 0, 8, initial_sparsity=0.5, scope="global",
                                                                           frequency=2)])
    got = sniptf.sparsity(pruned).sparsity
    yield "GradualPruning on a SNIP mask, to step 8", abs(got - exact(0.9)) < 1e-9, f"sparsity {got:.4f} (final 0.9)"

    for make in (lambda: sniptf.SET(2, 20, seed=1), lambda: sniptf.RigL(2, 20)):
        callback = make()
        pruned = _compiled(sniptf.prune(model, (x, y), kappa=0.2), name)
        before = _counts(pruned)
        pruned.fit(data, epochs=2, verbose=0, callbacks=[callback])
        moved = sum(update["changed"] for update in callback.updates)
        yield (f"{type(callback).__name__} on a SNIP mask, 8 steps", _counts(pruned) == before
               and len(callback.updates) == 4 and moved > 0,
               f"{len(callback.updates)} updates moving {moved} connections, counts kept: {_counts(pruned) == before}")

    pruned = _compiled(sniptf.prune(model, (x, y), kappa=0.2), name)
    point = sniptf.RewindPoint(2)
    pruned.fit(data.take(2), epochs=1, verbose=0, callbacks=[point])  # steps 1-2
    kept_at_2 = [e.weight.numpy()[e.mask.numpy() > 0] for e in transform.masked_entries(pruned)]
    pruned.fit(data, epochs=1, verbose=0)
    rewound = sniptf.rewind(pruned, point)
    same = all(np.array_equal(e.weight.numpy()[e.mask.numpy() > 0], k)
               for e, k in zip(transform.masked_entries(rewound), kept_at_2))
    yield "RewindPoint(2) + rewind after 6 steps", same, "kept weights at their step-2 values" if same else "differ"

    pruned = sniptf.prune(model, (x, y), kappa=0.2)
    names = [layer.name for layer in pruned.layers]
    shuffled = sniptf.sanity.shuffle_within_layers(pruned, seed=1)
    reinit = sniptf.sanity.reinitialize(pruned, seed=1)
    inverted = sniptf.prune(model, (x, y), kappa=0.2, invert=True)
    yield ("sanity: shuffle / reinitialize / invert", [layer.name for layer in shuffled.layers] == names
           == [layer.name for layer in reinit.layers] and _counts(shuffled) == _counts(pruned)
           and all(np.array_equal(a.mask.numpy(), b.mask.numpy()) for a, b in
                   zip(transform.masked_entries(reinit), transform.masked_entries(pruned)))
           and sum(_counts(inverted)) == sum(_counts(pruned)),
           f"kept {sum(_counts(pruned))} / {sum(_counts(shuffled))} / {sum(_counts(reinit))} / {sum(_counts(inverted))}")


def main(argv):
    del argv
    failed = 0
    for name in FLAGS.models:
        keras.utils.set_random_seed(0)
        model, x, y = MODELS[name]()
        _compiled(model, name)
        print(f"{name} ({model.count_params():,} parameters)")
        for check, passed, detail in checks(name, model, x, y):
            failed += not passed
            print(f"  {'ok    ' if passed else 'FAILED'} {check}: {detail}", flush=True)
        keras.backend.clear_session()
    print(f"{failed} failed")


if __name__ == "__main__":
    app.run(main)
