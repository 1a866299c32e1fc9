"""Data parallelism x sparsity: Sobol points, steps-to-result, the K* fit, smoothness probes."""

import csv

import keras
import numpy as np
import pytest

from sniptf import data_parallelism_probes
from sniptf.studies import data_parallelism as dps


def test_sobol_points_match_the_authors_first_learning_rates():
    points = dps.sobol_points([dps.Param("learning_rate", 1e-4, 1.0, "log")], 5)
    np.testing.assert_allclose([p["learning_rate"] for p in points],
                               [0.01, 0.1, 0.001, 10 ** -2.5, 10 ** -0.5], rtol=1e-9)


# The authors' first 8 points for their ResNet-8 / CIFAR-10 space, printed by their own
# generator (effect-dps-public, edps/metaparameters.py `_sample` with edps/sobol_lib.py,
# skip=2) for ['learning_rate', 'momentum', 'decay_steps', 'end_learning_rate_factor'].
AUTHORS_RESNET8_POINTS = {
    "learning_rate": [0.01, 0.1, 0.001, 0.00316227766, 0.316227766, 0.0316227766, 0.000316227766,
                      0.0005623413252],
    "momentum": [0.9968377223, 0.9994376587, 0.9822172059, 0.9986664786, 0.9578303497,
                 0.9997628626, 0.9925010579, 0.9991340357],
    "decay_steps": [45000, 52500, 37500, 48750, 33750, 41250, 56250, 39375],
    "final_lr_factor": [0.00316227766, 0.0005623413252, 0.0177827941, 0.0002371373706,
                        0.007498942093, 0.001333521432, 0.04216965034, 0.01154781985],
}


def test_sobol_points_are_the_authors_in_every_searched_dimension():
    """Dimensions 3-4 need Bratley & Fox's direction numbers (scipy's differ), and
    reverse_log maps u = 0 to the top of the range."""
    space = list(dps.get_workload("cifar10_resnet8").space)
    assert [p.name for p in space] == ["learning_rate", "momentum", "decay_steps", "final_lr_factor"]
    points = dps.sobol_points(space, 8)
    for name, expected in AUTHORS_RESNET8_POINTS.items():
        np.testing.assert_allclose([p[name] for p in points], expected, rtol=1e-9, err_msg=name)
    assert all(isinstance(p["decay_steps"], int) for p in points)


def test_sobol_generator_is_bratley_fox():
    from sniptf.studies.data_parallelism import sobol
    from scipy.stats import qmc
    ours = sobol.points(6, 31)
    theirs = qmc.Sobol(d=6, scramble=False).random(32)[1:]
    np.testing.assert_array_equal(ours[:, :2], theirs[:, :2])  # the first two agree
    assert not np.array_equal(ours[:, 2:], theirs[:, 2:])      # Joe-Kuo's numbers differ after
    # a (0, m, s)-net property: each of the first 2^k points falls in its own 1/2^k slab
    for d in range(6):
        assert sorted((sobol.points(6, 16, skip=0)[:, d] * 16).astype(int)) == list(range(16))
    with pytest.raises(ValueError, match="Received: dimensions=41"):
        sobol.direction_numbers(41)


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
    value, ratios = data_parallelism_probes.local_lipschitz(lambda ws: [a @ ws[0]], [w], [d])
    expected = np.linalg.norm(a @ d) / np.linalg.norm(d)
    np.testing.assert_allclose(ratios, expected, rtol=1e-12)
    assert value == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="zero"):
        data_parallelism_probes.local_lipschitz(lambda ws: [a @ ws[0]], [w], [np.zeros(6)])


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

    probe = data_parallelism_probes.LipschitzProbe((x, y), every=2, loss="mse", csv_path=str(tmp_path / "l.csv"),
                                      log_dir=str(tmp_path / "tb"))
    model.fit(x, y, batch_size=64, epochs=5, shuffle=False, verbose=0, callbacks=[Record(), probe])
    hessian = 2.0 * x.T @ x / len(x)  # of the mean squared error
    # the authors': the update into step 2, 4, ... (never a value at initialization)
    assert [s for s, _ in probe.history] == [2, 4]
    for step, value in probe.history:
        before, after = weights[step - 1]
        delta = (after - before).ravel()
        assert value == pytest.approx(np.linalg.norm(hessian @ delta) / np.linalg.norm(delta), rel=1e-3)
    rows = list(csv.reader(open(tmp_path / "l.csv")))
    assert rows[0] == ["step", "lipschitz"] and len(rows) == 3
    assert any((tmp_path / "tb").iterdir())


