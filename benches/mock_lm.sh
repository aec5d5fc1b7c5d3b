# Sourced by the shell benches (transport_compare.sh, ctrl_c_exit.sh,
# instructions_per_call.sh), from inside BENCH_DIR.
#
# start_mock PORT LATENCY_MS: starts ../tools/mock_lm.py with the bench's
# gold answers, stops it when the script exits, and sets OPENAI_API_KEY.
start_mock() {
  python3 ../tools/mock_lm.py --port "$1" --gold data/sbs/gold_2300.jsonl --latency-ms "$2" > /dev/null 2>&1 &
  MOCK=$!
  trap 'kill $MOCK 2>/dev/null' EXIT
  sleep 1.5
  export OPENAI_API_KEY=x
}
