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


# The suite's slowest tests (studies and jobs of several processes), slowest first, are
# run before the others: pytest-xdist hands tests out in collection order, and these sit
# in the last files alphabetically, so one of them would run alone at the end while the
# other worker idled. (Tests that use a module-scoped fixture stay where they are: moved,
# the fixture would be set up twice.) tests/test_build.py checks every name exists.
SLOW_FIRST = (
    "test_trial_engine.py::test_steps_to_result_command_prepare_work_report",
    "test_training.py::test_multi_worker_killed_worker_then_restarted_job_resumes",
    "test_scripts.py::test_compare_criteria_script_smoke",
    "test_scripts.py::test_snip_experiments_script_smoke",
    "test_scripts.py::test_where_pai_stands_plan_and_smoke",
    "test_snip_budgets.py::test_study_killed_and_resumed",
    "test_trial_engine.py::test_worker_killed_mid_trial_then_resume_and_work_completes_every_point_once",
    "test_trial_engine.py::test_two_workers_run_each_point_once_and_one_leaves_while_the_other_works",
    "test_scripts.py::test_signal_propagation_script_writes_figures_and_tables",
    "test_training.py::test_sigkill_mid_training_then_same_command_resumes",
    "test_trial_engine.py::test_workers_on_a_real_postgresql_server",
    "test_packaging.py::test_wheel_installs_commands_and_data",
    "test_scripts.py::test_demo_writes_results_and_saved_model",
    "test_export_formats.py::test_sparse_saved_model_loads_where_sniptf_is_not_installed",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    key = lambda item: rank.get(f"{os.path.basename(str(item.path))}::{item.originalname}", len(rank))
    items.sort(key=key)  # stable: the others keep their order


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
