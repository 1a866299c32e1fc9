"""SNIP under tf.distribute: Mirrored over 2 logical CPUs, multi-worker on loopback.

Each case runs tests/distributed_worker.py in fresh processes (logical devices
and TF_CONFIG must be set before TensorFlow starts).
"""

import pytest
import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _check(result):
    assert result["identical_across_replicas"]
    assert result["examples_scored"] == 64
    assert result["kept"] == result["expected_kept"]
    # equal to the single-device mask for the same global batch, up to float ties
    assert result["mismatch_vs_single_device"] <= 2
    # compiled loss + sample weights: the global-batch normalisation stays exact
    assert result["weighted_scores_max_rel_diff"] < 1e-4


@pytest.mark.slow
def test_mirrored_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored.json"
    proc = subprocess.run([sys.executable, WORKER, "mirrored", str(out)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["replicas"] == 2 and result["replica_copies"] == 2
    _check(result)
    assert result["pruned_weights_zero_after_training"] is True


@pytest.mark.slow
def test_multi_worker_two_processes_on_loopback(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "multi_worker", str(tmp_path / f"w{index}.json")],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    for r in results:
        assert r["replicas"] == 2
        _check(r)
    assert results[0]["mask_digest"] == results[1]["mask_digest"]


@pytest.mark.slow
def test_importing_sniptf_leaves_tensorflow_uninitialized():
    """Logical CPU devices can only be set before TensorFlow initializes; an
    import-time tensor anywhere in the package breaks every multi-device run."""
    code = ("import sniptf, tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
            "print('devices', len(tf.config.list_logical_devices('CPU')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "devices 2" in done.stdout
