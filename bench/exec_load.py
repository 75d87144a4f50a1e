"""Starts N never-seen programs (fresh copies of /bin/true) at RATE a second
and prints the wall time of each run (fork, exec, exit) in ms: p50, p99,
max and how many took over 500 ms. A command after N and RATE is run and
timed once first (`first_ms`).
    python3 bench/exec_load.py N RATE [COMMAND...]"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

n, rate = int(sys.argv[1]), float(sys.argv[2])
out = {}
if sys.argv[3:]:
    t = time.monotonic()
    subprocess.run(sys.argv[3:], check=True)
    out["first_ms"] = round((time.monotonic() - t) * 1e3, 1)
d = tempfile.mkdtemp(prefix="nettap-exec-")
times = []
try:
    for i in range(n):
        p = os.path.join(d, f"true{i}")
        shutil.copy("/bin/true", p)
        t = time.monotonic()
        subprocess.run([p], check=True)
        times.append((time.monotonic() - t) * 1e3)
        time.sleep(max(0.0, 1 / rate - times[-1] / 1e3))
finally:
    shutil.rmtree(d)
times.sort()
q = lambda f: round(times[min(len(times) - 1, int(f * len(times)))], 2)
out.update(p50=q(0.5), p99=q(0.99), max=round(times[-1], 2), over_500ms=sum(t > 500 for t in times))
print(out)
