"""Structured sparsity at initialization (issue 39): N:M, blocks and channels."""

import warnings

import keras
import numpy as np
import pytest

import sniptf
from sniptf import structure
from sniptf import transform

L = keras.layers


def _data(shape=(28, 28, 1), n=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, classes, n)


def _holds(model, spelling):
    return {e.key: structure.pattern_holds(spelling, e, e.mask.numpy()) for e in transform.masked_entries(model)}


def _kept(model):
    return {e.key: int(np.count_nonzero(e.mask.numpy())) for e in transform.masked_entries(model)}


def _dense(weights):
    """A one-Dense model whose kernel is `weights` (in, out), so magnitude scores are |weights|."""
    x = keras.Input((weights.shape[0],))
    model = keras.Model(x, L.Dense(weights.shape[1], name="fc")(x))
    model.get_layer("fc").kernel.assign(weights)
    return model


def test_two_of_four_by_hand_with_a_short_last_group():
    # in = 6: groups rows 0-3 and 4-5 (short: keeps both); ties go to the first
    w = np.array([[0.1, -5.0], [0.9, 1.0], [-0.8, 1.0], [0.2, 0.3],
                  [0.01, 7.0], [0.02, 0.0]], np.float32)
    pruned = sniptf.prune(_dense(w), None, kappa=None, criterion="magnitude", structure="2:4")
    mask = pruned.get_layer("fc").masks["kernel"].numpy()
    np.testing.assert_array_equal(mask, [[0, 1], [1, 1], [1, 0], [0, 0], [1, 1], [1, 1]])
    report = sniptf.sparsity(pruned)
    assert report.structure == "2:4" and report.padded == ("fc/kernel",) and report.broken == ()
    assert "structure: 2:4 (holds on every masked weight; a short last group (padded) in fc/kernel)" in str(report)


def test_blocks_by_hand_keep_the_best_summed_blocks_whole():
    # blocks:2 along the input axis: column 0 blocks sum 1.0, 0.3; column 1: 0.2, 2.0
    w = np.array([[0.5, 0.1], [0.5, 0.1], [0.1, 1.0], [0.2, 1.0]], np.float32)
    pruned = sniptf.prune(_dense(w), None, kappa=0.5, criterion="magnitude", structure="blocks:2")
    np.testing.assert_array_equal(pruned.get_layer("fc").masks["kernel"].numpy(), [[1, 0], [1, 0], [0, 1], [0, 1]])


def _zoo_shape(name):
    if name.startswith(("lstm", "gru")):
        return (28, 28)
    return (28, 28, 1) if name.startswith(("lenet", "mlp")) else (32, 32, 3)


