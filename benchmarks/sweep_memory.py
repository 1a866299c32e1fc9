"""Memory of a sweep: the SNIP table's runs one after another.

    python benchmarks/sweep_memory.py [--runs=20] [--train_steps=200]

Runs the SNIP-table configurations (`sniptf.studies.snip.table_configs`: dense,
SNIP, random and magnitude at several kappas, LeNet-300-100 and LeNet-5-Caffe,
mnist10k) with a short step budget, twice:
1. as `snip_experiments` runs them (`snip.run_table`: a worker process replaced
   every `snip.RUNS_PER_PROCESS` runs), printing the worker's resident memory
   (VmRSS) and its peak (VmHWM) after each run;
2. all in this one process, printing the same: the memory a run leaves behind.
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from absl import app
from absl import flags

from sniptf import training
from sniptf.studies import snip

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 12, "Runs in the sweep.", lower_bound=1)
flags.DEFINE_integer("train_steps", 200, "Steps of each run.", lower_bound=1)


def _status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024  # MiB


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    budgets = {key: (FLAGS.train_steps, FLAGS.train_steps // 2, FLAGS.train_steps) for key in snip.BUDGETS}
    print(f"machine: {os.cpu_count()} cores; {FLAGS.runs} runs of {FLAGS.train_steps} steps, mnist10k")
    for mode in ("snip.run_table (worker replaced every "
                 f"{snip.RUNS_PER_PROCESS} runs)", "one process"):
        work = tempfile.mkdtemp(prefix="sniptf-sweep-")
        configs = snip.table_configs(["mnist10k"], [0], budgets, work)
        configs = [training.TrainConfig(**{**c.__dict__, "output_dir": os.path.join(work, f"run{i}")})
                   for i, c in enumerate((configs * (-(-FLAGS.runs // len(configs))))[:FLAGS.runs])]
        print(f"-- {mode}")
        start = time.perf_counter()
        if mode.startswith("snip"):
            memory = []
            snip.run_table(configs, log=lambda line: None, memory=memory)
            rows = [(rss, peak) for _, rss, peak, _ in memory]
        else:
            rows = []
            for config in configs:
                training.run(config)
                keras.backend.clear_session()
                rows.append((_status("VmRSS"), _status("VmHWM")))
        for i, (config, (rss, peak)) in enumerate(zip(configs, rows)):
            print(f"run {i + 1:2d} {config.model:14s} {config.criterion:9s} kappa={config.kappa:<5g} "
                  f"RSS {rss:6.0f} MiB, peak {peak:6.0f} MiB")
        print(f"{mode}: {time.perf_counter() - start:.0f} s; highest peak {max(p for _, p in rows):.0f} MiB")


if __name__ == "__main__":
    app.run(main)
