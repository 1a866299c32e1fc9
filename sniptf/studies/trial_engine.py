"""A grid of metaparameter searches run by any number of workers on Optuna's storage.

One Optuna study per grid point (e.g. per sparsity and batch size). `prepare`
creates the studies and enqueues every search point once, from one process:
Optuna's `QMCSampler` is not safe with several workers (optuna#6619) and
enqueueing from each worker races (optuna#2925, #4621). Any number of `work`
processes, on one machine or many, then claim WAITING trials through the
storage's own atomic WAITING -> RUNNING transition (what `Study.ask` does for
enqueued trials, without ever falling back to a sampler), run them, and
record the result. Storage:

* a path (default): Optuna's `JournalFileBackend`, one append-only file with
  file locks; several machines need a shared filesystem;
* an RDB URL such as `postgresql://user@host/db` for a cluster;
* SQLite is refused: with several workers it runs trials twice (optuna#4002).

The journal has no heartbeat, so a killed worker leaves its trial RUNNING;
`resume` (run while no worker is) marks such trials failed ("abandoned") and
enqueues each point again. Results are read back by `records`.
"""

import json
import os
import socket
import time

import optuna

from sniptf import _optuna_compat

SPEC_STUDY = "sniptf-spec"
STATUSES = ("reached", "not_reached", "diverged")
_STATES = optuna.trial.TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(storage):
    """An Optuna storage from a journal file path or an RDB URL.

    Raises:
        ValueError: an SQLite URL, or an empty value.
    """
    if not isinstance(storage, str) or not storage:
        raise ValueError(f"Expected a journal file path or an RDB URL. Received: storage={storage!r}")
    if storage.startswith("sqlite"):
        raise ValueError(
            "SQLite storage runs trials twice when several workers share it (optuna#4002). Use a "
            "journal file path (the default; a shared filesystem for several machines) or a "
            f"PostgreSQL URL. Received: storage={storage!r}")
    if "://" in storage:
        return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
    os.makedirs(os.path.dirname(os.path.abspath(storage)), exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(
        storage, lock_obj=optuna.storages.journal.JournalFileOpenLock(storage))
    return optuna.storages.journal.JournalStorage(backend)


class TrialEngine:
    """Prepare, work, resume and read one grid of searches in a storage.

    Args:
        storage: a path or URL for `open_storage`, or an Optuna storage.
    """

    def __init__(self, storage):
        self.storage = open_storage(storage) if isinstance(storage, str) else storage

    # --- the spec -------------------------------------------------------------
    def spec(self):
        """The prepared spec (a dict), or None before `prepare`."""
        try:
            meta = optuna.load_study(study_name=SPEC_STUDY, storage=self.storage)
        except KeyError:
            return None
        text = meta.user_attrs.get("spec")
        return json.loads(text) if text else None

    def prepare(self, spec, points):
        """Creates one study per grid point and enqueues its search points once.

        Args:
            spec: a JSON-able dict describing the whole grid (stored; a later
                `prepare` with another spec is refused).
            points: `{study_name: [params dict, ...]}` in search order.

        Returns:
            The number of trials enqueued (0 when the same spec was prepared
            before: re-running is a no-op).

        Raises:
            ValueError: the storage holds a different spec.
        """
        text = json.dumps(spec, sort_keys=True)
        meta = optuna.create_study(study_name=SPEC_STUDY, storage=self.storage, load_if_exists=True)
        existing = meta.user_attrs.get("spec")
        if existing is not None:
            if existing != text:
                raise ValueError(
                    "This storage was prepared with a different spec; use a new study "
                    f"directory or storage. Stored: {existing}. Received: spec={text}")
            return 0
        added = 0
        for name, params_list in points.items():
            study = optuna.create_study(study_name=name, storage=self.storage, direction="minimize",
                                        load_if_exists=True)
            have = {t.user_attrs.get("index") for t in study.get_trials(deepcopy=False)}
            for index, params in enumerate(params_list):
                if index not in have:  # an interrupted prepare resumes where it stopped
                    study.enqueue_trial(params, user_attrs={"index": index, "params": params})
                    added += 1
        meta.set_user_attr("spec", text)  # last: the spec marks a complete prepare
        return added

    def study_names(self):
        """Grid-point study names in the order `prepare` was given them."""
        spec = self.spec()
        if spec is None:
            raise ValueError("The storage has no prepared spec; run prepare first.")
        return list(spec["studies"])

    # --- workers --------------------------------------------------------------
    def _claim(self, study_id):
        for trial in self.storage.get_all_trials(study_id, deepcopy=False, states=(_STATES.WAITING,)):
            try:
                if self.storage.set_trial_state_values(_optuna_compat.trial_id(trial), state=_STATES.RUNNING):
                    return self.storage.get_trial(_optuna_compat.trial_id(trial))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def best_value(self, study_id):
        """The smallest recorded value of a study's reached trials, or None."""
        values = [t.value for t in self.storage.get_all_trials(study_id, deepcopy=False,
                                                               states=(_STATES.COMPLETE,))
                  if t.value is not None]
        return min(values) if values else None

    def work(self, run_trial, *, max_trials=None, log=print):
        """Claims and runs WAITING trials until none is left (or `max_trials`).

        Args:
            run_trial: `fn(study_name, params, index, best) -> result` where
                `best` is the study's best value so far (None if none) and
                `result` a dict with `status` (one of `STATUSES`), `value`
                (steps, or None) and any JSON-able extras.

        Returns:
            The number of trials this worker ran.
        """
        ran = 0
        worker = f"{socket.gethostname()}:{os.getpid()}"
        for name in self.study_names():
            study_id = self.storage.get_study_id_from_name(name)
            while max_trials is None or ran < max_trials:
                trial = self._claim(study_id)
                if trial is None:
                    break
                index, params = trial.user_attrs["index"], trial.user_attrs["params"]
                self.storage.set_trial_user_attr(_optuna_compat.trial_id(trial), "worker", worker)
                log(f"{name} trial {index} {params} on {worker}")
                start = time.perf_counter()
                try:
                    result = run_trial(name, params, index, self.best_value(study_id))
                except BaseException as e:
                    self.storage.set_trial_user_attr(_optuna_compat.trial_id(trial), "status", "error")
                    self.storage.set_trial_user_attr(_optuna_compat.trial_id(trial), "error", repr(e)[:2000])
                    self.storage.set_trial_state_values(_optuna_compat.trial_id(trial), state=_STATES.FAIL)
                    raise
                self._record(_optuna_compat.trial_id(trial), result, time.perf_counter() - start)
                ran += 1
        return ran

    def _record(self, trial_id, result, seconds):
        status = result["status"]
        if status not in STATUSES:
            raise ValueError(f"Expected status in {STATUSES}. Received: status={status!r}")
        for key, value in result.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        self.storage.set_trial_user_attr(trial_id, "seconds", seconds)
        if status == "reached":
            self.storage.set_trial_state_values(trial_id, state=_STATES.COMPLETE,
                                                values=[float(result["value"])])
        elif status == "not_reached":
            self.storage.set_trial_state_values(trial_id, state=_STATES.PRUNED)
        else:
            self.storage.set_trial_state_values(trial_id, state=_STATES.FAIL)

    def resume(self):
        """Re-queues trials left RUNNING (killed workers) or failed with an error.

        Run it while no worker runs: the journal cannot tell a dead worker's
        trial from a live one's. Each such trial is marked failed
        ("abandoned") and its point enqueued again.

        Returns:
            The number of points re-queued.
        """
        requeued = 0
        for name in self.study_names():
            study = optuna.load_study(study_name=name, storage=self.storage)
            for trial in study.get_trials(deepcopy=False, states=(_STATES.RUNNING, _STATES.FAIL)):
                if trial.state == _STATES.FAIL and trial.user_attrs.get("status") != "error":
                    continue  # diverged is a result; abandoned is already re-queued
                if trial.state == _STATES.RUNNING:
                    self.storage.set_trial_user_attr(_optuna_compat.trial_id(trial), "status", "abandoned")
                    self.storage.set_trial_state_values(_optuna_compat.trial_id(trial), state=_STATES.FAIL)
                else:
                    self.storage.set_trial_user_attr(_optuna_compat.trial_id(trial), "status", "error-requeued")
                study.enqueue_trial(trial.user_attrs["params"],
                                    user_attrs={"index": trial.user_attrs["index"],
                                                "params": trial.user_attrs["params"]})
                requeued += 1
        return requeued

    # --- results --------------------------------------------------------------
    def records(self):
        """One dict per finished trial with a result: study, index, params, status, user attrs."""
        out = []
        for name in self.study_names():
            study = optuna.load_study(study_name=name, storage=self.storage)
            for trial in study.get_trials(deepcopy=False):
                attrs = trial.user_attrs
                if attrs.get("status") in STATUSES:
                    out.append({"study": name, **attrs, "number": trial.number})
        return out

    def counts(self):
        """`{state name: count}` over all grid studies (WAITING, RUNNING, COMPLETE, ...)."""
        counts = {}
        for name in self.study_names():
            study_id = self.storage.get_study_id_from_name(name)
            for trial in self.storage.get_all_trials(study_id, deepcopy=False):
                counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts
