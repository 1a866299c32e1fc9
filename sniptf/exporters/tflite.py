"""The `tflite` export format: TensorFlow Lite with the converter's sparsity encoding."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sniptf import transform
from sniptf.exporters import saved_model

QUANTIZE = (None, "dynamic")


def check_quantize(quantize):
    """Validates `quantize`: None or "dynamic" (dynamic-range quantization)."""
    if quantize not in QUANTIZE:
        raise ValueError(f"Expected `quantize` to be None or 'dynamic' (format='tflite' only). "
                         f"Received: quantize={quantize!r}")
    return quantize


def _example_batch(spec, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch,) + tuple(d if d is not None else 1 for d in spec.shape[1:])
    if spec.dtype.is_integer:
        return np.zeros(shape, spec.dtype.as_numpy_dtype)  # valid ids for any embedding
    return rng.normal(size=shape).astype(spec.dtype.as_numpy_dtype)


def _culprits(model, message):
    named = [layer.name for _, layer in transform.walk_layers(model) if layer.name in message]
    if named:
        return named
    return [layer.name for _, layer in transform.walk_layers(model)
            if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]


def convert(plain, serve, input_signature, quantize=None, atol=1e-4):
    """A `.tflite` flatbuffer of `serve`, checked against the Keras model on a batch.

    The converter's sparsity encoding is tried first. TensorFlow Lite's sparse
    FullyConnected kernel (TF 2.21) computes wrong outputs when a layer's input
    width is not a multiple of 4 (measured: 235, 233, 238, 241 wrong; 232, 236,
    240 right), which compaction makes common; when the encoded model fails the
    check, it is converted again without the encoding, and that is said in
    the returned `sparsity` field.

    Returns:
        `(bytes, max_abs_error, sparsity)`: `sparsity` is `"encoded"`, or why not.

    Raises:
        ValueError: the converter cannot take the model (naming the layer), or the
            interpreter's outputs differ from the Keras model's.
    """
    specs = keras.tree.flatten(input_signature)
    inputs = [_example_batch(s) for s in specs]
    expected = [np.asarray(t) for t in keras.tree.flatten(
        plain(keras.tree.pack_sequence_as(input_signature, inputs), training=False))]
    tolerance = atol if quantize is None else 0.05 * max(float(np.max(np.abs(e))) for e in expected)
    flatbuffer = _convert(plain, serve, quantize, sparsity=True)
    error = _error(flatbuffer, inputs, expected)
    sparsity = "encoded"
    if error > tolerance:
        dense = _convert(plain, serve, quantize, sparsity=False)
        dense_error = _error(dense, inputs, expected)
        if dense_error > tolerance:
            raise ValueError(
                f"The TensorFlow Lite model's outputs differ from model '{plain.name}'s by {error:.3g} "
                f"(tolerance {tolerance:.3g}) on a check batch; not writing it.")
        logging.warning("TensorFlow Lite's sparsity encoding of model '%s' computes wrong outputs "
                        "(off by %.3g); written without it.", plain.name, error)
        sparsity = f"not encoded: the encoded model was off by {error:.3g}"
        flatbuffer, error = dense, dense_error
    return flatbuffer, error, sparsity


def _convert(plain, serve, quantize, *, sparsity):
    optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparsity else []
    if quantize == "dynamic":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [serve.get_concrete_function()])
        converter.optimizations = optimizations
        return converter.convert()
    except Exception as e:  # the converter raises many types (ConverterError, ...)
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        first = next((l.split("error:", 1)[1].strip() for l in lines if "error:" in l),
                     lines[0] if lines else repr(e))
        raise ValueError(
            f"TensorFlow Lite cannot convert model '{plain.name}'; layers involved: "
            f"{_culprits(plain, str(e))}. Export it as format='saved_model' or "
            f"'sparse_saved_model' instead. Converter said: {first}") from e


def _error(flatbuffer, inputs, expected):
    """The largest absolute difference between the interpreter's outputs and `expected`."""
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    details = interpreter.get_input_details()
    for d, x in zip(details, inputs):
        interpreter.resize_tensor_input(d["index"], x.shape)
    interpreter.allocate_tensors()
    for d, x in zip(details, inputs):
        interpreter.set_tensor(d["index"], x)
    interpreter.invoke()
    got = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    return max(float(np.max(np.abs(a - b))) if a.size else 0.0
               for a, b in zip(sorted(got, key=np.size), sorted(expected, key=np.size)))


def write(plain, directory, *, batch_size_hint, quantize):
    """Exporter `tflite`: `model.tflite` in `directory`; returns (its path, sizes)."""
    del batch_size_hint
    serve = saved_model.serve_function(plain)  # the dense serve function is what converts
    flatbuffer, error, sparsity = convert(plain, serve, serve.input_signature[0], quantize)
    target = os.path.join(directory, "model.tflite")
    with open(target, "wb") as f:
        f.write(flatbuffer)
    return target, {"bytes": len(flatbuffer), "max_abs_error": error, "quantize": quantize,
                    "sparsity": sparsity, "sparse_tensors": sparse_tensors(flatbuffer)}


def sparse_tensors(flatbuffer):
    """How the flatbuffer stores each sparse weight: `{tensor name: layout}`, the layout
    `"blocks 1xK"` (TensorFlow Lite's block-sparse FullyConnected reads it as it is:
    `sniptf.prune(..., structure="blocks:K")`) or `"unstructured (densified at load)"`
    (a DENSIFY op rebuilds the dense weight before the first call: smaller file, no
    faster op)."""
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    found = {}
    for d in interpreter.get_tensor_details():
        params = d.get("sparsity_parameters") or {}
        if not params:
            continue
        block = [m.get("dense_size") for m in params.get("dim_metadata", [])[len(d["shape"]):]]
        found[d["name"]] = (f"blocks 1x{block[-1]}" if len(params.get("block_map", [])) and block
                            else "unstructured (densified at load)")
    return found

