"""Data parallelism x sparsity: Sobol points, steps-to-result, the K* fit, smoothness probes."""

import csv

import keras
import numpy as np
import pytest

from sniptf import smoothness
from sniptf.studies import data_parallelism as dps


def test_sobol_points_match_the_authors_first_learning_rates():
    points = dps.sobol_points([dps.Param("learning_rate", 1e-4, 1.0, "log")], 5)
    np.testing.assert_allclose([p["learning_rate"] for p in points],
                               [0.01, 0.1, 0.001, 10 ** -2.5, 10 ** -0.5], rtol=1e-9)


def test_sobol_scales_and_dimensions():
    space = [dps.Param("learning_rate", 1e-4, 1.0, "log"),
             dps.Param("momentum", 0.9, 0.9999, "reverse_log"),
             dps.Param("decay_steps", 30_000, 60_000, "int"),
             dps.Param("final_lr_factor", 1e-4, 0.1, "log"),
             dps.Param("width", 0.0, 2.0, "linear")]
    points = dps.sobol_points(space, 20)
    assert len(points) == 20 and len({tuple(p.values()) for p in points}) == 20
    first = points[0]  # the point (0.5, ..., 0.5)
    assert first["momentum"] == pytest.approx(1 - 10 ** -2.5)  # log-uniform in 1 - m
    assert first["decay_steps"] == 45_000 and isinstance(first["decay_steps"], int)
    assert first["width"] == pytest.approx(1.0)
    for p in points:
        assert 0.9 <= p["momentum"] <= 0.9999 and 30_000 <= p["decay_steps"] <= 60_000
    with pytest.raises(ValueError, match="Received: scale='cubic'"):
        dps.Param("x", 0.1, 1.0, "cubic")
    with pytest.raises(ValueError, match="Received: low=0"):
        dps.Param("x", 0, 1.0, "log")
    with pytest.raises(ValueError, match="Received: n=0"):
        dps.sobol_points(space, 0)


def test_steps_to_result_semantics():
    trace = [(10, 0.5), (20, float("nan")), (30, 0.02), (40, 0.01)]
    assert dps.steps_to_result(trace, 0.02) == 30  # the first step at or below the goal
    assert dps.steps_to_result(trace, 0.015) == 40
    assert dps.steps_to_result(trace, 0.001) is None
    assert dps.steps_to_result([(10, None)], 0.5) is None
    assert dps.steps_to_result([], 0.5) is None


def test_eval_steps_fixed_and_geometric():
    assert dps.eval_steps(500, 100) == [100, 200, 300, 400, 500]
    assert dps.eval_steps(250, 100) == [100, 200, 250]
    steps = dps.eval_steps(20_000, 10, 1.1)
    assert steps[:11] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    assert steps[-1] == 20_000 and all(b > a for a, b in zip(steps, steps[1:]))
    gaps = [b / a for a, b in zip(steps[20:-1], steps[21:-1])]
    assert max(gaps) <= 1.11  # about 10% resolution on K
    with pytest.raises(ValueError, match="Received: eval_growth=0.5"):
        dps.eval_steps(100, 10, 0.5)


def test_fit_recovers_c1_c2_from_noisy_synthetic_steps():
    rng = np.random.default_rng(0)
    b = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512])
    c1, c2 = 40_000.0, 300.0
    k = (c1 / b + c2) * np.exp(rng.normal(0, 0.05, b.size))
    fit = dps.fit_steps(b, k)
    assert fit["c1"] == pytest.approx(c1, rel=0.15) and fit["c2"] == pytest.approx(c2, rel=0.15)
    assert fit["b_crit"] == pytest.approx(c1 / c2, rel=0.25)
    assert fit["r2_log"] > 0.98
    exact = dps.fit_steps(b, c1 / b + c2)
    assert exact["c1"] == pytest.approx(c1, rel=1e-4) and exact["r2_log"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        dps.fit_steps([4], [10])
    with pytest.raises(ValueError, match="positive"):
        dps.fit_steps([4, 8], [10, 0])


def test_local_lipschitz_on_a_quadratic_is_exactly_the_curvature_along_the_step():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(6, 6))
    a = m @ m.T + np.eye(6)  # L(w) = ½ wᵀAw, ∇L = Aw
    w, d = rng.normal(size=6), rng.normal(size=6)
    value, ratios = smoothness.local_lipschitz(lambda ws: [a @ ws[0]], [w], [d])
    expected = np.linalg.norm(a @ d) / np.linalg.norm(d)
    np.testing.assert_allclose(ratios, expected, rtol=1e-12)
    assert value == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="zero"):
        smoothness.local_lipschitz(lambda ws: [a @ ws[0]], [w], [np.zeros(6)])


