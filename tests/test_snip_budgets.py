"""The SNIP-against-budget study: its plan, its results.json schema, and a run killed
mid-study that resumes without redoing finished runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sniptf import training
from sniptf.studies import snip_budgets as study

TINY = (study.Plan("mnist10k", "lenet_300_100", (0.95,), (10,), 10),)


def test_plan_covers_the_issue():
    """Every model at >= 3 budgets spanning >= 4x; LeNet-300-100 up to >= 64k steps,
    LeNet-5-Caffe >= 16k (it runs to 69k: its SNIP error was still falling at 17k);
    3 seeds for dense and SNIP at the longest budget (LeNet-5-Caffe: the two longest)."""
    for plan in study.PLANS:
        assert len(plan.budgets) >= 3 and plan.budgets[-1] >= 4 * plan.budgets[0], plan
        assert list(plan.budgets) == sorted(plan.budgets)
    longest = {p.model: p.budgets[-1] for p in study.PLANS}
    assert longest["lenet_300_100"] >= 64000 and longest["lenet5_caffe"] >= 16000
    configs = study.configs(study.PLANS, "/tmp/x")
    seeds = {}
    for c in configs:
        seeds.setdefault((c.model, c.criterion, c.kappa, c.train_steps), set()).add(c.seed)
    for (model, criterion, kappa, steps), s in seeds.items():
        seeded = steps == longest[model] or (model, steps) == ("lenet5_caffe", 17280)
        if seeded and criterion != "random":
            assert s == {0, 1, 2}, (model, criterion, steps)
        else:
            assert s == {0}, (model, criterion, steps)
    # the decay scales with the budget: x0.1 at 40% and 80% of the steps
    c = [c for c in configs if c.model == "lenet_300_100" and c.train_steps == 69120][0]
    assert c.lr_decay_every == round(0.4 * 69120) and c.lr_schedule == "piecewise"
    assert len(set(c.output_dir for c in configs)) == len(configs)
    # within a model's budget, seed 0 of every run first: an early stop leaves one seed of each
    at = [c for c in configs if c.train_steps == 69120]
    assert [c.model for c in at] == ["lenet_300_100"] * 11 + ["lenet5_caffe"] * 11
    for model in ("lenet_300_100", "lenet5_caffe"):
        seeds = [c.seed for c in at if c.model == model]
        assert seeds[:5] == [0] * 5 and set(seeds[5:]) == {1, 2}
    for c in configs:
        training.prepare(c)  # every planned run is a valid config


def test_plans_refuse_unknown_models():
    with pytest.raises(ValueError, match="Received: models=\\['vgg'\\]"):
        study.plans(["vgg"])
    with pytest.raises(TypeError, match="Received: study_plans="):
        study.plans(None, ({"model": "x"},))


_DRIVER = textwrap.dedent("""
    import sys
    from sniptf.studies import snip_budgets as study
    plans = (study.Plan("mnist10k", "lenet_300_100", (0.95,), (10,), 10),)
    study.run(output_dir=sys.argv[1], figures_dir=sys.argv[1] + "/fig", study_plans=plans,
              long_seeds=(0,), log=lambda line: None)
""")


@pytest.mark.slow
def test_study_killed_and_resumed(tmp_path):
    """Killed once its first run finished, the study resumes: finished runs are kept
    as they were, the others run, results.json has the schema and every run."""
    out = str(tmp_path / "study")
    configs = study.configs(TINY, os.path.join(out, "runs"), long_seeds=(0,))
    finished = [os.path.join(c.output_dir, "metrics.json") for c in configs]
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, out], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not os.path.exists(finished[0]) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(finished[0]), "the first run never finished"
    done_before = {p: os.stat(p).st_mtime_ns for p in finished if os.path.exists(p)}
    assert len(done_before) < len(finished), "the study finished before it was killed"
    # a report of the runs finished so far, running nothing
    study.run(output_dir=out, figures_dir=out + "/fig", study_plans=TINY, long_seeds=(0,), report_only=True)
    partial = json.load(open(os.path.join(out, "results.json")))
    assert not partial["complete"] and len(partial["runs"]) == len(done_before)
    assert {p: os.stat(p).st_mtime_ns for p in finished if os.path.exists(p)} == done_before
    subprocess.run([sys.executable, "-c", _DRIVER, out], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p, mtime in done_before.items():
        assert os.stat(p).st_mtime_ns == mtime, f"{p} was run again"
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["complete"] and results["planned_runs"] == len(configs) == len(results["runs"])
    for r in results["runs"]:
        assert set(r) >= {"dataset", "model", "criterion", "sparsity", "steps", "seed", "test_error"}
        assert r["criterion"] in ("dense", "snip", "random") and r["model"] == "lenet_300_100"
        assert r["sparsity"] == (0.0 if r["criterion"] == "dense" else 0.95)
        assert r["steps"] == 10 and 0 <= r["test_error"] <= 100
    # one run per criterion (the seeds of each budget are checked in test_plan_covers_the_issue)
    assert sorted(r["criterion"] for r in results["runs"]) == ["dense", "random", "snip"]
    table = open(os.path.join(out, "table.md")).read()
    assert "lenet_300_100" in table and "95%" in table
    assert os.path.getsize(os.path.join(out, "fig", "snip_budgets.png")) > 0