def test_gradient_noise_scale_matches_per_example_gradients():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + rng.normal(0, 1.0, (200, 1))).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile("sgd", "mse")
    w = model.get_weights()[0]
    per_example = 2 * x * (x @ w - y)  # gradients of (xw - y)² per example
    result = data_parallelism_probes.gradient_noise_scale(model, (x, y), loss="mse", microbatch=1)
    mean = per_example.mean(0)
    trace = float(np.sum((per_example - mean) ** 2)) / (len(x) - 1)
    assert result["trace_sigma"] == pytest.approx(trace, rel=1e-4)
    assert result["grad_norm_sq"] == pytest.approx(float(mean @ mean) - trace / len(x), rel=1e-4)
    assert result["b_simple"] == pytest.approx(result["trace_sigma"] / result["grad_norm_sq"])
    with pytest.raises(ValueError, match="microbatch"):
        data_parallelism_probes.gradient_noise_scale(model, (x[:3], y[:3]), microbatch=2)
    with pytest.raises(ValueError, match="Received: microbatch=0"):
        data_parallelism_probes.gradient_noise_scale(model, (x, y), microbatch=0)


def test_authors_models_have_their_weight_counts():
    from sniptf import models
    assert models.get("dps_simple_cnn", (28, 28, 1), 10).count_params() == 62_346
    resnet = models.get("dps_resnet8", (32, 32, 3), 10)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in resnet.layers)
    assert not any("shortcut" in l.name for l in resnet.layers)  # parameter-free shortcuts
    assert resnet.count_params() == 75_050


@pytest.mark.slow
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


# --- parity with the authors' protocol (effect-dps-public) ------------------------------

def test_data_order_is_a_function_of_the_data_seed_alone():
    """The init seed sets TensorFlow's global seed; the trials' order must not follow it."""
    workload = dataclass_replace(dps.get_workload("tiny"), train_examples=64)
    train, _ = dps.workload_data(workload)
    firsts = []
    for init_seed in (0, 1):
        keras.utils.set_random_seed(init_seed)
        batches = iter(dps.train_batches(workload, train, 16))
        firsts.append([next(batches)[1].numpy() for _ in range(6)])  # spans an epoch boundary
    np.testing.assert_array_equal(np.concatenate(firsts[0]), np.concatenate(firsts[1]))
    # every epoch is a permutation of the split; another data_seed gives another order
    epoch = np.concatenate(firsts[0][:4])
    assert sorted(epoch.tolist()) == sorted(train[1][:64].tolist())
    other = iter(dps.train_batches(dataclass_replace(workload, data_seed=1), train, 16))
    assert not np.array_equal(next(other)[1].numpy(), firsts[0][0])


def test_the_training_stream_starts_no_thread_a_worker_waits_for_at_exit():
    """A worker that had run many trials spent 30-57 s at exit stopping every trial's
    tf.data thread pool (autotuning, prefetch, parallel map): the stream has none."""
    workload = dataclass_replace(dps.get_workload("tiny"), train_examples=64)
    train, _ = dps.workload_data(workload)
    ds = dps.train_batches(workload, train, 16)
    assert ds.options().autotune.enabled is False
    graph = ds._as_serialized_graph().numpy().decode("latin-1")  # TF has no public graph view
    for op in ("PrefetchDataset", "ParallelMapDataset", "ParallelBatchDataset", "ParallelInterleaveDataset"):
        assert op not in graph, op


def test_paper_workloads_standardize_and_prune_biases():
    for name in ("mnist_simple_cnn", "mnist10k_simple_cnn", "cifar10_resnet8", "fashion_mnist_simple_cnn"):
        workload = dps.get_workload(name)
        assert workload.standardize and workload.include_biases, name
    workload = dataclass_replace(dps.get_workload("mnist10k_simple_cnn"), train_examples=200)
    (x, y), (vx, _) = dps.workload_data(workload)
    full = dps.workload_data(dataclass_replace(workload, train_examples=0))[0][0]
    assert abs(float(full.mean())) < 1e-3 and float(full.std()) == pytest.approx(1.0, abs=1e-3)
    assert x.dtype == np.float32 and vx.min() < 0  # validation standardized with train's numbers
    from sniptf import sparsity
    pruned = dps.build_model(workload, 0.9, 0, (x, y))
    report = sparsity(pruned)
    assert any(w.name.endswith("bias") for w in report.weights)  # biases are in the scored set
    total = sum(int(np.prod(v.shape)) for v in pruned.trainable_weights)
    assert report.total.total == total and report.kept == round(0.1 * total)


