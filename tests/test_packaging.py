"""The commands work from a wheel installed into a fresh virtualenv (no editable install)."""

import glob
import os
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_installs_commands_and_data(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels), ROOT], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel offline here: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = glob.glob(str(wheels / "sniptf-*.whl"))
    assert len(wheel) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # install the wheel alone; the dependencies come from this environment's
    # site-packages on PYTHONPATH (its .pth files, and so the editable sniptf, are not read)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                              "--no-index", "-q", wheel[0]], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"], TF_CPP_MIN_LOG_LEVEL="3")
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    where = run(python, "-c", "import sniptf, sniptf.data as d, numpy as np; "
                "print(sniptf.__file__); print(np.load(d.mnist10k_path())['x_train'].shape)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert str(venv) in where.stdout and "(7001, 28, 28)" in where.stdout, where.stdout
    commands = {"sniptf-demo": "demo", "sniptf-train": "train", "sniptf-export": "export",
                "sniptf-snip-experiments": "snip_experiments", "sniptf-signal-propagation": "signal_propagation",
                "sniptf-steps-to-result": "steps_to_result", "sniptf-compare-criteria": "compare_criteria",
                "sniptf-snip-budgets": "snip_budgets", "sniptf-where-pai-stands": "where_pai_stands",
                "sniptf-rigl-vs-set": "rigl_vs_set"}
    for command, module in commands.items():  # every console script calls its module's run
        script = (venv / "bin" / command).read_text()
        assert f"from sniptf.commands.{module} import run" in script, (command, script)
    site = glob.glob(str(venv / "lib" / "python*" / "site-packages" / "sniptf" / "commands"))[0]
    for module in commands.values():  # installed from the wheel, not the checkout
        assert "def run(" in open(os.path.join(site, f"{module}.py")).read(), module
    # two of them for real (each start is mostly a TensorFlow import), side by side
    helps = {command: subprocess.Popen([str(venv / "bin" / command), "--helpfull"], cwd=tmp_path, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for command in ("sniptf-train", "sniptf-where-pai-stands")}
    for command, proc in helps.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert "--output_dir" in stdout, (command, stderr[-2000:])  # absl help exits 1
    out = tmp_path / "run"
    proc = run(python, "-m", "sniptf.commands.train", "--train_steps=20", "--eval_every=10",
               "--batch_size=32", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "metrics.json").exists() and (out / "saved_model" / "saved_model.pb").exists()
