#!/usr/bin/env python3
"""Process start of the CLI (issue 15 item 6), binaries side by side, interleaved.

    python3 benches/startup.py BENCH_DIR INDEX_DIR REPEATS LABEL=BIN [LABEL=BIN ...]

BENCH_DIR is a writable copy of ../shared/bench with its data written (as for
benches/transport_compare.sh): its rhai_vs_dspy.py provides the in-process
stamping mock (the issue's "time to the first request" method) and
data/rusage_exec. INDEX_DIR is an index built with `dspy-rhai index` (e.g. of
../shared/data/wiki_abstracts.jsonl).

For every repeat and binary (order alternating between repeats):
  version      `--version`: task-clock (perf stat), ms
  run_no_lm    `run` of a script whose forward makes no LM call: task-clock, ms
  run_predict  `run` of bench/rhai/predict.rhai, one Predict call to the mock:
               task-clock, ms; and, in a second run without perf, the time
               from fork to the mock receiving the request (first_request_ms)
  search       `search QUESTION --index INDEX_DIR -k 3 --json`: task-clock, ms
Prints one line per measurement, then medians per binary, with the load average.
"""

import os
import statistics
import subprocess
import sys
import tempfile

BENCH, INDEX, REPEATS = sys.argv[1], sys.argv[2], int(sys.argv[3])
BINS = [a.split("=", 1) for a in sys.argv[4:]]
sys.path.insert(0, BENCH)
os.chdir(BENCH)
import rhai_vs_dspy as r  # noqa: E402

QUESTION = "Were Scott Derrickson and Ed Wood of the same nationality?"
tmp = tempfile.mkdtemp(prefix="startup_")
trivial = os.path.join(tmp, "trivial.rhai")
with open(trivial, "w") as f:
    f.write("fn forward(question) { #{ answer: question } }\n")
stamp = r.StampingMock("data/sbs/gold_2300.jsonl")
base = f"http://127.0.0.1:{stamp.port}/v1"
env = dict(os.environ, OPENAI_API_KEY="x", NO_COLOR="1")


def load():
    return open("/proc/loadavg").read().split()[0]


def task_clock_ms(cmd):
    out = os.path.join(tmp, "perf.txt")
    p = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock", "-o", out, *cmd], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({p.returncode})")
    for line in open(out):
        if "task-clock" in line:
            return float(line.split(",")[0])
    raise RuntimeError("no task-clock in perf output")


def commands(binary):
    cache = tempfile.mkdtemp(dir=tmp)
    lm = ["--lm", "openai/gpt-4o-mini", "--api-base", base, "--no-cache", "--cache-dir", cache]
    return {
        "version": [binary, "--version"],
        "run_no_lm": [binary, "run", trivial, "--input", "question=hi", "--cache-dir", cache],
        "run_predict": [binary, "run", "rhai/predict.rhai", "--input", f"question={QUESTION}", *lm],
        "search": [binary, "search", QUESTION, "--index", INDEX, "-k", "3", "--json"],
    }


results = {}
print("label measure repeat value load1")
for rep in range(REPEATS):
    order = BINS if rep % 2 == 0 else BINS[::-1]
    for label, binary in order:
        for name, cmd in commands(binary).items():
            ms = task_clock_ms(cmd)
            results.setdefault((label, name + "_task_clock_ms"), []).append(ms)
            print(label, name + "_task_clock_ms", rep, f"{ms:.2f}", load(), flush=True)
        stamp.arrivals.clear()
        pr = r.run_child(commands(binary)["run_predict"], env=env, cwd=BENCH)
        if pr["rc"] != 0 or not stamp.arrivals:
            raise RuntimeError(f"{label}: run_predict failed ({pr['rc']})")
        first = (stamp.arrivals[0] - pr["t_spawn"]) * 1000
        results.setdefault((label, "first_request_ms"), []).append(first)
        print(label, "first_request_ms", rep, f"{first:.2f}", load(), flush=True)
stamp.close()
print("# medians")
for (label, name), values in sorted(results.items()):
    print(f"{label} {name} {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})")
print("# load at end:", open("/proc/loadavg").read().strip())
