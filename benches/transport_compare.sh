#!/bin/bash
# LM transport designs side by side (issue 15 items 1-2): net client CPU per
# call, syscalls and futex calls per call, and TCP connections opened, for a
# 2,000-example Predict eval against mock_lm.py at 0 ms with no cache, at 1,
# 16 and 64 threads. Designs run interleaved (order alternating per repeat).
#
#   benches/transport_compare.sh BENCH_DIR REPEATS LABEL=BIN[,ENV=VALUE] ...
#
# BENCH_DIR is a writable copy of ../shared/bench with data/ written
# (python synth_qa.py; python -c "import rhai_vs_dspy as r; r.write_data()";
# cc -O2 -o data/rusage_exec rusage_exec.c) and ../tools/mock_lm.py beside it.
# "net" CPU subtracts the CPU of the same command with --limit 1 (process
# start, script and data load), as rhai_vs_dspy.py does.
set -u
BENCH=$1; REPEATS=$2; shift 2
source "$(dirname "$0")/mock_lm.sh"
cd "$BENCH"
PORT=8791
start_mock $PORT 0
A="--lm openai/gpt-4o-mini --api-base http://127.0.0.1:$PORT/v1 --no-cache"
OUT=$(mktemp -d)
echo "# load at start: $(cat /proc/loadavg)"
echo "design threads repeat net_cpu_ms_per_call wall_s syscalls_per_call futex_per_call connects load1"
designs=("$@")
for rep in $(seq 1 "$REPEATS"); do
  order=("${designs[@]}")
  if (( rep % 2 == 0 )); then order=($(printf '%s\n' "${designs[@]}" | tac)); fi
  for d in "${order[@]}"; do
    label=${d%%=*}; spec=${d#*=}; bin=${spec%%,*}; envs=""
    [[ "$spec" == *,* ]] && envs=${spec#*,}
    run() { env $envs "$bin" eval rhai/predict.rhai --data data/sbs/dev2000.jsonl $A "$@" > /dev/null 2>&1; }
    env $envs data/rusage_exec "$OUT/fixed" "$bin" eval rhai/predict.rhai --data data/sbs/dev2000.jsonl \
      $A --limit 1 --threads 1 > /dev/null 2>&1
    fixed=$(awk '{print $3+$4}' "$OUT/fixed")
    for t in 1 16 64; do
      env $envs data/rusage_exec "$OUT/ru" "$bin" eval rhai/predict.rhai --data data/sbs/dev2000.jsonl \
        $A --threads $t > /dev/null 2>&1
      env $envs strace -f -qq -c -o "$OUT/st" "$bin" eval rhai/predict.rhai --data data/sbs/dev2000.jsonl \
        $A --threads $t > /dev/null 2>&1
      awk -v f="$fixed" -v l="$label" -v t="$t" -v r="$rep" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        -v sc="$(awk '/total/ {printf "%.1f", $4/2000}' "$OUT/st")" \
        -v fx="$(awk '$NF=="futex" {printf "%.1f", $4/2000}' "$OUT/st")" \
        -v cn="$(awk '$NF=="connect" {print $4}' "$OUT/st")" \
        '{printf "%s %d %d %.3f %.2f %s %s %s %s\n", l, t, r, ($3+$4-f)*1000/1999, $2, sc, fx, cn, load}' "$OUT/ru"
    done
  done
done
echo "# load at end: $(cat /proc/loadavg)"
