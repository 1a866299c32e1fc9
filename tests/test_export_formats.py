"""The three export formats: dense SavedModel, sparse SavedModel, TFLite."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf
from sniptf.exporters import sparse_format

L = keras.layers


def _model(layers, shape, dtype="float32"):
    inputs = keras.Input(shape, dtype=dtype)
    h = inputs
    for layer in layers:
        h = layer(h)
    if len(h.shape) > 2:
        h = L.Flatten()(h)
    return keras.Model(inputs, L.Dense(3)(h))


CASES = {
    "dense": (lambda: _model([L.Dense(64, activation="relu")], (32,)), (32,), "float32"),
    "conv": (lambda: _model([L.Conv2D(8, 3), L.DepthwiseConv2D(3), L.SeparableConv2D(8, 3)],
                            (12, 12, 3)), (12, 12, 3), "float32"),
    "conv1d_embedding": (lambda: _model([L.Embedding(50, 8), L.Conv1D(8, 3)], (6,), "int32"),
                         (6,), "int32"),
    "lstm": (lambda: _model([L.LSTM(16)], (5, 4)), (5, 4), "float32"),
    "gru": (lambda: _model([L.GRU(16)], (5, 4)), (5, 4), "float32"),
}


def _inputs(shape, dtype, n=8):
    rng = np.random.default_rng(0)
    if dtype == "int32":
        return rng.integers(0, 50, (n,) + shape).astype("int32")
    return rng.normal(size=(n,) + shape).astype("float32")


def _pruned(name, kappa=0.1):
    build, shape, dtype = CASES[name]
    keras.utils.set_random_seed(0)
    return sniptf.prune(build(), None, kappa=kappa, criterion="magnitude"), _inputs(shape, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_sparse_saved_model_serves_what_the_dense_export_serves(name, tmp_path):
    pruned, x = _pruned(name)
    dense = sniptf.export(pruned, tmp_path / "dense")
    sparse = sniptf.export(pruned, tmp_path / "sparse", format="sparse_saved_model")
    dense_loaded = tf.saved_model.load(str(tmp_path / "dense"))
    a = dense_loaded.serve(x).numpy()
    loaded = tf.saved_model.load(str(tmp_path / "sparse"))
    caches = [v for v in loaded.variables if v.shape.rank is None]  # stored empty
    kernels = [v for v in caches if v.name.endswith("_cache:0")]  # (a sparse path's column
    assert kernels and all(int(tf.size(v)) > 0 for v in kernels)  # block may keep nothing)
    for _ in range(2):
        np.testing.assert_allclose(loaded.serve(x).numpy(), a, rtol=1e-5, atol=1e-5)
    assert sparse.export_info["encoded"]  # the prunable weights are stored sparse
    weights_part = lambda info: info["bytes"] - info["graph_bytes"]  # small models: graph dominates
    assert weights_part(sparse.export_info) < weights_part(dense.export_info)
    out = loaded.signatures["serving_default"](tf.constant(x))
    np.testing.assert_allclose(out["output_0"].numpy(), a, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_sparse_saved_model_loads_where_sniptf_is_not_installed(tmp_path):
    pruned, x = _pruned("conv")
    sniptf.export(pruned, tmp_path / "sparse", format="sparse_saved_model")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", pruned(x).numpy())
    code = f"""
import sys
class NoSniptf:  # as in a serving process: sniptf cannot be imported
    def find_spec(self, name, path=None, target=None):
        if name == "sniptf" or name.startswith("sniptf."):
            raise ImportError("sniptf is not installed here")
sys.meta_path.insert(0, NoSniptf())
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(tmp_path / "sparse")!r})
got = loaded.serve(np.load({str(tmp_path / "x.npy")!r})).numpy()
np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-5, atol=1e-5)
assert "sniptf" not in sys.modules
print("served without sniptf")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(tmp_path), env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "served without sniptf" in done.stdout


@pytest.mark.parametrize("width,kappa,bound", [(1024, 0.05, 10), (1024, 0.01, 20)])
def test_sparse_saved_model_size_where_weights_dominate(width, kappa, bound, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((width,))
    h = L.Dense(width, activation="relu")(L.Dense(width, activation="relu")(inputs))
    model = keras.Model(inputs, L.Dense(10)(h))
    pruned = sniptf.prune(model, None, kappa=kappa, criterion="magnitude")
    info = sniptf.export(pruned, tmp_path / "sparse", format="sparse_saved_model").export_info
    params = model.count_params()
    assert info["bytes"] <= 4 * params / bound, (info["bytes"], 4 * params)
    # measured per weight: the big kernels take a bit mask at 95%, positions at 99%
    kinds = {v["index"] for v in info["encoded"].values() if v["dense_bytes"] >= 4 * width * width}
    assert kinds == ({"bits"} if kappa == 0.05 else {"positions"})


@pytest.mark.parametrize("blocks", [1, 3])
def test_sparse_matmul_path_matches_below_and_above_the_crossover(blocks, tmp_path, monkeypatch):
    monkeypatch.setattr(sparse_format, "crossover_batch", lambda kernel, hint, **kwargs: 4)
    # one block per core of the exporting machine; 3 uneven blocks here whatever the machine
    edges = lambda width: np.linspace(0, width, blocks + 1).astype(int)
    monkeypatch.setattr(sparse_format, "column_blocks",
                        lambda width: list(zip(edges(width)[:-1], edges(width)[1:])))
    pruned, x = _pruned("dense")
    plain = sniptf.export(pruned, tmp_path / "sparse", format="sparse_saved_model")
    assert set(plain.export_info["sparse_path"].values()) == {4}
    loaded = tf.saved_model.load(str(tmp_path / "sparse"))
    for batch in (1, 4, 8):  # sparse, sparse, dense rebuilt kernel
        np.testing.assert_allclose(loaded.serve(x[:batch]).numpy(), plain(x[:batch]).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_tflite_is_checked_against_keras(tmp_path):
    pruned, x = _pruned("conv")
    plain = sniptf.export(pruned, tmp_path / "m.tflite", format="tflite")
    info = plain.export_info
    assert os.path.getsize(tmp_path / "m.tflite") == info["bytes"]
    assert info["max_abs_error"] <= 1e-4
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "m.tflite"))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, plain(x).numpy(), rtol=1e-4, atol=1e-4)
    quantized = sniptf.export(pruned, tmp_path / "q.tflite", format="tflite", quantize="dynamic")
    assert quantized.export_info["bytes"] <= info["bytes"]


