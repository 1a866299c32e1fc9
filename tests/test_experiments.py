"""The experiments/ scripts: each imports and parses its flags (so an internal they use
cannot move silently), and the two that print ok/FAILED run their checks as tests."""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags
from conftest import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(os.path.splitext(os.path.basename(p))[0]
                     for p in glob.glob(os.path.join(ROOT, "experiments", "*.py")))


def _load(name):
    """Imports experiments/<name>.py afresh (conftest's loader: the flags an earlier
    command or experiment defined are dropped first)."""
    return load_script(name, folder="experiments")


def test_every_experiment_is_listed_here_and_has_a_docstring_with_its_command():
    assert len(EXPERIMENTS) >= 12
    for name in EXPERIMENTS:
        text = open(os.path.join(ROOT, "experiments", f"{name}.py")).read()
        assert text.startswith('"""') and f"experiments/{name}.py" in text.split('"""')[1], name
        assert "sys.path.insert" not in text, f"{name}: import sniptf as the package does"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_imports_and_parses_its_default_flags(name):
    module = _load(name)
    if hasattr(module, "main"):
        assert callable(module.main)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["experiment"])  # every flag's default is valid
    assert flags.FLAGS.is_parsed()
    flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_experiment_without_arguments_says_what_it_needs():
    """train_error takes run directories (not absl flags): with none it exits naming them."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train_error.py")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT))
    assert proc.returncode != 0 and "Expected one or more run directories" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["keras_io_mnist_convnet", "keras_hub_bert"])
def test_during_training_checks_on_models_others_wrote(model):
    """experiments/during_training_on_others_models.py's checks (GradualPruning, SET, RigL,
    rewinding, the sanity checks, a .keras round trip mid-schedule), one keras-io and one
    KerasHub model; every check passes."""
    import keras
    if model.startswith("keras_hub"):
        pytest.importorskip("keras_hub", reason="needs keras-hub (make test installs it)")
    experiment = _load("during_training_on_others_models")
    keras.utils.set_random_seed(0)
    built, x, y = experiment.MODELS[model]()
    experiment._compiled(built, model)
    results = list(experiment.checks(model, built, x, y))
    assert len(results) == 7
    failed = [f"{check}: {detail}" for check, passed, detail in results if not passed]
    assert not failed, failed


@pytest.mark.slow
@pytest.mark.parametrize("model", ["keras_io_mnist_convnet", "keras_hub_vit"])
def test_signal_propagation_checks_on_models_others_wrote(model):
    """experiments/signal_propagation_on_others_models.py's checks (JSV of the dense and
    the SNIP-pruned model, approximate isometry moving the layers towards 1), fewer steps."""
    import keras
    if model.startswith("keras_hub"):
        pytest.importorskip("keras_hub", reason="needs keras-hub (make test installs it)")
    experiment = _load("signal_propagation_on_others_models")
    keras.utils.set_random_seed(0)
    built, x, y = experiment.MODELS[model]()
    results = list(experiment.checks(model, built, x, y, 60))
    assert len(results) >= 4
    failed = [f"{check}: {detail}" for check, passed, detail in results if not passed]
    assert not failed, failed


def test_transformer_sparsity_runs_as_documented(capsys):
    """experiments/transformer_sparsity.py (docs/custom_layers.md's example) on its own
    small input: it prunes the KerasHub BERT classifier to 90% and prints the table."""
    pytest.importorskip("keras_hub", reason="needs keras-hub (make test installs it)")
    _load("transformer_sparsity").main()
    out = capsys.readouterr().out
    assert "head" in out and "90.00%" in out.split("total")[-1].splitlines()[0], out[-2000:]
