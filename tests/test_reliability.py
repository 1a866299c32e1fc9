"""Faults during long runs: corrupt backups, two runs on one directory, finished runs."""

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from sniptf import callbacks
from sniptf.backup import Backup
from sniptf import run_dir
from sniptf import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(units=4, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


X = np.random.default_rng(0).random((16, 3), dtype=np.float32)
Y = np.arange(16) % 2


class _Kill(keras.callbacks.Callback):
    """Stops `fit` with an exception when epoch `at` begins (as a kill would)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def _interrupted_run(backup_dir, epochs_done=2, units=4):
    model = _model(units)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y, epochs=5, verbose=0,
                  callbacks=[Backup(backup_dir), _Kill(epochs_done)])
    return model


def _weights_of(path, units=4):
    model = _model(units, seed=9)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return model.get_weights()


def test_truncated_backup_falls_back_to_the_previous_one(tmp_path, caplog):
    backup = str(tmp_path / "backup")
    _interrupted_run(backup)
    assert sorted(os.listdir(backup)) == ["epoch-1", "epoch-2"]
    previous = _weights_of(os.path.join(backup, "epoch-1", "backup.weights.h5"))
    latest = os.path.join(backup, "epoch-2", "backup.weights.h5")
    with open(latest, "r+b") as f:  # killed during the write
        f.truncate(os.path.getsize(latest) // 2)
    model = _model(seed=5)
    restore = Backup(backup)
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append(model.get_weights()))
    with caplog.at_level(logging.WARNING):
        model.fit(X, Y, epochs=3, verbose=0, callbacks=[restore, probe])
    assert restore.restored_epoch == 1
    for a, b in zip(seen[0], previous):  # training started from epoch 1's weights exactly
        np.testing.assert_array_equal(a, b)
    assert "does not match its checksum" in caplog.text and "epoch-2" in caplog.text
    assert os.listdir(backup + ".corrupt")  # set aside, not deleted
    assert not os.path.exists(backup + "/epoch-1")  # a finished fit removes its backup


def test_a_resumed_run_counts_the_wall_time_of_the_attempts_before(tmp_path):
    """Before: a resumed run's metrics.json had only its last attempt's time."""
    backup = str(tmp_path / "backup")
    model = _model()
    first = Backup(backup, started=time.perf_counter() - 100.0)  # 100 s spent before fit
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y, epochs=5, verbose=0, callbacks=[first, _Kill(2)])
    with open(os.path.join(backup, "epoch-2", "metadata.json")) as f:
        recorded = json.load(f)["wall_time_seconds"]
    assert 100.0 <= recorded < 200.0
    clean = Backup(str(tmp_path / "other"))
    _model().fit(X, Y, epochs=1, verbose=0, callbacks=[clean])
    assert clean.elapsed_before == 0.0
    second = Backup(backup)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        json.load(open(os.path.join(backup, f"epoch-{epoch + 1}", "metadata.json")))["wall_time_seconds"]))
    _model(seed=5).fit(X, Y, epochs=4, verbose=0, callbacks=[second, probe])
    assert second.restored_epoch == 2 and second.elapsed_before == recorded
    assert len(seen) == 2 and recorded <= seen[0] <= seen[1] < recorded + 100.0  # carried on, not reset


def test_no_good_backup_starts_clean_and_a_failed_load_changes_nothing(tmp_path, caplog):
    backup = str(tmp_path / "backup")
    _interrupted_run(backup, units=4)
    # the checksums match but the architecture does not: load_weights fails midway
    model = _model(units=6, seed=5)
    model.optimizer.build(model.trainable_variables)
    before = [v.numpy() for v in model.variables + model.optimizer.variables]
    restore = Backup(backup)
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append([v.numpy() for v in model.variables
                                                 + model.optimizer.variables]))
    with caplog.at_level(logging.WARNING):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[restore, probe])
    assert restore.restored_epoch == 0
    for a, b in zip(seen[0], before):
        np.testing.assert_array_equal(a, b)
    assert "could not be loaded" in caplog.text and "training starts clean" in caplog.text


def test_a_write_in_progress_is_ignored(tmp_path):
    backup = str(tmp_path / "backup")
    _interrupted_run(backup, epochs_done=1)
    os.makedirs(os.path.join(backup, ".writing-999"))
    open(os.path.join(backup, ".writing-999", "backup.weights.h5"), "wb").write(b"half")
    assert Backup.newest_good_epoch(backup) == 1


class _Val(keras.callbacks.Callback):
    """Puts a scripted `val_accuracy` into the epoch logs."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = self.values[epoch]


def test_resuming_puts_back_the_best_model_of_the_epoch_resumed_from(tmp_path, caplog):
    """Before: the best model survived a resume as whatever the killed run last wrote,
    so two workers could resume with different ones (one killed before its save), decide
    differently whether to save and call model.save's collectives out of step: the
    multi-worker restart aborted with "tasks are unhealthy" about one run in five."""
    backup, best_path = str(tmp_path / "backup"), str(tmp_path / "checkpoints" / "best.keras")
    os.makedirs(os.path.dirname(best_path))
    values = [0.5, 0.7, 0.9, 0.95, 0.96]

    def fit(epochs_done=None):
        best = callbacks.BestModel(best_path)
        model = _model()
        kill = [_Kill(epochs_done)] if epochs_done else []
        model.fit(X, Y, epochs=5, verbose=0, callbacks=[
            _Val(values), best, Backup(backup, best_model=best), *kill])
        return best

    with pytest.raises(KeyboardInterrupt):
        fit(epochs_done=3)  # backups of epochs 2 and 3; best of epoch 3 (0.9)
    epoch_2 = os.path.join(backup, "epoch-2")
    assert json.load(open(os.path.join(epoch_2, "best.keras.json")))["value"] == 0.7
    assert os.path.samefile(os.path.join(backup, "epoch-3", "best.keras"), best_path)  # a link, no copy
    # the same model but another record (a kill between the two writes): the record is put back
    record = json.load(open(best_path + ".json"))
    json.dump({"value": 1.0, "epoch": 9, "step": 99}, open(best_path + ".json", "w"))
    restore = Backup(backup, best_model=callbacks.BestModel(best_path))
    restore.set_model(_model())
    restore.on_train_begin()
    assert restore.restored_epoch == 3 and json.load(open(best_path + ".json")) == record
    shutil.rmtree(os.path.join(backup, "epoch-3"))  # as if killed before writing it
    abandoned = open(best_path, "rb").read()
    with caplog.at_level(logging.WARNING):
        best = fit()  # resumes after epoch 2 with the best model of epoch 2
    assert "moved to" in caplog.text
    aside = glob.glob(str(tmp_path / "checkpoints" / "abandoned-*" / "best.keras"))
    assert any(open(a, "rb").read() == abandoned for a in aside)  # not deleted
    assert best.best()["epoch"] == 5 and best.best()["value"] == 0.96

    # a backup written before backups held the best model leaves it alone
    shutil.rmtree(backup, ignore_errors=True)
    with pytest.raises(KeyboardInterrupt):
        fit(epochs_done=2)
    meta_path = os.path.join(backup, "epoch-2", "metadata.json")
    meta = json.load(open(meta_path))
    del meta["best_sha256"]
    json.dump(meta, open(meta_path, "w"))
    shutil.rmtree(os.path.join(backup, "epoch-1"))
    kept = open(best_path, "rb").read()
    restore = Backup(backup, best_model=callbacks.BestModel(best_path))
    restore.set_model(_model())
    restore.on_train_begin()
    assert restore.restored_epoch == 2 and open(best_path, "rb").read() == kept


@pytest.mark.parametrize("order", ["backup first", "best model first", "backup only"])
def test_each_backup_holds_its_own_epochs_best_model_whatever_the_callback_order(tmp_path, order):
    best_path = str(tmp_path / "best.keras")
    best = callbacks.BestModel(best_path)
    backup = Backup(str(tmp_path / "backup"), best_model=best)
    listed = {"backup first": [backup, best], "best model first": [best, backup],
              "backup only": [backup]}[order]
    with pytest.raises(KeyboardInterrupt):
        _model().fit(X, Y, epochs=5, verbose=0,
                     callbacks=[_Val([0.5, 0.6, 0.7, 0.8, 0.9]), *listed, _Kill(3)])
    for epoch, value in ((2, 0.6), (3, 0.7)):
        record = json.load(open(tmp_path / "backup" / f"epoch-{epoch}" / "best.keras.json"))
        assert (record["epoch"], record["value"]) == (epoch, value)
    assert best.best()["epoch"] == 3


def test_a_corrupt_best_model_in_a_backup_makes_it_bad(tmp_path):
    backup, best_path = str(tmp_path / "backup"), str(tmp_path / "best.keras")
    best = callbacks.BestModel(best_path)
    with pytest.raises(KeyboardInterrupt):
        _model().fit(X, Y, epochs=5, verbose=0, callbacks=[
            _Val([0.5, 0.6, 0.7, 0.8, 0.9]), best, Backup(backup, best_model=best), _Kill(2)])
    saved = os.path.join(backup, "epoch-2", "best.keras")
    data = open(saved, "rb").read()
    os.remove(saved)  # the link, not the best model itself
    open(saved, "wb").write(data[: len(data) // 2])
    assert Backup.newest_good_epoch(backup) == 1


@pytest.mark.slow
def test_a_second_process_cannot_take_the_lock_until_the_first_dies(tmp_path):
    out = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from sniptf import run_dir
        with run_dir.locked({out!r}):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_dir.OutputDirInUse, match=f"pid {holder.pid} .*Received: output_dir="):
            with run_dir.locked(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_dir.locked(out):  # the kernel released it with the process: no stale lock
        with run_dir.locked(out):  # re-entrant in one process
            pass


def test_a_finished_run_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "done"
    (out / "checkpoints").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "checkpoints" / "best.keras.json").write_text('{"value": 0.99}')
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="finished run.*--overwrite.*Received: output_dir="):
        training.prepare(training.TrainConfig(output_dir=str(out)))
    training.prepare(training.TrainConfig(output_dir=str(out), overwrite=True))  # checks only
    assert (out / "metrics.json").exists()
    run_dir.clear(str(out))
    assert sorted(os.listdir(out)) == ["notes.txt"]  # what a run writes, and only that


@pytest.mark.slow
def test_train_script_refuses_a_directory_in_use_and_writes_nothing(tmp_path):
    out = str(tmp_path / "busy")
    with run_dir.locked(out):
        before = sorted(os.listdir(out))
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--train_steps=5",
             f"--output_dir={out}"], capture_output=True, text=True, timeout=300,
            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
        assert result.returncode != 0
        assert "Another run is writing to this output_dir" in result.stderr
        assert "Received: --output_dir=" in result.stderr
        assert sorted(os.listdir(out)) == before  # no flags.txt, nothing else


