"""Bad input to every public function: a clear error that says what was received,
and the user's model and files exactly as they were."""

import os
import re

import keras
import numpy as np
import pytest

import sniptf
from sniptf import data
from sniptf import distribute
from sniptf import initializers
from sniptf import models

X = np.random.default_rng(0).random((6, 4), dtype=np.float32)
Y = np.array([0, 1, 0, 1, 0, 1])


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def pruned():
    return sniptf.prune(_model(), (X, Y), kappa=0.5)


def _nan(shape):
    return np.full(shape, np.nan, np.float32)


MODEL_CASES = {  # name: (call on (model, pruned, tmp), error, what the message must say)
    "prune: model a str": (lambda m, p, d: sniptf.prune("abc", (X, Y)), TypeError, "Received: model='abc'"),
    "prune: x of the wrong shape": (lambda m, p, d: sniptf.prune(m, (np.ones((6, 7), np.float32), Y)),
                                    ValueError, r"Received: x of shape \(6, 7\)"),
    "prune: empty arrays": (lambda m, p, d: sniptf.prune(m, (X[:0], Y[:0])), ValueError,
                            r"arrays are empty. Received: x of shape \(0, 4\)"),
    "prune: NaN inputs": (lambda m, p, d: sniptf.prune(m, (_nan((6, 4)), Y)), ValueError,
                          "Received: loss=nan on batch 0"),
    "prune: label out of range": (lambda m, p, d: sniptf.prune(m, (X, Y + 4)), ValueError,
                                  r"label value of \d.*outside the valid range.*Received: x of shape"),
    "prune: one output unit, not compiled": (
        lambda m, p, d: sniptf.prune(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, "sigmoid")]),
                                     (X, Y), kappa=0.5),
        ValueError, r"one output unit \(output shape \(None, 1\)\).*binary_crossentropy.*Received: loss=None"),
    "prune: x and y disagree": (lambda m, p, d: sniptf.prune(m, (X, Y[:3])), ValueError,
                                "Received: x with 6 examples, y with 3"),
    "prune: dataset a str": (lambda m, p, d: sniptf.prune(m, "mnist"), TypeError, "Received: dataset=str"),
    "prune: kappa NaN": (lambda m, p, d: sniptf.prune(m, (X, Y), kappa=float("nan")), ValueError,
                         "Received: kappa=nan"),
    "prune: kappa above N": (lambda m, p, d: sniptf.prune(m, (X, Y), kappa=10**6), ValueError,
                             "Received: kappa=1000000"),
    "prune: unknown criterion": (lambda m, p, d: sniptf.prune(m, (X, Y), criterion="snipp"), ValueError,
                                 "Received: criterion='snipp'"),
    "prune: unknown scope": (lambda m, p, d: sniptf.prune(m, (X, Y), scope="local"), ValueError,
                             "Received: scope='local'"),
    "prune: seed a str": (lambda m, p, d: sniptf.prune(m, (X, Y), seed="a"), TypeError, "Received: seed='a'"),
    "prune: negative seed": (lambda m, p, d: sniptf.prune(m, (X, Y), seed=-1), TypeError, "Received: seed=-1"),
    "prune: batch_size 0": (lambda m, p, d: sniptf.prune(m, (X, Y), batch_size=0), ValueError,
                            "Received: batch_size=0"),
    "prune: num_batches 0": (lambda m, p, d: sniptf.prune(m, (X, Y), num_batches=0), ValueError,
                             "Received: num_batches=0"),
    "prune: include_biases a str": (lambda m, p, d: sniptf.prune(m, (X, Y), include_biases="yes"),
                                    TypeError, "Received: include_biases='yes'"),
    "prune: unknown loss": (lambda m, p, d: sniptf.prune(m, (X, Y), loss="nope"), ValueError,
                            "Received: loss='nope'"),
    "saliency: a str": (lambda m, p, d: sniptf.saliency("abc", (X, Y)), TypeError, "Received: model='abc'"),
    "saliency: not wrapped": (lambda m, p, d: sniptf.saliency(m, (X, Y)), ValueError, "not wrapped"),
    "saliency: criterion an int": (lambda m, p, d: sniptf.saliency(p, (X, Y), criterion=1), ValueError,
                                   "Received: criterion=1"),
    "select: None": (lambda m, p, d: sniptf.select(None, 0.1), ValueError, "Received: scores=None"),
    "select: strings": (lambda m, p, d: sniptf.select(["abc"], 0.1), TypeError, "Received: dtype <U3"),
    "select: Inf": (lambda m, p, d: sniptf.select([np.array([1.0, np.inf])], 1), ValueError,
                    r"Received: 1 non-finite of 2 entries"),
    "wrap: a layer": (lambda m, p, d: sniptf.wrap(keras.layers.Dense(3)), TypeError, "Received: model=<Dense"),
    "strip: a str": (lambda m, p, d: sniptf.strip("abc"), TypeError, "Received: model='abc'"),
    "sparsity: a str": (lambda m, p, d: sniptf.sparsity("abc"), TypeError, "Received: model='abc'"),
    "export: a str": (lambda m, p, d: sniptf.export("abc", os.path.join(d, "new", "a")), TypeError,
                      "Received: model='abc'"),
    "export: path None": (lambda m, p, d: sniptf.export(p, None), TypeError, "Received: path=None"),
    "export: unknown format": (lambda m, p, d: sniptf.export(p, os.path.join(d, "b"), format="onnx"),
                               ValueError, "Received: format='onnx'"),
    "export: batch_size_hint 0": (lambda m, p, d: sniptf.export(p, os.path.join(d, "c"),
                                                                format="sparse_saved_model",
                                                                batch_size_hint=0),
                                  ValueError, "Received: batch_size_hint=0"),
    "isometry: a str": (lambda m, p, d: sniptf.approximate_isometry("abc"), TypeError,
                        "Received: model='abc'"),
    "isometry: steps -1": (lambda m, p, d: sniptf.approximate_isometry(p, steps=-1), ValueError,
                           "Received: steps=-1"),
    "isometry: learning rate NaN": (lambda m, p, d: sniptf.approximate_isometry(p, learning_rate=float("nan")),
                                    ValueError, "Received: learning_rate=nan"),
    "jacobian: x of the wrong shape": (lambda m, p, d: sniptf.jacobian_singular_values(p, np.ones((2, 9), np.float32)),
                                       ValueError, r"Received: x of shape \(2, 9\)"),
    "jacobian: NaN x": (lambda m, p, d: sniptf.jacobian_singular_values(p, _nan((2, 4))), ValueError,
                        "with NaN or Inf entries"),
    "jacobian: empty x": (lambda m, p, d: sniptf.jacobian_singular_values(p, X[:0]), ValueError,
                          r"Received: x of shape \(0, 4\)"),
    "register_prunable: a str": (lambda m, p, d: sniptf.register_prunable("Dense", ["kernel"]), TypeError,
                                 "Received: layer_class='Dense'"),
    "register_criterion: empty name": (lambda m, p, d: sniptf.register_criterion("", None, needs_gradient=True),
                                       TypeError, "Received: name=''"),
    "MaskedLayer: a str": (lambda m, p, d: sniptf.MaskedLayer("abc"), TypeError, "Received: layer='abc'"),
    "data.load: unknown name": (lambda m, p, d: data.load("nope", "train"), ValueError, "Received: name='nope'"),
    "data.load: unknown split": (lambda m, p, d: data.load("mnist10k", "trainn"), ValueError,
                                 "Received: split='trainn'"),
    "data.load_splits: batch 0": (lambda m, p, d: data.load_splits("mnist10k", 0), ValueError,
                                  "Received: batch_size=0"),
    "data.load_splits: 0 scoring batches": (lambda m, p, d: data.load_splits("mnist10k", 10, score_batches=0),
                                            ValueError, "Received: score_batches=0"),
    "models.get: unknown": (lambda m, p, d: models.get("nope", (28, 28, 1), 10), ValueError,
                            "Received: name='nope'"),
    "models.get: a conv net on vectors": (lambda m, p, d: models.get("lenet5_caffe", (28,), 10), ValueError,
                                          r"Received: input_shape=\(28,\)"),
    "models.get: 0 classes": (lambda m, p, d: models.get("lenet_300_100", (28, 28, 1), 0), ValueError,
                              "Received: num_classes=0"),
    "initializers.get: unknown": (lambda m, p, d: initializers.get("nope"), ValueError,
                                  "Received: kernel_initializer='nope'"),
    "make_strategy: unknown": (lambda m, p, d: distribute.make_strategy("nope"), ValueError,
                               "Received: strategy='nope'"),
}


