"""Distribution strategies by name: default, mirrored, multi_worker, tpu."""

import atexit
import json
import os
import socket
import threading
import urllib.parse

import tensorflow as tf
from absl import logging

from sniptf import _keras_compat

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Splits the first CPU into `num_devices` logical devices (for testing).

    Must run before TensorFlow initializes its runtime (before any tensor is
    created); raises a RuntimeError saying so otherwise.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"Expected an int >= 1. Received: num_cpu_devices={num_devices!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as e:
        raise RuntimeError(
            f"Cannot split the CPU into num_cpu_devices={num_devices} logical devices: "
            "TensorFlow is already initialized. Split it first thing in the program.") from e


def _check_tpu_address(tpu, timeout):
    parsed = urllib.parse.urlparse(tpu)
    if parsed.scheme != "grpc":
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 8470), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(
            f"No TPU answers at tpu={tpu!r} ({e}). Pass the TPU's name or its "
            "grpc://host:port address.") from e


def _connect_tpu(tpu, timeout):
    """TPUClusterResolver + connect + initialize, given up after `timeout` s."""
    _check_tpu_address(tpu, min(timeout, 10))
    result = {}

    def connect():
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu="" if tpu == "local" else tpu)
            if tpu != "local":
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            result["resolver"] = resolver
        except Exception as e:  # surfaced below with the flag named
            result["error"] = e

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(
            f"Could not reach the TPU tpu={tpu!r} within {timeout:.0f} s. Check the name or "
            "address and that this machine may use it.")
    if "error" in result:
        raise ValueError(
            f"Could not connect to the TPU tpu={tpu!r}: {result['error']}") from result["error"]
    return result["resolver"]


def check_strategy(name, *, tpu=None, num_cpu_devices=None):
    """Checks `make_strategy`'s arguments without creating anything.

    Raises:
        ValueError: an unknown name, `num_cpu_devices` off `"mirrored"`, or
            `"tpu"` without `tpu`. (`split_cpu` checks `num_cpu_devices` itself.)
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: strategy={name!r}")
    if num_cpu_devices and name != "mirrored":
        raise ValueError(
            f"num_cpu_devices only applies to strategy='mirrored'. Received: strategy={name!r}")
    if name == "tpu" and not tpu:
        raise ValueError(
            "strategy='tpu' needs tpu=NAME_OR_ADDRESS (the TPU's name, 'local' on a "
            "TPU VM, or grpc://host:port). Received: tpu={!r}".format(tpu))


def make_strategy(name="default", *, tpu=None, num_cpu_devices=None, tpu_timeout=120.0):
    """A `tf.distribute.Strategy` by name.

    Args:
        name: `"default"` (no distribution), `"mirrored"` (all local devices,
            or `num_cpu_devices` logical CPUs), `"multi_worker"`
            (MultiWorkerMirroredStrategy; the cluster comes from `TF_CONFIG`)
            or `"tpu"` (TPUStrategy through `TPUClusterResolver`).
        tpu: with `"tpu"`: the TPU's name, `"local"`, or `grpc://host:port`.
        num_cpu_devices: with `"mirrored"`: split the CPU first (testing).
        tpu_timeout: seconds to wait for a TPU before failing.

    Raises:
        ValueError: unknown name, missing/unreachable `tpu`, bad `TF_CONFIG`.
        TimeoutError: the TPU did not answer in time.
    """
    check_strategy(name, tpu=tpu, num_cpu_devices=num_cpu_devices)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if num_cpu_devices:
            split_cpu(num_cpu_devices)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices)
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if config:
            try:
                json.loads(config)
            except ValueError as e:
                raise ValueError(f"TF_CONFIG is not valid JSON: {config!r}") from e
        # Keras 3.15's fit needs a workaround under this strategy:
        # sniptf.training.run applies it around its own fit (see _keras_compat).
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.TPUStrategy(_connect_tpu(tpu, tpu_timeout))


def is_chief(strategy):
    """True on the worker that writes outputs (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task = resolver.task_type
    return task in (None, "chief") or (
        task == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())


def agree_min(strategy, value):
    """The smallest of every worker's `value` (a non-negative int), the same on all
    workers; `value` itself off multi-worker. A collective: every worker must call it.

    Each worker puts its value in its own slot of a vector and the vectors are
    summed across replicas (tf.distribute reduces by SUM or MEAN only)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return int(value)
    tasks = [(kind, i) for kind in sorted(spec) if kind in ("chief", "worker")
             for i in range(len(spec[kind]))]
    slot = tasks.index((resolver.task_type, resolver.task_id))
    local = strategy.num_replicas_in_sync // len(tasks)  # replicas on each worker
    vector = [0.0] * len(tasks)
    vector[slot] = float(value) / local
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM,
                             strategy.run(lambda: tf.constant(vector, tf.float64)), axis=None)
    return int(round(float(tf.reduce_min(summed))))


# how long a worker that has finished waits at exit for the chief's process to end
CHIEF_EXIT_TIMEOUT = 300.0
_waiting_for_the_chief = False  # the atexit wait is registered (once a process)


def _outlive_the_chief(timeout):
    if not _keras_compat.wait_for_coordination_service_to_stop(timeout):
        logging.warning("The chief was still running %.0f s after this worker finished; "
                        "exiting anyway.", timeout)


def leave_after_the_chief(strategy, *, timeout=CHIEF_EXIT_TIMEOUT):
    """Orders a multi-worker job's exit: this worker's process, at its exit, waits for
    the chief's to end first. Call it on every worker after the job's last collective.

    TensorFlow's coordination service runs in the chief and takes a worker whose
    process has exited for a crashed one ("The following tasks are unhealthy (stopped
    sending heartbeats)", ~10 s on) whenever the chief outlives it by that long — a
    loaded machine, or the chief exporting, is enough. TensorFlow gives Python no call
    that disconnects a worker cleanly, so the order is kept instead: the chief exits
    when it is done; every other worker, at its exit (`atexit`: not before, so a
    program may still work after `run` returns), waits until the chief's service has
    stopped (at most `timeout` seconds, then warns and exits). A no-op on the chief
    and off multi-worker. Registered after the last collective only, so a worker that
    fails earlier exits at once and the chief sees the failure.
    """
    global _waiting_for_the_chief
    if is_chief(strategy) or _waiting_for_the_chief:
        return
    _waiting_for_the_chief = True
    atexit.register(_outlive_the_chief, timeout)