@pytest.mark.parametrize("name", sorted(sniptf.models.MODELS))
def test_pattern_holds_exactly_on_every_kernel_of_the_zoo(name):
    # magnitude (data-free): the pattern is the selection's, whatever scored it
    keras.utils.set_random_seed(0)
    model = sniptf.models.get(name, _zoo_shape(name), 10)
    for spelling, kappa in (("2:4", None), ("blocks:4", 0.1), ("channels", 0.3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a layer emptied by global channels is warned about
            pruned = sniptf.prune(model, None, kappa=kappa, criterion="magnitude", structure=spelling)
        assert all(_holds(pruned, spelling).values()), spelling
        report = sniptf.sparsity(pruned)
        assert report.structure == spelling and report.broken == ()
        if spelling == "2:4":
            n, m = map(int, spelling.split(":"))
            assert all(c.kept * m == c.total * n for c in report.weights if c.name not in report.padded)


@pytest.mark.slow
@pytest.mark.parametrize("app", ["MobileNetV2", "ResNet50"])
@pytest.mark.parametrize("spelling,kappa", [("2:4", None), ("blocks:4", 0.1), ("channels", 0.5)])
def test_pattern_holds_on_keras_applications(app, spelling, kappa):
    kwargs = {"alpha": 0.35} if app == "MobileNetV2" else {}
    model = getattr(keras.applications, app)(weights=None, input_shape=(32, 32, 3), classes=10,
                                             classifier_activation=None, **kwargs)
    x, y = _data((32, 32, 3), n=2)
    pruned = sniptf.prune(model, (x * 255, y), kappa=kappa, criterion="magnitude", structure=spelling)
    holds = _holds(pruned, spelling)
    assert len(holds) > 20 and all(holds.values())
    if spelling == "channels":
        out = sniptf.compact(pruned)
        np.testing.assert_allclose(out(x * 255).numpy(), sniptf.strip(pruned)(x * 255).numpy(), rtol=1e-4, atol=1e-4)
        assert out.count_params() < model.count_params()


@pytest.mark.parametrize("criterion", ["snip", "magnitude", "random", "grasp", "synflow", "force"])
def test_every_criterion_takes_a_structure(criterion):
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    x, y = _data()
    for spelling, kappa in (("2:4", None), ("blocks:4", 0.2)):
        pruned = sniptf.prune(model, (x, y), kappa=kappa, criterion=criterion, structure=spelling)
        assert all(_holds(pruned, spelling).values()), spelling
        total = int(sum(np.prod(e.mask.shape) for e in transform.masked_entries(pruned)))
        # LeNet-300-100's input sizes (784, 300, 100) are multiples of 4: no short group
        expected = total // 2 if kappa is None else 4 * round(round(kappa * total) / 4)
        assert sum(_kept(pruned).values()) == expected, spelling


def test_channels_keep_whole_units_never_the_output_layer_and_compact_exactly():
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet5_caffe", (28, 28, 1), 10)
    x, y = _data()
    pruned = sniptf.prune(model, (x, y), kappa=0.25, structure="channels")
    masks = {e.key: e.mask.numpy() for e in transform.masked_entries(pruned)}
    assert masks["fc2/kernel"].all() and masks["fc2/bias"].all()  # the output layer
    for layer in ("conv1", "conv2", "fc1"):
        units = masks[f"{layer}/kernel"].reshape(-1, masks[f"{layer}/bias"].size)
        np.testing.assert_array_equal(units.all(axis=0), masks[f"{layer}/bias"])  # bias goes with its unit
        assert np.all(units.all(axis=0) | ~units.any(axis=0))
    compacted = sniptf.compact(pruned)
    np.testing.assert_allclose(compacted(x).numpy(), sniptf.strip(pruned)(x).numpy(), rtol=1e-5, atol=1e-5)
    assert compacted.count_params() <= 0.4 * model.count_params()


def test_channels_min_kept_counts_units_and_layerwise_keeps_each_layers_fraction():
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    x, y = _data()
    guarded = sniptf.prune(model, (x, y), kappa=0.02, structure="channels", min_kept_per_layer=7)
    units = {k: int(m.sum()) for k, m in ((e.key, e.mask.numpy()) for e in transform.masked_entries(guarded))
             if k.endswith("bias")}
    assert units["fc3/bias"] == 10 and units["fc1/bias"] >= 7 and units["fc2/bias"] >= 7
    layerwise = sniptf.prune(model, (x, y), kappa=0.5, structure="channels", scope="layerwise")
    units = {e.key: int(e.mask.numpy().sum()) for e in transform.masked_entries(layerwise) if e.key.endswith("bias")}
    assert units == {"fc1/bias": 150, "fc2/bias": 50, "fc3/bias": 10}


@pytest.mark.parametrize("spelling,kappa,match", [
    ("3:2", None, r"0 < N < M.*structure='3:2'"),
    ("0:4", None, r"0 < N < M.*structure='0:4'"),
    ("blocks:0", 0.1, r"K >= 2.*structure='blocks:0'"),
    ("blocks:1", 0.1, r"K >= 2.*structure='blocks:1'"),
    ("rows", 0.1, r"structure='rows'"),
    (4, 0.1, r"structure=4"),
    ("2:4", 0.3, r"kappa must be None or 2/4.*kappa=0.3 with structure='2:4'"),
    ("2:4", 0.05, r"kappa=0.05 with structure='2:4'"),
    ("blocks:4", None, r"kappa=None is for an N:M.*structure='blocks:4'"),
])
def test_bad_structures_are_refused_and_change_nothing(spelling, kappa, match):
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=match):
        sniptf.prune(model, _data(), kappa=kappa, structure=spelling)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


def test_erk_scope_is_refused_with_a_structure():
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    with pytest.raises(ValueError, match=r"scope='erk'.*structure='blocks:4'"):
        sniptf.prune(model, _data(), kappa=0.1, scope="erk", structure="blocks:4")


@pytest.mark.parametrize("spelling,kappa", [("2:4", None), ("blocks:4", 0.1), ("channels", 0.3)])
def test_keras_round_trip_keeps_the_structure(spelling, kappa, tmp_path):
    keras.utils.set_random_seed(0)
    pruned = sniptf.prune(sniptf.models.get("lenet5_caffe", (28, 28, 1), 10), _data(), kappa=kappa,
                          structure=spelling)
    pruned.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    report = sniptf.sparsity(loaded)
    assert report.structure == spelling and report.broken == () and all(_holds(loaded, spelling).values())
    assert _kept(loaded) == _kept(pruned)


def test_report_says_when_a_mask_lost_its_structure():
    keras.utils.set_random_seed(0)
    pruned = sniptf.prune(sniptf.models.get("lenet_300_100", (28, 28, 1), 10), _data(), kappa=None,
                          structure="2:4")
    shuffled = sniptf.sanity.shuffle_within_layers(pruned, seed=0)
    report = sniptf.sparsity(shuffled)
    assert report.structure == "2:4" and set(report.broken) == {"fc1/kernel", "fc2/kernel", "fc3/kernel"}
    assert "does not hold on fc1/kernel" in str(report)


def _wrapped_lenet(include_biases=False):
    keras.utils.set_random_seed(0)
    model = sniptf.wrap(sniptf.models.get("lenet_300_100", (28, 28, 1), 10), include_biases=include_biases)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("spelling,final", [("blocks:4", 0.8), ("2:4", 0.5), ("channels", 0.7)])
def test_gradual_pruning_keeps_the_structure_at_every_update(spelling, final):
    model = _wrapped_lenet(include_biases=spelling == "channels")
    x, y = _data(n=64)
    seen = []

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(all(_holds(model, spelling).values()))

    gmp = sniptf.GradualPruning(final, 0, 12, frequency=4, structure=spelling)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[gmp, Check()])  # 16 steps
    steps = [u["step"] for u in gmp.updates]
    assert 12 in steps and set(steps) <= {0, 4, 8, 12}
    if spelling == "2:4":  # N:M of |w| at the first update; the later ones keep it
        assert gmp.updates[0]["changed"] > 0 and all(u["changed"] == 0 for u in gmp.updates[1:])
    assert all(seen) and sniptf.sparsity(model).structure == spelling and sniptf.sparsity(model).broken == ()
    report = sniptf.sparsity(model)
    if spelling == "channels":
        masks = {e.key: e.mask.numpy() for e in transform.masked_entries(model)}
        assert masks["fc3/kernel"].all()  # the output layer's units stay
        kept = sum(int(masks[k].sum()) for k in masks)
        assert abs(kept / report.total.total - (1 - final)) < 0.01  # whole units: about the schedule's
        compacted = sniptf.compact(model)
        np.testing.assert_allclose(compacted(x).numpy(), sniptf.strip(model)(x).numpy(), rtol=1e-5, atol=1e-5)
    else:
        assert report.sparsity == pytest.approx(final, abs=1e-9)  # 784, 300, 100: whole groups exactly