def _state(model, directory):
    return ([w.copy() for w in model.get_weights()], [v.numpy().copy() for v in model.variables],
            sorted(os.walk(directory)))


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_input_says_what_it_received_and_changes_nothing(case, pruned, tmp_path):
    call, error, match = MODEL_CASES[case]
    model = _model()
    (tmp_path / "keep.txt").write_text("mine")
    before = _state(model, tmp_path), _state(pruned, tmp_path)
    with pytest.raises(error, match=match):
        call(model, pruned, str(tmp_path))
    after = _state(model, tmp_path), _state(pruned, tmp_path)
    for (weights, variables, files), (weights2, variables2, files2) in zip(before, after):
        assert files == files2  # no directory or file created, none removed
        for a, b in zip(weights + variables, weights2 + variables2):
            np.testing.assert_array_equal(a, b)
    assert (tmp_path / "keep.txt").read_text() == "mine"


# Every script: values absl itself rejects (types, enums, bounds) stop in the commands'
# flag parser, values that parse but are wrong in the script's own checks; both end
# "Received: --flag=value", before any work, and nothing is written.
FLAG_CASES = [
    ("train", ["--seed=-1"], "Received: --seed=-1"),
    ("train", ["--kappa=nan"], "Received: --kappa=nan"),
    ("train", ["--kernel_initializer=nope"], "Received: --kernel_initializer='nope'"),
    ("train", ["--learning_rate=nan"], "Received: --learning_rate=nan"),
    ("train", ["--weight_decay=-1"], "Received: --weight_decay=-1.0"),
    ("train", ["--criterion=grasp2"], "Received: --criterion=grasp2"),
    ("train", ["--batch_size=0"], "Received: --batch_size=0"),
    ("train", ["--scope=local"], "Received: --scope=local"),
    ("train", ["--min_kept_per_layer=-1"], "Received: --min_kept_per_layer=-1"),
    ("demo", ["--kappa=nan"], "Received: --kappa=nan"),
    ("demo", ["--learning_rate=nan"], "Received: --learning_rate=nan"),
    ("demo", ["--seed=-1"], "Received: --seed=-1"),
    ("export", ["--checkpoint_dir=/nonexistent"], "Received: --checkpoint_dir='/nonexistent'"),
    ("export", ["--format=onnx"], "Received: --format=onnx"),
    ("snip_experiments", ["--seeds=-1"], "Received: --seeds=-1"),
    ("snip_experiments", ["--epochs_scale=0"], "Received: --epochs_scale=0"),
    ("signal_propagation", ["--learning_rate=nan"], "Received: --learning_rate=nan"),
    ("signal_propagation", ["--sparsities=nan"], r"Received: --sparsities=\[nan\]"),
    ("signal_propagation", ["--sparsities=1.5"], "Received: --sparsities=1.5"),
    ("steps_to_result", ["prepare", "--goal_error=2"], "Received: --goal_error=2.0"),
    ("steps_to_result", ["prepare", "--sparsities=nan"], r"Received: --sparsities=\[nan\]"),
    ("steps_to_result", ["prepare", "--batch_sizes=0"], "Received: --batch_sizes=0"),
    ("steps_to_result", ["bogus"], r"Received: \['bogus'\]"),
    ("compare_criteria", ["--sparsities=1.0"], r"Received: --sparsities=\[1.0\]"),
    ("compare_criteria", ["--criteria=gras"], "Received: --criteria=gras"),
]


@pytest.mark.parametrize("script,argv,match", FLAG_CASES,
                         ids=[f"{s} {' '.join(a)}" for s, a, _ in FLAG_CASES])
def test_bad_flags_fail_before_work_and_write_nothing(script, argv, match, tmp_path, capsys):
    from absl import app
    from absl import flags
    from conftest import load_script

    from sniptf import commands

    out = tmp_path / "out"
    dirs = {"train": "output_dir", "demo": "output_dir", "export": "output_dir",
            "snip_experiments": "output_dir", "signal_propagation": "output_dir",
            "steps_to_result": "study_dir", "compare_criteria": "output_dir"}
    where = [f"--{dirs[script]}={out}"]
    if script in ("snip_experiments", "signal_propagation", "compare_criteria"):
        where.append(f"--figures_dir={out / 'figures'}")
    module = load_script(script)
    flags.FLAGS.unparse_flags()
    try:  # what the command's run() does first
        remaining = commands.parse_flags([script, *argv, *where])
    except SystemExit as e:
        assert e.code == 1
        assert re.search(match, capsys.readouterr().err)
    else:
        with pytest.raises(app.UsageError, match=match):
            module.main(remaining)
    assert not out.exists()
