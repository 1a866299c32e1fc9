"""GraSP, SynFlow and FORCE: hand-checkable cases, exact counts, determinism."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import sniptf
from sniptf import criteria
from sniptf import selection
from sniptf import training
from sniptf import transform
from sniptf.sparsity_report import mask_digest

RNG = np.random.default_rng(0)


def _linear(widths, bias=False, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((widths[0],))] + [keras.layers.Dense(w, use_bias=bias) for w in widths[1:]]
    return keras.Sequential(layers)


def test_grasp_is_theta_times_hessian_gradient_on_a_linear_least_squares_model():
    model = _linear([4, 3])
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    y = RNG.standard_normal((5, 3)).astype(np.float32)
    loss = lambda yt, yp: 0.5 * tf.reduce_sum((yp - yt) ** 2, axis=-1)
    scores = sniptf.saliency(sniptf.wrap(model), (x, y), criterion="grasp", loss=loss)
    w = model.layers[0].kernel.numpy().astype(np.float64)
    t, n = criteria.GRASP_TEMPERATURE, len(x)
    g = x.T @ (x @ w / t - y) / (t * n)            # ∂L/∂W of mean 0.5||xW/T - y||²
    hg = x.T @ x @ g / (t * t * n)                  # H g, H = XᵀX/(T²n) per output column
    (got,) = scores.values()
    np.testing.assert_allclose(got, w * hg, rtol=1e-3, atol=1e-12)
    assert (got < 0).any() and (got > 0).any()  # signed: the highest θ ⊙ Hg are kept


def test_synflow_is_data_free_and_matches_the_path_products():
    model = _linear([3, 4, 2])
    wrapped = sniptf.wrap(model)
    scores = sniptf.saliency(wrapped, None, criterion="synflow")
    a, b = (np.abs(l.kernel.numpy()).astype(np.float64) for l in model.layers)
    r = np.ones(3) @ a @ b @ np.ones(2)             # R = 1ᵀ|W1||W2|1
    first = a * (b @ np.ones(2))[None, :] / r       # |θ ⊙ ∂R/∂θ| / R
    second = (np.ones(3) @ a)[:, None] * b / r
    got = list(scores.values())
    np.testing.assert_allclose(got[0], first, rtol=1e-5)
    np.testing.assert_allclose(got[1], second, rtol=1e-5)
    # conservation (the SynFlow paper's theorem): every layer carries all of R
    assert got[0].sum() == pytest.approx(1.0) and got[1].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"Criterion 'snip' scores on data.*Received: dataset=None"):
        sniptf.saliency(wrapped, None, criterion="snip")


@pytest.mark.slow
def test_synflow_does_not_overflow_where_float32_would():
    widths = [16] * 46
    model = _linear(widths)
    for layer in model.layers:
        layer.kernel.assign(np.abs(layer.kernel.numpy()) + 0.3)   # gain ~ 8-10 per layer
    h = np.ones((1, 16), np.float32)
    for layer in model.layers:
        h = h @ np.abs(layer.kernel.numpy())
    assert not np.isfinite(h).all()                 # R overflows float32
    pruned = sniptf.prune(model, None, kappa=0.1, criterion="synflow")
    assert sniptf.sparsity(pruned).kept == selection.kept_count(0.1, sum(w * w for w in widths[1:]))


@pytest.mark.parametrize("middle, message", [
    # a fixed negative offset before a ReLU: no positive flow (MobileNetV3's preprocessing)
    (lambda: keras.layers.Rescaling(1.0, offset=-100.0), r"SynFlow's R is 0\.0.*preprocessing"),
    # a feature normalization: not a product of the layers (ConvNeXt; before, a float64/float32
    # InvalidArgumentError inside LayerNormalization, or a negative R blamed on preprocessing)
    (keras.layers.LayerNormalization, r"LayerNormalization 'ln' is not.*criterion='snip'"),
])
def test_synflow_refuses_networks_without_a_positive_product_flow(middle, message):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    layer = middle()
    if isinstance(layer, keras.layers.LayerNormalization):
        layer = keras.layers.LayerNormalization(name="ln")
    else:
        h = keras.layers.ReLU()(layer(h))
        layer = keras.layers.Identity()
    model = keras.Model(inputs, keras.layers.Dense(3)(layer(h)))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message + ".*Received: model="):
        sniptf.prune(model, None, kappa=0.1, criterion="synflow")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["grasp", "synflow", "force"])
@pytest.mark.parametrize("scope", selection.SCOPES)
def test_exact_counts_and_determinism(criterion, scope):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 3, activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    x = RNG.random((32, 12, 12, 1), dtype=np.float32)
    y = RNG.integers(0, 10, 32)
    data = None if criterion == "synflow" else (x, y)
    a = sniptf.prune(model, data, kappa=0.02, criterion=criterion, scope=scope, seed=3)
    b = sniptf.prune(model, data, kappa=0.02, criterion=criterion, scope=scope, seed=3)
    total = sniptf.sparsity(a).total.total
    assert sniptf.sparsity(a).kept == selection.kept_count(0.02, total)
    assert mask_digest(a) == mask_digest(b)
    for e in transform.masked_entries(a):  # pruned weights are zero, kept ones are not
        assert np.all(e.weight.numpy()[~e.mask.numpy()] == 0)


def test_exponential_schedule():
    counts = criteria.exponential_counts(10_000, 100, 60)
    assert len(counts) == 60 and counts[-1] == 100 and counts[0] < 10_000
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts[29] == pytest.approx(1000, rel=0.01)  # halfway (in log) to 1%


def test_force_is_snip_at_the_current_mask_on_a_linear_least_squares_model():
    """FORCE's score |∂L/∂c| = |W ⊙ ∂L/∂(C⊙W)| with the gradient of the pruned network,
    for kept and pruned connections alike (a pruned one can score high and come back)."""
    model = _linear([4, 3])
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    y = RNG.standard_normal((6, 3)).astype(np.float32)
    loss = lambda yt, yp: 0.5 * tf.reduce_sum((yp - yt) ** 2, axis=-1)
    wrapped = sniptf.wrap(model)
    (entry,) = transform.masked_entries(wrapped)
    mask = np.ones((4, 3), bool)
    mask[0, :] = mask[2, 1] = False
    entry.mask.assign(mask)
    (got,) = sniptf.saliency(wrapped, (x, y), criterion="force", loss=loss).values()
    w = model.layers[0].kernel.numpy().astype(np.float64)
    g = x.T @ (x @ (w * mask) - y) / len(x)         # ∂L/∂(C⊙W) of mean 0.5||x(C⊙W) - y||²
    np.testing.assert_allclose(got, np.abs(w * g), rtol=1e-4, atol=1e-7)
    assert (got[~mask] > 0).all()                   # pruned connections are scored too
    dense = np.abs(w * (x.T @ (x @ w - y) / len(x)))
    assert not np.allclose(got, dense)              # and not at the dense network (SNIP's)


def test_force_can_bring_back_a_pruned_connection(monkeypatch):
    """FORCE scores every connection at the current mask: a connection pruned in an
    early round may be kept at the end (iterative SNIP could never)."""
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    x, y = sniptf.data.load_numpy("mnist10k", "validation")
    seen = []
    real = selection.select_count

    def spy(scores, count, **kwargs):
        masks = real(scores, count, **kwargs)
        seen.append([m.copy() for m in masks])
        return masks

    monkeypatch.setattr(selection, "select_count", spy)
    sniptf.prune(model, (x[:100], y[:100]), kappa=0.01, criterion="force")
    assert len(seen) == criteria.FORCE_ROUNDS
    revived = sum(int(np.count_nonzero(~early & late)) for early, late in zip(seen[5], seen[-1]))
    assert revived > 0


def test_train_accepts_the_new_criteria(tmp_path):
    metrics = training.run(training.TrainConfig(criterion="grasp", train_steps=4, eval_every=4,
                                                batch_size=32, scope="erk", min_kept_per_layer=5,
                                                output_dir=str(tmp_path / "g")))
    assert metrics["criterion"] == "grasp" and metrics["kept_weights"] == round(0.05 * 266_200)
    assert metrics["scope"] == "erk" and min(metrics["sparsity_per_layer"].values()) < 1.0
    assert json.load(open(tmp_path / "g" / "metrics.json"))["steps"] == 4


def test_collapse_guard_keeps_every_layer_of_a_deep_conv_net_at_99_9_percent():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    h = inputs
    for filters in (16, 32, 32, 64, 64, 128, 128, 128):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    x = RNG.standard_normal((32, 16, 16, 3)).astype(np.float32)
    y = RNG.integers(0, 10, 32)
    with pytest.warns(UserWarning, match="keeps none of its weights.*min_kept_per_layer"):
        sniptf.prune(model, (x, y), kappa=0.001)  # global SNIP empties layers here
    guarded = sniptf.prune(model, (x, y), kappa=0.001, min_kept_per_layer=1)
    report = sniptf.sparsity(guarded)
    assert report.kept == selection.kept_count(0.001, report.total.total)
    assert all(layer.kept >= 1 for layer in report.layers)
    with pytest.raises(ValueError, match="Received: min_kept_per_layer=1000"):
        sniptf.prune(model, (x, y), kappa=0.001, min_kept_per_layer=1000)


@pytest.mark.parametrize("scope", selection.SCOPES)
def test_guard_floor_then_scope(scope):
    scores = [np.arange(100.0), np.zeros(50), np.arange(30.0)]
    masks = selection.select(scores, 20, scope=scope, min_kept_per_layer=3)
    assert sum(int(m.sum()) for m in masks) == 20
    assert all(int(m.sum()) >= 3 for m in masks)
    assert masks[0][-3:].all() and masks[2][-3:].all()  # each array's own top scores first


def test_conv_orthogonal_is_an_isometry_with_energy_on_every_tap():
    from sniptf import initializers
    init = initializers.get("conv_orthogonal")
    k = np.asarray(initializers.ConvOrthogonal(seed=3)((3, 3, 8, 16)), np.float64)
    # Σ over taps of K Kᵀ = I, and the shifted cross terms vanish: an isometry
    np.testing.assert_allclose(sum(k[i, j] @ k[i, j].T for i in range(3) for j in range(3)),
                               np.eye(8), atol=1e-5)
    for di, dj in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        cross = sum(k[i, j] @ k[i + di, j + dj].T for i in range(3) for j in range(3)
                    if 0 <= i + di < 3 and 0 <= j + dj < 3)
        assert np.abs(cross).max() < 1e-5
    energy = [np.sum(k[i, j] ** 2) for i in range(3) for j in range(3)]
    assert sum(e > 1e-3 for e in energy) >= 6  # spread over the taps, not only the centre
    delta = np.asarray(initializers.get("delta_orthogonal")((3, 3, 8, 16)))
    assert np.count_nonzero([np.sum(delta[i, j] ** 2) for i in range(3) for j in range(3)]) == 1
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10, kernel_initializer="conv_orthogonal")
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = conv.kernel.numpy().astype(np.float64)  # (5, 5, 1, 20): Σ over taps K Kᵀ = [[1]]
    assert isinstance(init, initializers.ConvOrthogonal)
    assert sum(kernel[i, j] @ kernel[i, j].T for i in range(5) for j in range(5)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"cin <= cout.*Received: shape=\(3, 3, 16, 8\)"):
        init((3, 3, 16, 8))


def test_comparison_table_has_one_column_per_criterion_and_marks_the_best():
    from sniptf.studies import criteria_comparison as study
    row = lambda criterion, kappa, mean: {"model": "m", "criterion": criterion, "kappa": kappa,
                                          "test_error_mean": mean, "test_error_std": 0.5,
                                          "seeds": 1, "diverged": 0}
    rows = [row("none", 1.0, 10.0), row("snip", 0.01, 20.0), row("force", 0.01, 15.0),
            row("snip", 0.05, 12.0), dict(row("force", 0.05, 11.0), seeds=3, diverged=2),
            dict(row("snip", 0.001, float("nan")), seeds=3, diverged=3), row("force", 0.001, 30.0)]
    lines = study.by_criterion(rows, criteria=("snip", "force")).splitlines()
    assert lines[0] == "| model | sparsity | dense | snip | force |"
    # a criterion with diverged seeds is not the best, whatever its other seeds gave
    assert lines[2] == "| m | 95.0% | 10.00 ± 0.50 | **12.00 ± 0.50** | 11.00 ± 0.50 (2 of 3 diverged) |"
    assert lines[3] == "| m | 99.0% | 10.00 ± 0.50 | 20.00 ± 0.50 | **15.00 ± 0.50** |"
    assert lines[4] == "| m | 99.9% | 10.00 ± 0.50 | diverged (3 of 3) | **30.00 ± 0.50** |"


def test_summary_means_skip_diverged_runs_and_count_them():
    from sniptf.studies import snip
    run = lambda error, diverged: {"dataset": "d", "model": "m", "criterion": "grasp", "kappa": 0.05,
                                   "sparsity": 0.95, "sparsity_per_layer": {}, "wall_time_seconds": 1.0,
                                   "test_error": error, "diverged": diverged}
    (row,) = snip.summarize([run(float("nan"), True), run(0.16, False), run(0.18, False)])
    assert row["diverged"] == 1 and row["seeds"] == 3
    assert row["test_error_mean"] == pytest.approx(17.0) and row["test_error_std"] == pytest.approx(1.0)


def test_kappa_is_checked_once_per_prune(monkeypatch):
    """κ becomes a count once in `prune`, not once per SynFlow round."""
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    calls = []
    real = selection.check_kappa
    monkeypatch.setattr(selection, "check_kappa", lambda k: calls.append(k) or real(k))
    pruned = sniptf.prune(model, None, kappa=0.05, criterion="synflow")
    assert calls == [0.05]
    assert sniptf.sparsity(pruned).kept == round(0.05 * sniptf.sparsity(pruned).total.total)
