"""keras.applications models prune, strip and export (the full sweep is
experiments/check_applications.py; these are the quick ones)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_application_prunes_strips_and_exports(name, tmp_path):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32) * 255
    pruned = sniptf.prune(model, (x, np.array([0, 1])), kappa=0.05)
    report = sniptf.sparsity(pruned)
    assert report.kept == sniptf.selection.kept_count(0.05, report.total.total)
    plain = sniptf.strip(pruned)
    assert [l.name for l in plain.layers] == [l.name for l in model.layers]
    expected = pruned(x).numpy()
    np.testing.assert_allclose(plain(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    sniptf.export(pruned, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(loaded.serve(x).numpy(), expected, rtol=1e-5, atol=1e-6)