def test_resnet8_pools_the_activated_input_with_unit_variance_scaling():
    from sniptf import models
    resnet = models.get("dps_resnet8", (32, 32, 3), 10)
    pools = [l for l in resnet.layers if isinstance(l, keras.layers.AveragePooling2D)]
    assert len(pools) == 2
    for pool in pools:  # the zero-pad shortcut averages the block's ReLU'd input
        source = [l for l in resnet.layers if l.output is pool.input]
        assert len(source) == 1 and isinstance(source[0], keras.layers.ReLU), source
    conv = resnet.get_layer("stage2_conv1")
    init = conv.kernel_initializer
    assert isinstance(init, keras.initializers.VarianceScaling)
    assert (init.scale, init.mode, init.distribution) == (1.0, "fan_in", "truncated_normal")


@pytest.mark.slow
def test_probe_starts_at_step_every_on_the_whole_training_split(monkeypatch):
    workload = dataclass_replace(dps.get_workload("tiny"), train_examples=300)
    seen = []
    real = data_parallelism_probes.LipschitzProbe

    def spy(data, **kwargs):
        seen.append(len(data[1]))
        return real(data, **kwargs)

    monkeypatch.setattr(data_parallelism_probes, "LipschitzProbe", spy)
    out = dps.probe(workload, 0.5, 32, {"learning_rate": 0.05}, steps=12, every=5, log=lambda m: None)
    assert [s for s, _ in out["lipschitz"]] == [5, 10] and seen == [300]
    assert out["noise_scale"][0][0] == 0  # B_simple is also measured at initialization
    with pytest.raises(ValueError, match="Received: probe_examples=-1"):
        dps.probe(workload, 0.5, 32, {"learning_rate": 0.05}, steps=2, every=1, probe_examples=-1)


def test_probe_learning_rate_is_one_for_all_sparsities_unless_best():
    point = {"best_params": {"learning_rate": 0.3, "momentum": 0.99}}
    assert dps.probes.probe_params(point, 0.1) == {"learning_rate": 0.1}
    assert dps.probes.probe_params(point, "best") == point["best_params"]
    for bad in ("fast", 0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="Received: probe_learning_rate="):
            dps.check_probe_learning_rate(bad)
    rows = dps.lipschitz_summary([
        {"sparsity": s, "seed": seed, "learning_rate": 0.1, "mean": m}
        for s, ms in ((0.0, (2.0, 2.2)), (0.5, (2.5, 2.7)), (0.9, (4.0, 3.0))) for seed, m in enumerate(ms)])
    assert [r["mean"] for r in rows] == pytest.approx([2.1, 2.6, 3.5])
    assert rows[2]["std"] == pytest.approx(0.5) and all(r["monotonic"] for r in rows)


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_b_crit_at_about_its_rate():
    """Synthetic K* = c1/B + c2 with log-normal noise: the 95% interval of B_crit covers
    c1/c2 in about 95% of data sets (pairs bootstrap on 9 points undercovers a little)."""
    rng = np.random.default_rng(7)
    b = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512], float)
    c1, c2 = 20_000.0, 200.0
    covered = []
    for _ in range(30):
        k = (c1 / b + c2) * np.exp(rng.normal(0, 0.1, b.size))
        fit = dps.fit_steps(b, k, bootstrap=100, seed=int(rng.integers(1 << 30)))
        lo, hi = fit["b_crit_ci"]
        assert lo <= fit["b_crit"] <= hi and fit["rms_log_residual"] > 0
        covered.append(lo <= c1 / c2 <= hi)
    assert 0.8 <= np.mean(covered) <= 1.0
    few = dps.fit_steps([4, 8, 4, 8], [100, 60, 110, 65])
    assert few["b_crit_ci"] is None and few["c1_ci"] is None  # fewer than 3 distinct B