def test_gradual_pruning_refuses_an_n_m_schedule_that_is_not_one_minus_n_over_m():
    with pytest.raises(ValueError, match=r"final_sparsity must be 0.5.*final_sparsity=0.9 with structure='2:4'"):
        sniptf.GradualPruning(0.9, 0, 10, structure="2:4")
    with pytest.raises(ValueError, match=r"structure='rows'"):
        sniptf.GradualPruning(0.9, 0, 10, structure="rows")


def test_train_flag_structure_for_the_starting_mask_and_gmp(tmp_path):
    from conftest import load_script, run_main
    from absl import app
    train = load_script("train")
    tiny = ["--model=lenet_300_100", "--dataset=mnist10k", "--train_steps=12", "--eval_every=12",
            "--batch_size=32", "--learning_rate=0.05", "--seed=3"]
    import json
    for name, extra in {"nm": ["--structure=2:4", "--kappa=0.5"],
                        "gmp": ["--criterion=none", "--during_training=gmp", "--structure=blocks:4",
                                "--gradual_pruning_final_sparsity=0.9", "--gradual_pruning_frequency=4",
                                "--gradual_pruning_end_step=8"]}.items():
        run_main(train, ["train", *tiny, *extra, f"--output_dir={tmp_path / name}"])
        metrics = json.load(open(tmp_path / name / "metrics.json"))
        assert metrics["structure"] == extra[0 if name == "nm" else 2].split("=")[1]
        assert metrics["structure_broken"] == []
        assert metrics["final_sparsity"] == pytest.approx(0.5 if name == "nm" else 0.9, abs=1e-9)
    for extra, match in ((["--structure=2:4"], r"--kappa=0.05 with --structure='2:4'"),
                         (["--structure=blocks:4", "--during_training=set"],
                          r"--during_training='set' with --structure='blocks:4'"),
                         (["--structure=channels", "--sanity=shuffle"],
                          r"--sanity='shuffle' with --structure='channels'")):
        with pytest.raises(app.UsageError, match=match):
            run_main(train, ["train", *tiny, *extra, f"--output_dir={tmp_path / 'bad'}"])
    assert not (tmp_path / "bad").exists()