def test_lipschitz_probe_callback_on_least_squares(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    weights = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            weights.append(self.model.get_weights()[0].copy())

        def on_train_batch_end(self, batch, logs=None):
            weights[-1] = (weights[-1], self.model.get_weights()[0].copy())

    probe = smoothness.LipschitzProbe((x, y), every=2, loss="mse", csv_path=str(tmp_path / "l.csv"),
                                      log_dir=str(tmp_path / "tb"))
    model.fit(x, y, batch_size=64, epochs=5, shuffle=False, verbose=0, callbacks=[Record(), probe])
    hessian = 2.0 * x.T @ x / len(x)  # of the mean squared error
    assert [s for s, _ in probe.history] == [0, 2, 4]
    for step, value in probe.history:
        before, after = weights[step]
        delta = (after - before).ravel()
        assert value == pytest.approx(np.linalg.norm(hessian @ delta) / np.linalg.norm(delta), rel=1e-3)
    rows = list(csv.reader(open(tmp_path / "l.csv")))
    assert rows[0] == ["step", "lipschitz"] and len(rows) == 4
    assert any((tmp_path / "tb").iterdir())


def test_gradient_noise_scale_matches_per_example_gradients():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + rng.normal(0, 1.0, (200, 1))).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile("sgd", "mse")
    w = model.get_weights()[0]
    per_example = 2 * x * (x @ w - y)  # gradients of (xw - y)² per example
    result = smoothness.gradient_noise_scale(model, (x, y), loss="mse", microbatch=1)
    mean = per_example.mean(0)
    trace = float(np.sum((per_example - mean) ** 2)) / (len(x) - 1)
    assert result["trace_sigma"] == pytest.approx(trace, rel=1e-4)
    assert result["grad_norm_sq"] == pytest.approx(float(mean @ mean) - trace / len(x), rel=1e-4)
    assert result["b_simple"] == pytest.approx(result["trace_sigma"] / result["grad_norm_sq"])
    with pytest.raises(ValueError, match="microbatch"):
        smoothness.gradient_noise_scale(model, (x[:3], y[:3]), microbatch=2)
    with pytest.raises(ValueError, match="Received: microbatch=0"):
        smoothness.gradient_noise_scale(model, (x, y), microbatch=0)


def test_authors_models_have_their_weight_counts():
    from sniptf import models
    assert models.get("dps_simple_cnn", (28, 28, 1), 10).count_params() == 62_346
    resnet = models.get("dps_resnet8", (32, 32, 3), 10)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in resnet.layers)
    assert not any("shortcut" in l.name for l in resnet.layers)  # parameter-free shortcuts
    assert resnet.count_params() == 75_050


def test_run_trial_reports_reached_not_reached_and_diverged():
    workload = dps.get_workload("tiny")
    data = (dps._arrays(workload, "train"), dps._arrays(workload, "validation"))
    reached = dps.run_trial(workload, 0.5, 32, {"learning_rate": 0.2}, 0, data=data)
    assert reached["status"] == "reached" and reached["steps"] == reached["trace"][-1][0]
    assert reached["trace"][-1][1] <= workload.goal_error
    strict = dps.run_trial(dataclass_replace(workload, goal_error=0.0), 0.0, 32,
                           {"learning_rate": 0.1}, 0, data=data)
    assert strict["status"] == "not_reached" and strict["steps"] is None
    assert [s for s, _ in strict["trace"]] == dps.eval_steps(60, 10)
    diverged = dps.run_trial(workload, 0.0, 32, {"learning_rate": 1e6}, 0, data=data)
    assert diverged["status"] == "diverged" and diverged["steps"] is None
    cut = dps.run_trial(dataclass_replace(workload, goal_error=0.0), 0.0, 32, {"learning_rate": 0.1}, 0,
                        cutoff=20, data=data)
    assert cut["cut_off"] and cut["status"] == "not_reached" and cut["trace"][-1][0] == 20


def dataclass_replace(workload, **changes):
    import dataclasses
    return dataclasses.replace(workload, **changes)


def test_collect_builds_points_and_fits():
    spec = dps.make_spec("tiny", sparsities=[0.0], batch_sizes=[8, 16, 32], trials=2)
    records = []
    for b, ks in ((8, (None, 400)), (16, (220, 300)), (32, (130, None))):
        for i, k in enumerate(ks):
            records.append({"study": dps.study_name(0.0, b), "index": i, "params": {"learning_rate": 0.1 * (i + 1)},
                            "status": "reached" if k else ("diverged" if b == 32 else "not_reached"),
                            "steps": k})
    trials, points, fits = dps.collect(spec, records)
    assert [p["k_star"] for p in points] == [400, 220, 130]
    assert [(p["reached"], p["not_reached"], p["diverged"]) for p in points] == [(1, 1, 0), (2, 0, 0), (1, 0, 1)]
    assert points[1]["best_params"] == {"learning_rate": 0.1}
    assert len(fits) == 1 and fits[0]["c1"] > 0 and fits[0]["c2"] > 0
    with pytest.raises(ValueError, match="Received: sparsities"):
        dps.make_spec("tiny", sparsities=[1.0], batch_sizes=[8], trials=2)
    with pytest.raises(ValueError, match="Received: workload='mnist_huge'"):
        dps.make_spec("mnist_huge", sparsities=[0.0], batch_sizes=[8], trials=2)
