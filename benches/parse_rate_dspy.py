# Python DSPy 3.4.1 side of benches/parse_rate.rs: the same questions, server,
# temperature 0, max_tokens 128 and no cache; ChatAdapter without its fallback,
# then JSONAdapter, both called as DSPy calls them (format, LM call, parse).
# Usage: /work/shared-bench-venv/bin/python benches/parse_rate_dspy.py http://127.0.0.1:<port>/v1 N
import json, sys, time, os
import dspy
from dspy.utils.exceptions import AdapterParseError

base, n = sys.argv[1], int(sys.argv[2])
data = os.environ.get("PARSE_RATE_DATA", os.path.join(os.path.dirname(__file__), "../../shared/data/hotpotqa_dev.jsonl"))
qs = [json.loads(l)["question"] for l in open(data)][:n]
lm = dspy.LM("openai/smollm2", api_base=base, api_key="x", temperature=0.0, max_tokens=128, cache=False, num_retries=0)
chat = dspy.ChatAdapter(use_json_adapter_fallback=False)
js = dspy.JSONAdapter()
print(f"load average at start {open('/proc/loadavg').read().split()[:3]}")
sigs = ["question -> answer", "question -> answer, confidence: float"]
tally = {s: [0, 0, 0, 0] for s in sigs}  # total, chat ok, json ok, failed
errs = {s: [] for s in sigs}
t0 = time.time()
for i, q in enumerate(qs):
    for sig in sigs:
        s = dspy.Signature(sig); ok = False
        for step, ad in enumerate([chat, js]):
            try:
                ad(lm, {}, s, [], {"question": q})
                tally[sig][1 + step] += 1; ok = True; break
            except AdapterParseError as e:
                if step == 1 and len(errs[sig]) < 3: errs[sig].append(str(e).splitlines()[0])
            except Exception as e:
                print(f"question {i}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        tally[sig][0] += 1; tally[sig][3] += not ok
    print(f"after {i+1} questions, {time.time()-t0:.0f}s:", flush=True)
    for sig in sigs:
        t, c, j, f = tally[sig]
        print(f"  {sig:<40} n={t}  ChatAdapter {c}/{t} ({100*c/t:.0f}%)  then JSONAdapter {j}/{t-c} more  -> {t-f}/{t} ({100*(t-f)/t:.0f}%) parsed, {f} failed", flush=True)
for sig in sigs:
    for e in errs[sig]: print(f"  {sig}: e.g. {e}", flush=True)