def test_effective_sparsity_reports_the_structure_and_channels_leave_no_dead_weight():
    keras.utils.set_random_seed(0)
    pruned = sniptf.prune(sniptf.models.get("lenet_300_100", (28, 28, 1), 10), _data(), kappa=0.3,
                          structure="channels")
    report = sniptf.effective_sparsity(pruned)
    assert report.structure == "channels" and report.broken == () and report.to_dict()["structure"] == "channels"
    # a removed unit takes its kernel column; the next layer's rows from it are dead, not removed
    assert report.kept < report.nominal.kept


def test_tflite_encodes_blocks_as_blocks_and_unstructured_as_densified(tmp_path):
    keras.utils.set_random_seed(0)
    model = sniptf.models.get("lenet_300_100", (28, 28, 1), 10)
    layouts = {}
    for spelling in ("blocks:4", "unstructured"):
        pruned = sniptf.prune(model, _data(), kappa=0.1, criterion="magnitude", structure=spelling)
        info = sniptf.export(pruned, str(tmp_path / f"{spelling[:6]}.tflite"), format="tflite").export_info
        assert info["sparsity"] == "encoded" and info["max_abs_error"] < 1e-4
        layouts[spelling] = [v for k, v in info["sparse_tensors"].items() if "fc1" in k or "fc2" in k]
    assert layouts["blocks:4"] == ["blocks 1x4", "blocks 1x4"]
    assert layouts["unstructured"] == ["unstructured (densified at load)"] * 2


@keras.saving.register_keras_serializable("sniptf_test_structure")
class StructNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.out = L.Dense(16, activation="relu"), L.Dense(4)

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_subclassed_model_keeps_n_m_through_keras_files_and_refuses_channels(tmp_path):
    x = np.random.default_rng(0).random((8, 12), dtype=np.float32)
    y = np.arange(8) % 4
    pruned = sniptf.prune(StructNet(), (x, y), kappa=None, structure="2:4")
    assert isinstance(pruned, sniptf.MaskedModel) and all(_holds(pruned, "2:4").values())
    pruned.save(tmp_path / "net.keras")
    loaded = keras.models.load_model(tmp_path / "net.keras")
    assert sniptf.sparsity(loaded).structure == "2:4" and sniptf.sparsity(loaded).broken == ()
    with pytest.raises(ValueError, match=r"subclassed.*structure='channels'"):
        sniptf.prune(StructNet(), (x, y), kappa=0.5, structure="channels")


def test_channels_on_a_model_without_unit_layers_says_so():
    x = keras.Input((6, 3))
    model = keras.Model(x, L.LSTM(4)(x))
    with pytest.raises(ValueError, match=r"Dense, Conv and Embedding.*structure='channels'"):
        sniptf.prune(model, (np.zeros((2, 6, 3), np.float32), np.zeros(2, "int64")), kappa=0.5,
                     structure="channels")