def test_tflite_falls_back_from_a_wrong_sparsity_encoding_and_refuses_when_both_are_wrong(
        tmp_path, monkeypatch):
    # TF 2.21's sparse FullyConnected is wrong for input widths not a multiple of 4
    rng = np.random.default_rng(0)
    x = keras.Input((235,))
    dense = keras.layers.Dense(120)
    model = keras.Model(x, dense(x))
    dense.kernel.assign((rng.normal(size=(235, 120)) * (rng.random((235, 120)) < 0.03)).astype("float32"))
    plain = sniptf.export(model, tmp_path / "m.tflite", format="tflite")
    assert plain.export_info["sparsity"].startswith("not encoded: the encoded model was off by")
    assert plain.export_info["max_abs_error"] <= 1e-4
    even = keras.Model(x := keras.Input((236,)), (d := keras.layers.Dense(120))(x))
    d.kernel.assign((rng.normal(size=(236, 120)) * (rng.random((236, 120)) < 0.03)).astype("float32"))
    assert sniptf.export(even, tmp_path / "e.tflite", format="tflite").export_info["sparsity"] == "encoded"
    from sniptf.exporters import tflite
    monkeypatch.setattr(tflite, "_error", lambda *a: 1.0)
    with pytest.raises(ValueError, match="differ from model .* by 1 .*not writing it"):
        sniptf.export(model, tmp_path / "bad.tflite", format="tflite")
    assert not os.path.exists(tmp_path / "bad.tflite")


def test_tflite_names_the_layer_it_cannot_take_and_writes_nothing(tmp_path):
    pruned, _ = _pruned("lstm")
    with pytest.raises(ValueError, match=r"cannot convert.*\['lstm(_\d+)?'\].*sparse_saved_model"):
        sniptf.export(pruned, tmp_path / "m.tflite", format="tflite")
    assert os.listdir(tmp_path) == []


def test_bad_format_arguments_name_the_value_and_write_nothing(tmp_path):
    pruned, _ = _pruned("dense")
    with pytest.raises(ValueError, match=r"Received: format='onnx'"):
        sniptf.export(pruned, tmp_path / "a", format="onnx")
    with pytest.raises(ValueError, match=r"format='tflite' only.*quantize='dynamic'"):
        sniptf.export(pruned, tmp_path / "a", quantize="dynamic")
    with pytest.raises(ValueError, match=r"Received: quantize='int4'"):
        sniptf.export(pruned, tmp_path / "a", format="tflite", quantize="int4")
    with pytest.raises(ValueError, match=r"Received: batch_size_hint=0"):
        sniptf.export(pruned, tmp_path / "a", format="sparse_saved_model", batch_size_hint=0)
    assert os.listdir(tmp_path) == []


def test_a_new_format_is_one_table_row(tmp_path, monkeypatch):
    """`export` goes through `exporters.EXPORTERS`: a row added there is a format, written
    atomically like the others; a failing writer leaves nothing behind."""
    from sniptf import exporters

    def write(plain, directory, *, batch_size_hint, quantize):
        path = os.path.join(directory, "weights.npz")
        np.savez(path, *plain.get_weights())
        return path, {"bytes": os.path.getsize(path)}

    monkeypatch.setitem(exporters.EXPORTERS, "npz", exporters.Exporter("npz", write))
    model = CASES["dense"][0]()
    plain = sniptf.export(model, tmp_path / "w.npz", format="npz")
    assert plain.export_info["format"] == "npz" and plain.export_info["bytes"] > 0
    assert len(np.load(tmp_path / "w.npz").files) == len(model.get_weights())

    def broken(plain, directory, **kwargs):
        open(os.path.join(directory, "half"), "w").write("x")
        raise RuntimeError("disk full")

    monkeypatch.setitem(exporters.EXPORTERS, "broken", exporters.Exporter("broken", broken))
    with pytest.raises(RuntimeError, match="disk full"):
        sniptf.export(model, tmp_path / "b", format="broken")
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]
    with pytest.raises(ValueError, match="applies to format='tflite' only"):
        sniptf.export(model, tmp_path / "q", format="saved_model", quantize="dynamic")
