"""Data parallelism x sparsity (Lee, Ajanthan, Torr, Jaggi, ICLR 2021).

Steps-to-result K*: for a workload (model, data, optimizer) and a goal error,
the fewest training steps that reach it, best over a quasi-random
metaparameter search, for each batch size B and sparsity level. The study:

* `sobol_points`: the search points (Bratley & Fox's Sobol sequence without its
  all-zero point, mapped through `log` / `reverse_log` / `linear` / `int`
  scales: the authors' sequence and mappings);
* `run_trial`: one trial (init seed = its index, the same data order for all
  trials, standardized inputs, SNIP with biases scored over one epoch of
  batches of 100 at that init),
  evaluated at `eval_steps`, `steps_to_result` from its trace;
* `fit_steps`: K* = c1/B + c2 by least squares in log space; B_crit = c1/c2
  (McCandlish et al.'s S = S_min(1 + B_crit/B)), with bootstrap intervals;
* `probe`: the local Lipschitz constant along training (as the authors: the
  whole training split, every `every` steps from step `every`) and the gradient
  noise scale B_simple, per sparsity and init seed at one learning rate;
* trials run on `trial_engine.TrialEngine` (Optuna storage, many workers);
  `report` gathers results.json and the plots.

Rooms: `search` (Param, Sobol), `sobol` (the generator), `workloads` (Workload, the model and optimizer of
a trial), `trial` (grid, spec, `run_trial`, `work`), `probes` (Lipschitz, noise
scale), `results` (fits, results.json, summary).
"""

from sniptf.studies.data_parallelism.probes import PROBE_LEARNING_RATE
from sniptf.studies.data_parallelism.probes import check_probe_learning_rate
from sniptf.studies.data_parallelism.probes import lipschitz_summary
from sniptf.studies.data_parallelism.probes import probe
from sniptf.studies.data_parallelism.probes import run_probes
from sniptf.studies.data_parallelism.results import collect
from sniptf.studies.data_parallelism.results import fit_steps
from sniptf.studies.data_parallelism.results import goal_errors
from sniptf.studies.data_parallelism.results import report
from sniptf.studies.data_parallelism.results import summary_markdown
from sniptf.studies.data_parallelism.search import SCALES
from sniptf.studies.data_parallelism.search import Param
from sniptf.studies.data_parallelism.search import sobol_points
from sniptf.studies.data_parallelism.trial import eval_steps
from sniptf.studies.data_parallelism.trial import make_spec
from sniptf.studies.data_parallelism.trial import prepare
from sniptf.studies.data_parallelism.trial import run_trial
from sniptf.studies.data_parallelism.trial import steps_to_result
from sniptf.studies.data_parallelism.trial import study_name
from sniptf.studies.data_parallelism.trial import work
from sniptf.studies.data_parallelism.workloads import WORKLOADS
from sniptf.studies.data_parallelism.workloads import Workload
from sniptf.studies.data_parallelism.workloads import _arrays  # noqa: F401 (tests)
from sniptf.studies.data_parallelism.workloads import build_model
from sniptf.studies.data_parallelism.workloads import get_workload
from sniptf.studies.data_parallelism.workloads import optimizer
from sniptf.studies.data_parallelism.workloads import register_workload
from sniptf.studies.data_parallelism.workloads import train_batches
from sniptf.studies.data_parallelism.workloads import workload_data

__all__ = ["SCALES", "Param", "sobol_points", "Workload", "WORKLOADS", "get_workload",
           "register_workload", "workload_data", "train_batches", "build_model", "optimizer",
           "PROBE_LEARNING_RATE", "check_probe_learning_rate", "lipschitz_summary", "goal_errors", "eval_steps", "steps_to_result",
           "study_name", "make_spec", "prepare", "run_trial", "work", "fit_steps", "collect",
           "probe", "run_probes", "summary_markdown", "report"]