@pytest.mark.slow
def test_sweep_runs_in_worker_processes_replaced_every_n_runs(tmp_path):
    """A run leaves ~10 MiB behind in a long-lived process (benchmarks/sweep_memory.py):
    the SNIP table's sweep replaces its worker every `runs_per_process` runs."""
    from sniptf.studies import common
    from sniptf.studies import snip
    budgets = {key: (4, 2, 4) for key in snip.BUDGETS}
    configs = [c for c in snip.table_configs(["mnist10k"], [0], budgets, str(tmp_path))
               if c.model == "lenet_300_100"][:3]
    memory = []
    results = common.run_table(configs, log=lambda line: None, runs_per_process=2, memory=memory)
    assert [m["steps"] for m in results] == [4, 4, 4]
    pids = [pid for _, _, _, pid in memory]
    assert pids[0] == pids[1] != pids[2] and os.getpid() not in pids
    assert all(rss > 0 and peak >= rss for _, rss, peak, _ in memory)


def test_an_experiment_run_for_some_models_adds_to_its_results_file(tmp_path):
    from sniptf.studies.common import merge_records
    path = str(tmp_path / "results.json")
    merge_records(path, [{"model": "lstm_s", "seed": 0, "test_error": 4.9}], ("model", "seed"))
    merged = merge_records(path, [{"model": "gru_s", "seed": 0, "test_error": 4.8}], ("model", "seed"))
    assert [r["model"] for r in merged] == ["lstm_s", "gru_s"]
    merged = merge_records(path, [{"model": "lstm_s", "seed": 0, "test_error": 5.0}], ("model", "seed"))
    with open(path) as f:
        assert json.load(f) == merged == [{"model": "gru_s", "seed": 0, "test_error": 4.8},
                                          {"model": "lstm_s", "seed": 0, "test_error": 5.0}]


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_stops_its_workers(tmp_path):
    """`kill <pid>` of a sweep must not leave its workers training on as orphans that
    hold their run directories' locks (a restarted sweep could not resume them)."""
    import time
    out = str(tmp_path / "run")
    script = ("from sniptf import training\nfrom sniptf.studies import common\n"
              f"common.run_table([training.TrainConfig(model='lenet_300_100', dataset='mnist10k', "
              f"criterion='none', kappa=1.0, train_steps=10**7, eval_every=10**6, output_dir={out!r})])\n")
    sweep = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    worker = None
    try:
        lock = os.path.join(out, run_dir.LOCK)
        for _ in range(600):  # the worker starts TensorFlow, then takes the run's lock
            time.sleep(0.2)
            assert sweep.poll() is None, sweep.stderr.read().decode()[-2000:]
            # read who holds it, never take it: a probe holding the lock for an instant made the
            # worker's own attempt fail ("another run is writing") one run in a few
            holder = open(lock).read() if os.path.exists(lock) else ""
            if holder.startswith("pid "):
                worker = int(holder.split()[1])
                break
        assert worker is not None and worker != sweep.pid
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(60) == 128 + signal.SIGTERM
        for _ in range(300):
            time.sleep(0.1)
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
        else:
            raise AssertionError(f"worker {worker} still running after the sweep got SIGTERM")
        with run_dir.locked(out):  # free again: a restarted sweep resumes the run
            pass
    finally:
        for pid in (sweep.pid, worker):
            try:
                if pid:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sweep.wait()
