#!/bin/bash
# Time from Ctrl-C (SIGINT) to process exit of `eval` against a hanging LM
# (issue 12 item 9), and the requests the mock received after the signal.
#
#   benches/ctrl_c_exit.sh BENCH_DIR LABEL=BIN ...
#
# BENCH_DIR as for transport_compare.sh. The mock answers after 100 s, so
# every request hangs; eval runs 16 threads with --timeout 300 and the
# default retries. SIGINT goes out once 16 requests are in flight.
set -u
BENCH=$1; shift
source "$(dirname "$0")/mock_lm.sh"
cd "$BENCH"
PORT=8792
start_mock $PORT 100000
requests() { curl -s "http://127.0.0.1:$PORT/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['total_requests'])"; }
echo "# load at start: $(cat /proc/loadavg)"
echo "design exit_code seconds_to_exit requests_before requests_after"
for d in "$@"; do
  label=${d%%=*}; bin=${d#*=}
  curl -s -X POST "http://127.0.0.1:$PORT/stats/reset" > /dev/null
  "$bin" eval rhai/predict.rhai --data data/sbs/dev.jsonl --threads 16 --timeout 300 \
    --lm openai/gpt-4o-mini --api-base "http://127.0.0.1:$PORT/v1" --no-cache > /dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do [ "$(requests)" -ge 16 ] && break; sleep 0.05; done
  before=$(requests)
  t0=$(date +%s.%N)
  kill -INT $pid
  # Give up after 60 s (the old client waited for the 300 s timeout).
  for _ in $(seq 1 1200); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
  if kill -0 $pid 2>/dev/null; then kill -9 $pid; fi
  wait $pid; code=$?
  t1=$(date +%s.%N)
  sleep 1
  echo "$label $code $(echo "$t1 - $t0" | bc) $before $(requests)"
done
echo "# load at end: $(cat /proc/loadavg)"
