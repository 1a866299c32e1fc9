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


@pytest.mark.slow
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


COMPAT = {os.path.join("sniptf", "_keras_compat.py"), os.path.join("sniptf", "_optuna_compat.py")}


def _sources():
    for folder in ("sniptf", "scripts"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)):
            rel = os.path.relpath(path, ROOT)
            if rel not in COMPAT:
                yield rel, open(path).read()


def test_private_library_names_only_in_the_compat_modules():
    """No private module of Keras, TensorFlow or Optuna is imported, no private
    attribute of theirs read, outside `_keras_compat` / `_optuna_compat`: every
    `._name` read must be a name sniptf itself defines (a def, a class or an
    assignment somewhere in sniptf)."""
    private_module = re.compile(r"keras\.src|tensorflow\.python|tf\.python|optuna\.\w+\._|_keras_history")
    attribute = re.compile(r"\.(_[A-Za-z]\w*)\b")
    sources = dict(_sources())
    ours = set()
    for text in sources.values():
        ours.update(re.findall(r"(?:def|class)\s+(_\w+)", text))
        ours.update(re.findall(r"\b(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)", text))
    hits = []
    for rel, text in sources.items():
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if private_module.search(code):
                hits.append(f"{rel}:{number}: {line.strip()}")
            for name in attribute.findall(code):
                if not name.startswith("__") and name not in ours:
                    hits.append(f"{rel}:{number}: {name}: {line.strip()}")
    assert not hits, ("private Keras/TF/Optuna names belong in sniptf/_keras_compat.py or "
                      "sniptf/_optuna_compat.py:\n" + "\n".join(hits))


def test_no_private_library_hook_overridden_outside_the_compat_modules():
    """A sniptf class that overrides a private method of a Keras/TF class (Keras's
    `BackupAndRestore._save_model`) does it through a compat-module base."""
    import importlib
    import inspect
    import pkgutil

    import sniptf
    hits = []
    for info in pkgutil.walk_packages(sniptf.__path__, "sniptf."):
        if info.name.endswith("_compat") or info.name.startswith("sniptf.commands"):
            continue  # the commands define absl flags at import, and hold no classes
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            theirs = [b for b in cls.__mro__[1:] if not b.__module__.startswith("sniptf")]
            for name in vars(cls):
                if name.startswith("_") and not name.startswith("__") and any(
                        name in vars(b) for b in theirs):
                    hits.append(f"{info.name}.{cls.__name__}.{name}")
    assert not hits, "override private hooks in a compat-module base: " + ", ".join(hits)


def _import_graph():
    """`{module: {sniptf modules it imports}}` over sniptf/, function-local imports too."""
    import ast
    modules = {}
    for path in glob.glob(os.path.join(ROOT, "sniptf", "**", "*.py"), recursive=True):
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        modules[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "sniptf")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sniptf":
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    found.add(full if full in modules else node.module)
        graph[name] = {m for m in found if m in modules}
    return graph


def test_the_import_graph_has_no_circle_and_no_import_back_up():
    """Rooms: commands over studies over the library; nothing imports a room above it,
    and no module reaches itself through its imports."""
    graph = _import_graph()
    tier = lambda m: 2 if m.startswith("sniptf.commands") else 1 if m.startswith("sniptf.studies") else 0
    upward = [f"{m} -> {n}" for m, ns in graph.items() for n in ns if tier(n) > tier(m)]
    assert not upward, "imports from a lower room back up: " + ", ".join(sorted(upward))
    state, circles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                circles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(circles)


def test_criteria_is_the_only_registrar_and_does_not_import_scoring():
    graph = _import_graph()
    assert "sniptf.scoring" not in graph["sniptf.criteria"]
    callers = [rel for rel, text in _sources() if re.search(r"^\s*register_criterion\(", text, re.M)
               and rel != os.path.join("sniptf", "criteria.py")]
    assert not callers, f"criteria are registered in sniptf/criteria.py only: {callers}"


def _anchor(heading):
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_is_a_front_door_and_its_links_resolve():
    """README at most 16 KB with the install in its first screen; every relative link of
    README and docs/ names a file that exists, and every #anchor a heading there."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.encode()) <= 16 * 1024
    assert "pip install" in "\n".join(readme.splitlines()[:30])
    for page in ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        text = open(os.path.join(ROOT, page)).read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else os.path.join(ROOT, page)
            assert os.path.exists(file), f"{page}: link to missing {target}"
            if anchor and file.endswith(".md"):
                headings = {_anchor(h) for h in re.findall(r"^#+ (.*)$", open(file).read(), re.M)}
                assert anchor in headings, f"{page}: no heading for #{anchor} in {path or page}"


def test_results_open_with_a_contents_list_by_topic():
    text = open(os.path.join(ROOT, "docs", "RESULTS.md")).read()
    head = text.split("\n## ", 2)
    assert head[1].startswith("Contents")
    assert not re.search(r"^## .*\b[Ii]ssue \d", text, re.M), "headings name topics, not issue numbers"


def test_no_studies_module_over_350_lines():
    long = {os.path.relpath(p, ROOT): n for p in glob.glob(os.path.join(ROOT, "sniptf", "studies", "**", "*.py"),
                                                          recursive=True)
            if (n := sum(1 for _ in open(p))) > 350}
    assert not long, f"split these into rooms: {long}"


def test_readme_layout_names_every_module():
    """The README's layout block names every module of sniptf/ (a package's modules by their
    file names on its line, or the package itself for commands/ and exporters/)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme[readme.index("## Layout"):]
    block = block[:block.index("```", block.index("```") + 3)]
    missing = []
    for path in glob.glob(os.path.join(ROOT, "sniptf", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        folder, name = os.path.split(rel)
        if name == "__init__.py" or folder in ("sniptf/commands", "sniptf/exporters"):
            continue
        if rel not in block and not (folder != "sniptf" and name[:-3] in block and folder in block):
            missing.append(rel)
    assert not missing, f"add to the README's layout: {missing}"


def test_training_stays_small_and_train_flags_are_generated():
    lines = sum(1 for _ in open(os.path.join(ROOT, "sniptf", "training.py")))
    assert lines <= 300, f"sniptf/training.py has {lines} lines: give what grew its own room"
    train = open(os.path.join(ROOT, "sniptf", "commands", "train.py")).read()
    assert train.count("flags.DEFINE_") <= 8, "sniptf-train's flags come from TrainConfig (config_flags)"
