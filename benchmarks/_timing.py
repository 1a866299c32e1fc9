"""Timing helpers the benchmarks share: interleaved pairs and a TFLite runner."""

import os
import time

import numpy as np
import tensorflow as tf


def tflite_runner(path, batch):
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], batch.shape)
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]

    def run():
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return run


def ratio(fn_a, fn_b, pairs):
    """Median and IQR of per-pair time ratios a/b over interleaved pairs, and the medians."""
    fn_a(), fn_b()
    a, b = [], []
    for i in range(pairs):
        for fn, sink in ((fn_a, a), (fn_b, b)) if i % 2 == 0 else ((fn_b, b), (fn_a, a)):
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    r = np.array(a) / np.array(b)
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return med, q1, q3, np.median(a), np.median(b)
