"""The distributed trial engine for real: worker processes sharing an Optuna journal or a
PostgreSQL server, a worker killed mid-trial, and the steps_to_result command."""

import collections
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from absl import app
from conftest import load_script as _load
from conftest import run_main as _run

from sniptf.studies import data_parallelism as dps
from sniptf.studies import trial_engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "steps_to_result.py")
# the command test: 8 trials are enough to check its outputs
SMALL_GRID = ["--workload=tiny", "--sparsities=0", "--sparsities=0.5", "--batch_sizes=32", "--batch_sizes=64",
              "--trials=2"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    return env


def _cmd(action, study_dir, storage, *extra):
    return [sys.executable, SCRIPT, action, f"--study_dir={study_dir}", f"--storage={storage}",
            "--tf_threads=1", *extra]


def _once_each(engine, spec):
    """Every (study, Sobol index) has exactly one result."""
    seen = collections.Counter((r["study"], r["index"]) for r in engine.records())
    expected = {(name, i) for name in spec["studies"] for i in range(spec["trials"])}
    assert set(seen) == expected, sorted(expected - set(seen))
    assert set(seen.values()) == {1}, [k for k, v in seen.items() if v > 1]


def test_storage_choices_and_prepare_rules(tmp_path):
    with pytest.raises(ValueError, match="SQLite.*optuna#4002.*Received: storage='sqlite:///x.db'"):
        trial_engine.open_storage("sqlite:///x.db")
    engine = trial_engine.TrialEngine(str(tmp_path / "journal.log"))
    assert engine.spec() is None
    with pytest.raises(ValueError, match="prepare first"):
        engine.study_names()
    spec = dps.make_spec("tiny", sparsities=[0.0, 0.5], batch_sizes=[32], trials=4)
    assert dps.prepare(engine, spec) == 8
    assert dps.prepare(engine, spec) == 0  # the same spec again: a no-op
    assert engine.counts() == {"WAITING": 8}
    other = dps.make_spec("tiny", sparsities=[0.0, 0.5], batch_sizes=[32], trials=5)
    with pytest.raises(ValueError, match="different spec"):
        dps.prepare(engine, other)
    assert engine.counts() == {"WAITING": 8}
    waiting = engine.storage.get_all_trials(engine.storage.get_study_id_from_name(spec["studies"][0]))
    assert [t.user_attrs["params"] for t in waiting] == dps.sobol_points(
        list(dps.get_workload("tiny").space), 4)


def _prepare(storage, **grid):
    """The `prepare` action in this process (a TensorFlow start fewer than the command):
    the tiny workload on `grid` (make_spec's arguments and workload overrides)."""
    engine = trial_engine.TrialEngine(storage)
    assert dps.prepare(engine, dps.make_spec("tiny", **grid)) > 0
    return engine


def _check_every_point_once_by_both(storage):
    engine = trial_engine.TrialEngine(storage)
    _once_each(engine, engine.spec())
    assert set(engine.counts()) <= {"COMPLETE", "PRUNED", "FAIL"}
    hosts = {r["worker"] for r in engine.records()}
    assert len(hosts) == 2, f"one worker ran everything: {hosts}"
    return engine


def _prepare_and_run_two_workers(tmp_path, storage):
    """prepare 2 sparsities x 2 batch sizes x 3 trials, then two `work` processes at once;
    returns the engine after both end."""
    _prepare(storage, sparsities=[0.0, 0.5], batch_sizes=[32, 64], trials=3)
    workers = [subprocess.Popen(_cmd("work", tmp_path, storage), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [w.communicate(timeout=600)[1] for w in workers]
    for w, err in zip(workers, errors):
        assert w.returncode == 0, err[-3000:]
    return _check_every_point_once_by_both(storage)


@pytest.mark.slow
def test_two_workers_run_each_point_once_and_one_leaves_while_the_other_works(tmp_path):
    """Two `work` processes on one journal; the one told to stop after 3 trials leaves
    while the other works on. (It used to hang 30-57 s after "this worker ran N trials",
    stopping tf.data's autotuning threads of every trial's iterator; the cause is checked
    in test_data_parallelism.py, the exit not timed here.)"""
    storage = str(tmp_path / "journal.log")
    _prepare(storage, sparsities=[0.0, 0.5], batch_sizes=[32], trials=5, goal_error=0.0, max_steps=200,
             eval_every=100)
    busy = subprocess.Popen(_cmd("work", tmp_path, storage), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    short = subprocess.Popen(_cmd("work", tmp_path, storage, "--max_trials=3"), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        said = None
        for line in short.stderr:
            if "this worker ran 3 trials" in line:
                said = line
                break
        assert said is not None, "the worker never said how many trials it ran"
        short.wait(timeout=600)  # a hang guard
        assert busy.poll() is None, "the other worker had finished: not the case under test"
        assert short.returncode == 0, short.stderr.read()[-3000:]
        error = busy.communicate(timeout=600)[1]
        assert busy.returncode == 0, error[-3000:]
    finally:
        busy.kill()
        short.kill()
        busy.wait()
    _check_every_point_once_by_both(storage)


@pytest.mark.slow
def test_worker_killed_mid_trial_then_resume_and_work_completes_every_point_once(tmp_path):
    storage = str(tmp_path / "journal.log")
    # goal 0 is never reached: every trial runs its whole budget (seconds), so the kill lands mid-trial
    engine = _prepare(storage, sparsities=[0.5], batch_sizes=[32], trials=2, goal_error=0.0, max_steps=2000,
                      eval_every=100)
    worker = subprocess.Popen(_cmd("work", tmp_path, storage), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while engine.counts().get("RUNNING", 0) == 0:
        assert worker.poll() is None and time.time() < deadline, "the worker never started a trial"
        time.sleep(0.2)
    time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert engine.counts().get("RUNNING") == 1, engine.counts()
    assert engine.resume() == 1
    assert engine.counts().get("RUNNING", 0) == 0 and engine.resume() == 0
    proc = subprocess.run(_cmd("work", tmp_path, storage), env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _once_each(engine, engine.spec())
    statuses = [t.user_attrs.get("status") for name in engine.study_names()
                for t in engine.storage.get_all_trials(engine.storage.get_study_id_from_name(name))]
    assert statuses.count("abandoned") == 1 and statuses.count("not_reached") == 2


def _postgres_bin():
    for root in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(root, "initdb")):
            return root
    return None


@pytest.mark.skipif(_postgres_bin() is None, reason="PostgreSQL server not installed: "
                    "apt-get install -y postgresql (Debian), as .ci/run does")
@pytest.mark.slow
def test_workers_on_a_real_postgresql_server(tmp_path):
    pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (the [dev] extra has it)")
    bin_dir = _postgres_bin()
    base = tempfile.mkdtemp(prefix="sniptf-pg-")
    os.chmod(base, 0o777)
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sock)
    os.chmod(sock, 0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], capture_output=True, text=True, timeout=120)
    init = run(os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust")
    assert init.returncode == 0, init.stderr[-2000:]
    start = run(os.path.join(bin_dir, "pg_ctl"), "-D", data, "-w", "-l", os.path.join(base, "log"),
                "-o", f"-p {port} -k {sock} -h 127.0.0.1", "start")
    assert start.returncode == 0, start.stderr[-2000:] + open(os.path.join(base, "log")).read()[-2000:]
    try:
        created = run(os.path.join(bin_dir, "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                      "postgres", "sniptf")
        assert created.returncode == 0, created.stderr
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/sniptf"
        engine = _prepare_and_run_two_workers(tmp_path, url)
        engine.storage.engine.dispose()
    finally:
        run(os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


USERS_MODULE = """
import dataclasses
from sniptf.studies import data_parallelism as dps
dps.register_workload(dataclasses.replace(dps.get_workload("tiny"), name="users_tiny", max_steps=30))
"""


@pytest.mark.slow
def test_steps_to_result_command_prepare_work_report(tmp_path, monkeypatch):
    """One whole study through the command: a user's workload module, two goals, the
    incumbent cut-off, a report into another directory (the trial store elsewhere) with
    the Lipschitz probe over two seeds, and the refusals."""
    (tmp_path / "users_workloads.py").write_text(USERS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _load("steps_to_result")
    study = tmp_path / "study"
    common = [f"--study_dir={study}", "--workload_module=users_workloads"]
    grid = ["--workload=users_tiny", *SMALL_GRID[1:], "--incumbent_cutoff", "--goal_errors=0.5",
            "--goal_errors=0.7"]
    _run(module, ["steps_to_result", "prepare", *common, *grid])
    _run(module, ["steps_to_result", "work", *common])
    report_dir = tmp_path / "report"
    _run(module, ["steps_to_result", "report", f"--study_dir={report_dir}",
                  f"--storage={study}/journal.log", "--workload_module=users_workloads",
                  "--probe_batch_size=32", "--probe_steps=20", "--probe_every=10", "--probe_seeds=0",
                  "--probe_seeds=1", "--probe_examples=128", "--probe_noise_every=0"])
    assert (report_dir / "probes.json").exists()  # the probe's cache goes with the report
    results = json.load(open(report_dir / "results.json"))
    assert set(results) >= {"workload", "trials", "points", "fits", "lipschitz", "noise_scale"}
    assert results["workload"]["workload"]["name"] == "users_tiny" and results["workload"]["incumbent_cutoff"]
    assert results["workload"]["goal_errors"] == [0.5, 0.7]
    assert len(results["trials"]) == 8 and len(results["points"]) == 8
    trial = results["trials"][0]
    assert set(trial) >= {"sparsity", "batch_size", "sobol_index", "params", "status", "steps"}
    point = results["points"][0]
    assert set(point) >= {"sparsity", "batch_size", "k_star", "reached", "not_reached", "diverged",
                          "best_params"}
    for goal in (0.5, 0.7):  # every trial counted once per goal
        assert sum(p["reached"] + p["not_reached"] + p["cut_off"] + p["diverged"]
                   for p in results["points"] if p["goal_error"] == goal) == 8
    loose = {(p["sparsity"], p["batch_size"]): p["k_star"] for p in results["points"] if p["goal_error"] == 0.7}
    strict = {(p["sparsity"], p["batch_size"]): p["k_star"] for p in results["points"] if p["goal_error"] == 0.5}
    for key in strict:  # a looser goal is reached no later
        assert strict[key] is None or (loose[key] is not None and loose[key] <= strict[key])
    for fit in results["fits"]:
        assert set(fit) >= {"sparsity", "c1", "c2", "b_crit", "r2_log"}
    for entry in results["lipschitz"]:  # one lr (0.1) for every sparsity, two init seeds
        assert entry["batch_size"] == 32 and entry["steps"] == [10, 20] and entry["mean"] > 0
        assert entry["learning_rate"] == 0.1 and entry["seed"] in (0, 1)
    assert len(results["lipschitz"]) == 4 and results["probe"]["learning_rate"] == 0.1
    assert [r["seeds"] for r in results["lipschitz_summary"]] == [2, 2]
    assert {n["sparsity"] for n in results["noise_scale"]} == {0.0, 0.5}
    for name in ("k_star", "k_star_normalized", "best_lr", "trial_status", "lipschitz"):
        assert (report_dir / f"{name}.png").stat().st_size > 5_000
    assert "B_crit" in (report_dir / "summary.md").read_text()
    # the same prepare again is a no-op; another spec is refused, naming the flag
    _run(module, ["steps_to_result", "prepare", *common, *grid])
    with pytest.raises(app.UsageError, match="different spec"):
        _run(module, ["steps_to_result", "prepare", *common, *grid[:-1]])
    with pytest.raises(app.UsageError, match="--storage='sqlite:///x.db'"):
        _run(module, ["steps_to_result", "work", *common, "--storage=sqlite:///x.db"])
    with pytest.raises(app.UsageError, match="Expected one action"):
        _run(module, ["steps_to_result", "train", *common])
    with pytest.raises(app.UsageError, match="Received: --workload_module=no_such_module"):
        _run(module, ["steps_to_result", "work", f"--study_dir={study}", "--workload_module=no_such_module"])

