#!/usr/bin/env python3
"""dspy-rhai's bootstrap, COPRO and MIPROv2 beside Python DSPy 3.4.1, one run.

    python3 benches/instruction_optimizers.py --bin target/release/dspy-rhai \
        --python ../shared-bench-venv/bin/python --latency-ms 50 --threads 16

The workload is ../shared/bench/dspy_instruction_baseline.py's: HotPotQA train 50
(compile), val 100, dev 300, ChainOfThought("question -> answer"), exact match,
against ../shared/tools/mock_lm.py with hidden instruction keys concise,exact,verify.
For each dspy-rhai optimizer it records the dev score, the LM calls made while
compiling (the mock's /stats), compile wall time, and the ideal wall time
(calls x latency / threads). MIPROv2 also runs with parallel_trials=1 (DSPy's
sequential trials). Then it runs the Python baseline (mipro, copro) in the same
process tree, and writes everything as JSON.
"""
import argparse, json, os, re, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.normpath(os.path.join(ROOT, "..", "..", "shared"))
if not os.path.isdir(SHARED):
    SHARED = "/work/shared"


def rows(path, a, b):
    with open(path) as f:
        return [json.loads(l) for l in f][a:b]


def write(path, rs):
    with open(path, "w") as f:
        for r in rs:
            f.write(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "dspy-rhai"))
    ap.add_argument("--python", default="/work/shared-bench-venv/bin/python")
    ap.add_argument("--latency-ms", type=float, default=50)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--keys", default="concise,exact,verify")
    ap.add_argument("--optimizers", default="bootstrap,bootstrap-spec0,copro,mipro-v2,mipro-v2-seq,mipro-v2-spec0")
    ap.add_argument("--skip-python", action="store_true")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "instruction_bench.json"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    train_rows = rows(os.path.join(SHARED, "data", "hotpotqa_train.jsonl"), 0, 150)
    dev_rows = rows(os.path.join(SHARED, "data", "hotpotqa_dev.jsonl"), 0, 300)
    paths = {k: os.path.join(tmp, k + ".jsonl") for k in ("train", "val", "dev", "gold")}
    write(paths["train"], train_rows[:50])
    write(paths["val"], train_rows[50:150])
    write(paths["dev"], dev_rows)
    write(paths["gold"], train_rows + dev_rows)
    mock = subprocess.Popen([sys.executable, os.path.join(SHARED, "tools", "mock_lm.py"), "--port", "0",
                             "--gold", paths["gold"], "--latency-ms", str(args.latency_ms),
                             "--instruction-keys", args.keys],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(mock.stdout.readline().split()[1])
    stats = lambda reset=False: json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{port}/stats" + ("?reset=1" if reset else "")).read())
    lm = ["--lm", "openai/gpt-4o-mini", "--api-base", f"http://127.0.0.1:{port}/v1", "--no-cache",
          "--threads", str(args.threads)]
    script = os.path.join(HERE, "instruction_qa.rhai")
    common = [script, "--metric", "answer_exact_match", "--inputs", "question"] + lm

    def evaluate(program=None):
        cmd = [args.bin, "eval", "--data", paths["dev"]] + common + (["--load", program] if program else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return float(re.search(r"score ([0-9.]+)%", out).group(1))

    results = {"latency_ms": args.latency_ms, "threads": args.threads, "keys": args.keys,
               "loadavg_start": os.getloadavg(), "rhai": {}, "python": None}
    results["rhai"]["zero_shot_dev"] = evaluate()
    print(f"dspy-rhai zero-shot dev {results['rhai']['zero_shot_dev']:.1f}", flush=True)
    configs = {
        "bootstrap": ["--optimizer", "bootstrap"],
        "bootstrap-spec0": ["--optimizer", "bootstrap", "--speculation", "0"],
        "mipro-v2-spec0": ["--optimizer", "mipro-v2", "--auto", "light", "--seed", "0", "--speculation", "0"],
        "random-search": ["--optimizer", "random-search", "--set", "num_candidate_programs=4"],
        "copro": ["--optimizer", "copro", "--set", "breadth=6", "--set", "depth=3",
                  "--set", "init_temperature=1.0"],
        "mipro-v2": ["--optimizer", "mipro-v2", "--auto", "light", "--seed", "0"],
        "mipro-v2-seq": ["--optimizer", "mipro-v2", "--auto", "light", "--seed", "0",
                         "--set", "parallel_trials=1"],
    }
    for name in args.optimizers.split(","):
        program = os.path.join(tmp, name + ".json")
        cmd = [args.bin, "compile"] + common + configs[name] + [
            "--train", paths["train"], "--val", paths["val"], "--out", program]
        stats(reset=True)
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        s = stats()
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            results["rhai"][name] = {"error": proc.stderr[-2000:]}
            continue
        calls = s["total_requests"]
        dev = evaluate(program)
        saved = json.load(open(program))
        instr = saved["qa"]["signature"]["instructions"]
        ideal = calls * args.latency_ms / 1000 / args.threads
        results["rhai"][name] = {"dev_after": dev, "compile_wall_s": round(wall, 2), "compile_calls": calls,
                                 "ideal_wall_s": round(ideal, 2), "concurrent_max": s.get("concurrent_max"),
                                 "demos": len(saved["qa"]["demos"]), "instruction": instr,
                                 "summary": proc.stdout.strip().splitlines()[-6:]}
        print(f"dspy-rhai {name}: dev {results['rhai']['zero_shot_dev']:.1f} -> {dev:.1f}; compile {wall:.1f}s "
              f"(ideal {ideal:.1f}s), {calls} LM calls, max {s.get('concurrent_max')} in flight; "
              f"demos {len(saved['qa']['demos'])}; instruction {instr[:100]!r}", flush=True)
    mock.terminate()
    if not args.skip_python:
        out = os.path.join(tmp, "python.json")
        subprocess.run([args.python, os.path.join(SHARED, "bench", "dspy_instruction_baseline.py"),
                        "--optimizers", "mipro,copro", "--latency-ms", str(args.latency_ms),
                        "--threads", str(args.threads), "--keys", args.keys, "--out", out], check=False)
        if os.path.exists(out):
            results["python"] = json.load(open(out))
    results["loadavg_end"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
