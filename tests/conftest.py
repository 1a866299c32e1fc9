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


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOADED_FLAGS = set()


def load_script(name):
    """Imports the command `name` afresh: `sniptf.commands.<name>`, or `scripts/<name>.py`
    for the repository-only tools. Commands share flag names (--seed, --output_dir), so
    the flags an earlier load defined are dropped first."""
    import importlib.util

    from absl import flags
    for flag in _LOADED_FLAGS & set(flags.FLAGS):
        delattr(flags.FLAGS, flag)
    before = set(flags.FLAGS)
    if os.path.exists(os.path.join(_ROOT, "sniptf", "commands", f"{name}.py")):
        module = importlib.import_module(f"sniptf.commands.{name}")
        if set(flags.FLAGS) == before:  # imported earlier: define its flags again
            module = importlib.reload(module)
    else:
        spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(_ROOT, "scripts", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    _LOADED_FLAGS.update(set(flags.FLAGS) - before)
    return module


def run_main(module, argv):
    """Parses `argv` into the global flags and runs the command's main."""
    from absl import flags
    flags.FLAGS.unparse_flags()
    return module.main(flags.FLAGS(argv))  # argv[0] and any positional arguments
