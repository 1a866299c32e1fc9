import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf


@pytest.fixture(scope="module")
def pruned_and_data():
    keras.utils.set_random_seed(0)
    x, y = sniptf.data.load_numpy("mnist10k", "validation")
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    return sniptf.prune(model, (x[:100], y[:100]), kappa=0.02), x[:32]


def test_export_matches_pruned_model_and_reloads(pruned_and_data, tmp_path):
    pruned, x = pruned_and_data
    path = str(tmp_path / "saved_model")
    sniptf.export(pruned, path)
    expected = pruned(x).numpy()
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(loaded.serve(x).numpy(), expected, atol=1e-5)
    out = loaded.signatures["serving_default"](tf.constant(x))
    np.testing.assert_allclose(list(out.values())[0].numpy(), expected, atol=1e-5)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)
    # the export holds the stripped kernels: as sparse as the pruned model
    kernels = [v.numpy() for v in loaded.variables if v.shape.rank and v.shape.rank > 1]
    kept = sum(int(np.count_nonzero(k)) for k in kernels)
    assert kept == sniptf.sparsity(pruned).kept


def test_export_stores_each_weight_once(pruned_and_data, tmp_path):
    """Keras 3.15's model.export stores every variable twice (2x the weights)."""
    pruned, _ = pruned_and_data
    path = tmp_path / "saved_model"
    plain = sniptf.export(pruned, str(path))
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in plain.variables)
    data = sum(f.stat().st_size for f in (path / "variables").glob("variables.data-*"))
    assert weight_bytes <= data <= 1.01 * weight_bytes + 1024


def test_export_refuses_to_overwrite_and_leaves_no_partial_output(pruned_and_data, tmp_path):
    pruned, _ = pruned_and_data
    path = tmp_path / "out"
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sniptf.export(pruned, str(path))
    assert (path / "keep.txt").read_text() == "mine"
    no_shape = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(Exception):
        sniptf.export(no_shape, str(tmp_path / "broken"))
    assert sorted(os.listdir(tmp_path)) == ["out"]
    sniptf.export(pruned, str(path), overwrite=True)
    assert (path / "saved_model.pb").exists() and not (path / "keep.txt").exists()


def test_keras_file_round_trip_needs_no_custom_scope(pruned_and_data, tmp_path):
    pruned, x = pruned_and_data
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("conv1"), sniptf.MaskedLayer)
    np.testing.assert_allclose(loaded(x), pruned(x), atol=1e-6)
    for a, b in zip(sniptf.transform.masked_entries(loaded), sniptf.transform.masked_entries(pruned)):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())


def test_checkpoint_round_trip_restores_masks(pruned_and_data, tmp_path):
    pruned, x = pruned_and_data
    path = str(tmp_path / "w.weights.h5")
    pruned.save_weights(path)
    fresh = sniptf.wrap(sniptf.models.get("lenet5_caffe", (28, 28, 1), 10))
    fresh.load_weights(path)
    np.testing.assert_allclose(fresh(x), pruned(x), atol=1e-6)
    assert sniptf.sparsity(fresh).kept == sniptf.sparsity(pruned).kept


def test_export_of_a_sequential_never_called(tmp_path):
    """A Sequential built on a keras.Input but never called has no `.input` (it raised)."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    path = str(tmp_path / "seq")
    sniptf.export(model, path)
    x = np.ones((2, 6), np.float32)
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(loaded.serve(x).numpy(), model(x).numpy(), atol=1e-6)


def test_keras_file_with_float32_masks_loads_as_bool(tmp_path, monkeypatch):
    """Files written before masks were bool (issue 11) hold float32 masks."""
    from sniptf import masked_layer
    x, y = np.ones((4, 6), np.float32), np.array([0, 1, 0, 1])
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    monkeypatch.setattr(masked_layer, "MASK_DTYPE", "float32")
    old = sniptf.prune(model, (x, y), kappa=0.3)
    old.save(tmp_path / "old.keras")
    monkeypatch.undo()
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    for a, b in zip(sniptf.transform.masked_entries(old), sniptf.transform.masked_entries(loaded)):
        assert a.mask.dtype == "float32" and b.mask.dtype == "bool"
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    np.testing.assert_allclose(loaded(x).numpy(), old(x).numpy(), atol=1e-6)


def test_pruned_keras_file_loads_in_safe_mode(pruned_and_data, tmp_path):
    """No Lambda layer and no pickled Python: Keras's safe_mode (its default) loads it."""
    pruned, x = pruned_and_data
    pruned.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x).numpy(), pruned(x).numpy(), atol=1e-6)
    config = zipfile.ZipFile(tmp_path / "m.keras").read("config.json").decode()
    assert "Lambda" not in config and "__lambda__" not in config