def test_cut_off_trials_are_counted_as_cut_off_and_several_goals_from_one_run():
    spec = dps.make_spec("tiny", sparsities=[0.0], batch_sizes=[8, 16, 32], trials=3,
                         goal_errors=[0.3, 0.5])
    assert spec["workload"]["goal_error"] == 0.3 and spec["goal_errors"] == [0.3, 0.5]
    traces = {8: ([[10, 0.6], [20, 0.45], [30, 0.3]], [[10, 0.55], [20, 0.52]], [[10, 0.5]]),
              16: ([[10, 0.4], [20, 0.29]], [[10, 0.7]], [[10, None]]),
              32: ([[10, 0.49], [20, 0.35]], [[10, 0.2]], [[10, 0.6], [20, 0.6]])}
    records = []
    for b, ts in traces.items():
        for i, trace in enumerate(ts):
            final = trace[-1][1]
            status = "diverged" if final is None else "reached" if final <= 0.3 else "not_reached"
            records.append({"study": dps.study_name(0.0, b), "index": i, "trace": trace,
                            "params": {"learning_rate": 0.1 * (i + 1)}, "status": status,
                            "steps": trace[-1][0] if status == "reached" else None,
                            "cut_off": b == 8 and i == 1})
    _, points, fits = dps.collect(spec, records)
    strict = {p["batch_size"]: p for p in points if p["goal_error"] == 0.3}
    loose = {p["batch_size"]: p for p in points if p["goal_error"] == 0.5}
    assert [strict[b]["k_star"] for b in (8, 16, 32)] == [30, 20, 10]
    assert [loose[b]["k_star"] for b in (8, 16, 32)] == [10, 10, 10]
    assert (strict[8]["reached"], strict[8]["not_reached"], strict[8]["cut_off"]) == (1, 1, 1)
    assert strict[16]["diverged"] == 1
    assert {f["goal_error"] for f in fits} == {0.3, 0.5}
    # the best lr of B=8 at the strict goal is the smallest tried of three: an edge
    assert strict[8]["at_boundary"] == ["learning_rate"]
    with pytest.raises(ValueError, match="Received: goal_errors="):
        dps.make_spec("tiny", sparsities=[0.0], batch_sizes=[8], trials=2, goal_errors=[1.5])


def test_a_users_workload_registers_and_is_refused_when_malformed():
    workload = dataclass_replace(dps.get_workload("tiny"), name="users_tiny")
    try:
        dps.register_workload(workload)
        assert dps.get_workload("users_tiny") is workload
        spec = dps.make_spec("users_tiny", sparsities=[0.0], batch_sizes=[8], trials=1)
        assert spec["workload"]["name"] == "users_tiny"
    finally:
        dps.WORKLOADS.pop("users_tiny", None)
    with pytest.raises(TypeError, match="Received: workload="):
        dps.register_workload({"name": "x"})
    with pytest.raises(ValueError, match="Received: name='resnet_9000'"):
        dps.register_workload(dataclass_replace(workload, model="resnet_9000"))


def test_summary_shows_a_runaway_interval_bound_in_two_significant_digits():
    from sniptf.studies.data_parallelism import results as results_lib
    assert results_lib._interval([0.0, 246830319126.7], "{:.1f}") == "[0.0, 2.5e+11]"
    assert results_lib._interval([38.6, 207.04], "{:.1f}") == "[38.6, 207.0]"
    assert results_lib._interval(None, "{:.1f}") == "—"


def test_a_point_is_at_the_boundary_when_any_trial_reaching_its_best_k_tried_an_edge():
    """Three trials reach K* = 20 at B=8: Sobol index 0 (lr 0.2, inside) first, index 2
    (lr 0.3, the largest tried) too. `min` would keep index 0 alone and miss the edge."""
    spec = dps.make_spec("tiny", sparsities=[0.0], batch_sizes=[8], trials=3)
    lrs = {0: 0.2, 1: 0.1, 2: 0.3}
    traces = {0: [[10, 0.6], [20, 0.4]], 1: [[10, 0.7], [20, 0.6], [30, 0.45]], 2: [[10, 0.55], [20, 0.3]]}
    records = [{"study": dps.study_name(0.0, 8), "index": i, "trace": traces[i], "status": "reached",
                "params": {"learning_rate": lrs[i]}, "steps": traces[i][-1][0], "cut_off": False}
               for i in range(3)]
    _, points, _ = dps.collect(spec, records)
    (point,) = points
    assert point["k_star"] == 20 and point["best_params"] == {"learning_rate": 0.2}  # index 0 first
    assert point["best_sobol_indices"] == [0, 2]
    assert point["at_boundary"] == ["learning_rate"]  # index 2's lr is the largest tried
    # without the tie (index 2 slower) the same point is inside the range
    records[2]["trace"] = [[10, 0.55], [20, 0.52], [30, 0.3]]
    _, (point,), _ = dps.collect(spec, records)
    assert point["best_sobol_indices"] == [0] and point["at_boundary"] == []


