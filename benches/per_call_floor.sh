#!/bin/bash
# The eval's net client CPU per LM call beside the floor under it (issue 15
# item 1; benches/per_call_floor.rs): ROUNDS interleaved rounds, each the
# eval at 1 thread (--limit 2000 minus --limit 100, / 1900; user and system
# CPU from /usr/bin/time) then the bare loops, against one mock_lm.py at 0 ms.
#
#   cargo bench --bench per_call_floor --no-run   # builds target/release/deps/per_call_floor-*
#   benches/per_call_floor.sh BENCH_DIR ROUNDS DSPY_RHAI_BIN FLOOR_BIN
#
# BENCH_DIR as for benches/transport_compare.sh.
set -u
BENCH=$1; ROUNDS=$2; BIN=$3; FLOOR=$4
source "$(dirname "$0")/mock_lm.sh"
cd "$BENCH"
PORT=8793
start_mock $PORT 0
URL=http://127.0.0.1:$PORT/v1
cpu() {
  /usr/bin/time -f "%U %S" "$BIN" eval rhai/predict.rhai --data data/sbs/dev2000.jsonl --lm openai/gpt-4o-mini \
    --api-base $URL --no-cache --threads 1 --limit "$1" 2>&1 > /dev/null | tail -1
}
for round in $(seq 1 "$ROUNDS"); do
  echo "# round $round, load $(cut -d' ' -f1 /proc/loadavg)"
  a=$(cpu 100); b=$(cpu 2000)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    u = (y[1] - x[1]) / 1900 * 1e6; s = (y[2] - x[2]) / 1900 * 1e6;
    printf "eval(user %.1f + sys %.1f) 1900 %.1f -\n", u, s, u + s }'
  "$FLOOR" "$URL/chat/completions" 2000 | tail -n +2
done
