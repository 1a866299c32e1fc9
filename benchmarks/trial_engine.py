"""End-to-end throughput of the trial engine: one queue run by 1 worker, then the same
queue (a fresh storage) by 2 workers, printed as a ratio (goal >= 1.8 on 2 cores).

    python benchmarks/trial_engine.py [--workload=tiny --trials=8 --max_steps=300]

Each run is `sniptf-steps-to-result prepare` then `work` processes (`--tf_threads=1`)
started together; the time is from the first worker's start to the last worker's exit,
so a worker that lingers after its last trial counts against the ratio.
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "steps_to_result.py")
FLAGS = flags.FLAGS
flags.DEFINE_string("workload", "tiny", "The workload of every trial.")
flags.DEFINE_integer("trials", 8, "Sobol points per (sparsity, batch size); 2 x 1 grid points.")
flags.DEFINE_integer("max_steps", 300, "Steps per trial (goal 0: every trial runs its budget).")


def _run(workers):
    with tempfile.TemporaryDirectory() as study:
        common = [f"--study_dir={study}", f"--storage={study}/journal.log"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([sys.executable, SCRIPT, "prepare", *common, f"--workload={FLAGS.workload}",
                        "--sparsities=0", "--sparsities=0.5", "--batch_sizes=32",
                        f"--trials={FLAGS.trials}", "--goal_error=0", f"--max_steps={FLAGS.max_steps}",
                        "--eval_every=100"], check=True, env=env, capture_output=True)
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, SCRIPT, "work", *common, "--tf_threads=1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"a worker failed (exit {p.returncode})")
        return time.perf_counter() - start


def main(argv):
    del argv
    one = _run(1)
    two = _run(2)
    print(f"{2 * FLAGS.trials} trials of {FLAGS.workload} ({FLAGS.max_steps} steps each): "
          f"1 worker {one:.1f} s, 2 workers {two:.1f} s, speed-up {one / two:.2f}x (goal >= 1.8)")


if __name__ == "__main__":
    app.run(main)
