"""BUILD must have a py_test per test file and a py_binary per script."""

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _targets():
    """{kind: {name: main}} parsed from BUILD."""
    text = open(os.path.join(ROOT, "BUILD")).read()
    found = {}
    for kind, body in re.findall(r"^(py_\w+)\((.*?)^\)", text, re.S | re.M):
        name = re.search(r'name = "([^"]+)"', body).group(1)
        main = re.search(r'main = "([^"]+)"', body)
        found.setdefault(kind, {})[name] = main.group(1) if main else None
    return found


def test_every_test_file_has_a_py_test():
    mains = set(_targets().get("py_test", {}).values())
    missing = [f for f in _files("tests/test_*.py") if f not in mains]
    assert not missing, f"add py_test targets to BUILD for {missing}"


def test_every_script_has_a_py_binary():
    mains = set(_targets().get("py_binary", {}).values())
    missing = [f for f in _files("scripts/*.py") if f not in mains]
    assert not missing, f"add py_binary targets to BUILD for {missing}"


def test_targets_point_at_existing_files():
    for kind, targets in _targets().items():
        for name, main in targets.items():
            assert main is None or os.path.exists(os.path.join(ROOT, main)), (kind, name, main)


@pytest.mark.skipif(shutil.which("bazel") is None, reason="bazel (Debian bazel-bootstrap) not installed")
def test_bazel_query_sees_every_target():
    try:
        out = subprocess.run(["bazel", "query", "kind('py_test|py_binary', //...)"], cwd=ROOT,
                             capture_output=True, text=True, timeout=240)
    finally:
        subprocess.run(["bazel", "shutdown"], cwd=ROOT, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    queried = {line.strip()[3:] for line in out.stdout.splitlines() if line.startswith("//:")}
    expected = {os.path.splitext(os.path.basename(f))[0] for f in _files("tests/test_*.py") + _files("scripts/*.py")}
    assert expected <= queried, f"bazel query lacks {sorted(expected - queried)}"


def test_private_keras_names_only_in_the_compat_module():
    pattern = re.compile(r"keras\.src|\._[a-z_]*build|_keras_history")
    hits = []
    for folder in ("sniptf", "scripts"):
        for path in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True):
            rel = os.path.relpath(path, ROOT)
            if rel == os.path.join("sniptf", "_keras_compat.py"):
                continue
            for number, line in enumerate(open(path), 1):
                if pattern.search(line):
                    hits.append(f"{rel}:{number}: {line.strip()}")
    assert not hits, "private Keras names belong in sniptf/_keras_compat.py:\n" + "\n".join(hits)
