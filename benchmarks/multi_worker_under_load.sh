#!/usr/bin/env bash
# The multi-worker tests N times in a row (default 5) while two busy-loop processes load
# both cores: the loaded machine under which the chief once outlived a worker by the
# coordination service's heartbeat timeout. Prints one pytest summary line per run.
#   bash benchmarks/multi_worker_under_load.sh [N]
set -u
cd "$(dirname "$0")/.."
python3 -c "while True: pass" & L1=$!
python3 -c "while True: pass" & L2=$!
trap 'kill $L1 $L2 2>/dev/null' EXIT
for i in $(seq "${1:-5}"); do
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_training.py \
    -k "test_multi_worker_training_on_loopback_and_set_updates_every_worker_alike or chief_that_outlives" | tail -1
done
