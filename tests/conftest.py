import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import Phase  # noqa: E402
from hypothesis import settings  # noqa: E402

# `make test` runs the short profile; `make fuzz` the long one (HYPOTHESIS_PROFILE=long)
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
# short: no shrinking (a failure is reported as drawn, within the suite's time budget)
settings.register_profile("short", max_examples=8, deadline=None, suppress_health_check=_SLOW_OK,
                          derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("long", max_examples=300, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))


# The suite's slowest tests (studies, jobs of several processes, subprocess checks) carry
# `@pytest.mark.slow`: `make test-fast` leaves them out (`-m "not slow"`), `make test` runs
# them first — pytest-xdist hands tests out in collection order, and a slow one left for
# the end would run alone while the other worker idled. (Tests that use a module-scoped
# fixture stay where they are: moved, the fixture would be set up twice.)
def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of more than ~5 s (studies, several "
                            "processes); `make test-fast` skips them")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOADED_FLAGS = set()


def load_script(name, folder=None):
    """Imports the command `name` afresh: `sniptf.commands.<name>`, or `scripts/<name>.py`
    for the repository-only tools, or `<folder>/<name>.py` (`folder="experiments"`).
    Commands and experiments share flag names (--seed, --output_dir, --models), so the
    flags an earlier load defined are dropped first (all loads share one record of them,
    kept even when an import fails half-way)."""
    import importlib.util

    from absl import flags
    for flag in _LOADED_FLAGS & set(flags.FLAGS):
        delattr(flags.FLAGS, flag)
    before = set(flags.FLAGS)
    try:
        if folder is None and os.path.exists(os.path.join(_ROOT, "sniptf", "commands", f"{name}.py")):
            module = importlib.import_module(f"sniptf.commands.{name}")
            if set(flags.FLAGS) == before:  # imported earlier: define its flags again
                module = importlib.reload(module)
        else:
            where = folder or "scripts"
            spec = importlib.util.spec_from_file_location(f"{where}_{name}", os.path.join(_ROOT, where, f"{name}.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    finally:
        _LOADED_FLAGS.update(set(flags.FLAGS) - before)
    return module


def run_main(module, argv):
    """Parses `argv` into the global flags and runs the command's main."""
    from absl import flags
    flags.FLAGS.unparse_flags()
    return module.main(flags.FLAGS(argv))  # argv[0] and any positional arguments
