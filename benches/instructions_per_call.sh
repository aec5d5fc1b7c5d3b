#!/bin/bash
# User-space instructions per LM call of a Predict eval, counted by
# valgrind's cachegrind: exact and unmoved by other load on the machine,
# unlike CPU time (issue 15; BENCHMARKS.md "Per-call CPU"). Kernel work
# (syscalls, the loopback TCP path) is not counted.
#
#   benches/instructions_per_call.sh BENCH_DIR LABEL=BIN [LABEL=BIN ...]
#
# BENCH_DIR as for benches/transport_compare.sh (a writable copy of
# ../shared/bench with data/ written, ../tools/mock_lm.py beside it). Each
# binary runs `eval rhai/predict.rhai --threads 1 --no-cache` against
# mock_lm.py at 0 ms with --limit 100 and --limit 600; the difference / 500
# is the per-call count, without start-up and data loading.
set -u
BENCH=$1; shift
source "$(dirname "$0")/mock_lm.sh"
cd "$BENCH"
PORT=8792
start_mock $PORT 0
count() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$1" eval rhai/predict.rhai \
    --data data/sbs/dev2000.jsonl --lm openai/gpt-4o-mini --api-base http://127.0.0.1:$PORT/v1 --no-cache \
    --threads 1 --limit "$2" 2>&1 | awk '/I *refs/ {gsub(",", "", $4); print $4}'
}
echo "label instructions_per_call fixed_instructions"
for d in "$@"; do
  label=${d%%=*}; bin=${d#*=}
  a=$(count "$bin" 100); b=$(count "$bin" 600)
  echo "$label $(( (b - a) / 500 )) $a"
done