def test_bootstrap_refuses_two_point_resamples_and_few_batch_sizes_have_no_interval(monkeypatch):
    b = [8, 32, 128]
    k = [5016, 1758, 616]
    fit = dps.fit_steps(b, k)  # 3 distinct B (Fashion-MNIST's 90% at 12% had 3 points)
    assert fit["b_crit_ci"] is None and fit["c1_ci"] is None and fit["c2_ci"] is None
    assert fit["interval_note"].startswith("not identifiable: 3 distinct batch sizes")
    assert fit["distinct_batch_sizes"] == 3 and fit["b_crit"] > 0  # the point estimate stays
    # with 4 distinct B every resample has at least 3: record the resamples' distinct counts
    from sniptf.studies.data_parallelism import results as results_lib
    seen = []
    real = results_lib._fit_log

    def spy(bs, log_k, starts):
        seen.append(np.unique(bs).size)
        return real(bs, log_k, starts)

    monkeypatch.setattr(results_lib, "_fit_log", spy)
    fit = dps.fit_steps([8, 32, 128, 512], [5016, 1758, 616, 509], bootstrap=200)
    assert fit["b_crit_ci"] is not None and fit["interval_note"] is None
    assert len(seen) == 201 and min(seen[1:]) >= 3  # the point fit, then 200 resamples
    assert results_lib._interval(None, "{:.1f}", {"interval_note": "not identifiable: 3"}) == \
        "[not identifiable]"


def test_probe_cache_key_changes_with_everything_that_changes_l():
    from sniptf.studies.data_parallelism import probes
    w = dps.get_workload("mnist10k_simple_cnn")
    base = dict(steps=1000, every=100, params={"learning_rate": 0.1}, seed=0, probe_examples=0,
                noise_every=0)
    key = probes.cache_key(w, 0.9, 128, **base)
    for field, value in (("model", "lenet5_caffe"), ("dataset", "fashion_mnist"), ("optimizer", "momentum"),
                         ("standardize", False), ("include_biases", False), ("data_seed", 1),
                         ("score_batch_size", 50), ("train_examples", 500)):
        assert probes.cache_key(dataclass_replace(w, **{field: value}), 0.9, 128, **base) != key, field
    for name, value in base.items():
        other = dict(base, **{name: {"learning_rate": 0.2} if name == "params" else 7})
        assert probes.cache_key(w, 0.9, 128, **other) != key, name
    assert probes.cache_key(w, 0.5, 128, **base) != key and probes.cache_key(w, 0.9, 64, **base) != key
    # the search and the trials' budget and goal do not change a probe
    assert probes.cache_key(dataclass_replace(w, name="renamed", goal_error=0.03, max_steps=5), 0.9, 128,
                            **base) == key


def test_trial_metaparameters_are_recorded_as_drawn_through_storage_work_and_results(tmp_path):
    """The CIFAR-10 space's points go through the journal, a worker and `collect` bit for
    bit: floats unrounded (final_lr_factor 0.04216965034... at index 6), decay_steps an int."""
    from sniptf.studies.trial_engine import TrialEngine
    engine = TrialEngine(str(tmp_path / "journal.log"))
    spec = dps.make_spec("cifar10_resnet8", sparsities=[0.9], batch_sizes=[16], trials=8)
    dps.prepare(engine, spec)
    drawn = dps.sobol_points(list(dps.get_workload("cifar10_resnet8").space), 8)
    seen = {}

    def run(name, params, index, best):
        seen[index] = params
        return {"status": "reached", "value": 10 + index, "steps": 10 + index, "trace": [[10 + index, 0.3]]}

    assert engine.work(run, log=lambda m: None) == 8
    trials, _, _ = dps.collect(spec, engine.records())
    for index, expected in enumerate(drawn):
        assert seen[index] == expected  # exact equality, not approx
        assert isinstance(seen[index]["decay_steps"], int)
    for t in trials:
        assert t["params"] == drawn[t["sobol_index"]] and type(t["params"]["decay_steps"]) is int
    assert drawn[6]["final_lr_factor"] == pytest.approx(0.04216965034, rel=1e-9)
    assert repr(drawn[6]["final_lr_factor"]).startswith("0.0421696503")
