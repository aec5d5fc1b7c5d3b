#!/usr/bin/env python3
"""Time from Ctrl-C to `interrupted` during a REPL call (issue 13 item 1).

Usage: DSPY_LM=openai/mock DSPY_API_BASE=http://127.0.0.1:PORT/v1 python3 benches/repl_ctrl_c.py \
           BINARY SCRIPT EXPR [extra repl args...]
Runs `BINARY repl SCRIPT` in a pseudo-terminal (util-linux `script`), types EXPR, presses
Ctrl-C one second later and prints how long `interrupted` took and whether the session
still answers `1 + 1`.
"""
binary, script, expr, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
cmd = " ".join(["exec", binary, "repl", script] + extra)  # exec: no waiting shell takes the Ctrl-C
p = subprocess.Popen(["script","-qfec",cmd,"/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, TERM="xterm", HOME="/tmp/x"))
buf=bytearray(); lock=threading.Lock()
def rd():
    while True:
        b=os.read(p.stdout.fileno(),4096)
        if not b: break
        with lock: buf.extend(b)
threading.Thread(target=rd,daemon=True).start()
def wait(needle, t=60):
    end=time.time()+t
    while time.time()<end:
        with lock:
            if needle in buf: return True
        time.sleep(0.005)
    return False
def typ(s):
    for c in s: p.stdin.write(bytes([c])); p.stdin.flush(); time.sleep(0.02)
assert wait(b"dspy> ")
typ(expr.encode()+b"\r"); time.sleep(1.0)
with lock: mark=len(buf)
t0=time.time(); p.stdin.write(b"\x03"); p.stdin.flush()
end=time.time()+60; ok=False
while time.time()<end:
    with lock:
        if b"interrupted" in buf[mark:]: ok=True; break
    time.sleep(0.002)
dt=time.time()-t0
time.sleep(1); typ(b"1 + 1\r"); alive=wait(b"=> 2", 10)
typ(b":quit\r"); time.sleep(0.5); p.kill()
print(f"interrupted={ok} after {dt*1000:.0f} ms; session alive={alive}")
