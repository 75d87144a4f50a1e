"""Process churn for tests/tests/process_churn_bpf.rs (issue 27): starts
short-lived clients (tests/programs/churn_client.c) at a fixed rate, half
plain HTTP and half TLS, each TLS client from a fresh copy of the client and
libssl (a new copy every --per-copy TLS clients, each copy deleted once its
clients are done, as CI runners and `go run` leave files behind).

The first client of each copy waits for a go-ahead file, given once the
sensor's log says it probed that copy's libssl (a libssl mapped after the
sensor started is probed some ms after the mapping: a client that fast would
otherwise lose its first call, a documented limit). Meanwhile TLS clients
keep coming from the previous copy.

After --warm clients the driver waits for --warm-file to appear (the test
measures the sensor's memory there), then runs the rest. Bounded: --count
clients, at most --in-flight at once, --deadline seconds.

Writes --report: {"clients": [[pid, "plain"|"tls", path, exit status]…],
"seconds": churn wall time, "copies": copies made}.
"""

import argparse
import json
import os
import shutil
import subprocess
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--client", required=True, help="churn_client built with rpath $ORIGIN")
    p.add_argument("--libdir", required=True, help="where libssl.so.3 and libcrypto.so.3 are")
    p.add_argument("--work", required=True, help="directory for the copies")
    p.add_argument("--plain-port", required=True)
    p.add_argument("--tls-port", required=True)
    p.add_argument("--sensor-log", required=True)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--warm", type=int, required=True)
    p.add_argument("--warm-reached", required=True, help="written after --warm clients ended")
    p.add_argument("--warm-file", required=True, help="the churn goes on once this exists")
    p.add_argument("--per-copy", type=int, default=50)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--deadline", type=float, default=240)
    p.add_argument("--report", required=True)
    a = p.parse_args()

    started = time.monotonic()
    clients = []  # [pid, kind, path, status]
    running = {}  # Popen -> (index in clients, copy dir or None)
    users = {}  # copy dir -> clients of it still running
    state = {"copies": 0, "current": None, "next": None}

    def new_copy():
        d = os.path.join(a.work, f"copy{state['copies']}")
        state["copies"] += 1
        os.mkdir(d)
        shutil.copy(a.client, os.path.join(d, "churn_client"))
        for lib in ("libssl.so.3", "libcrypto.so.3"):
            shutil.copy(os.path.join(a.libdir, lib), os.path.join(d, lib))
        return d

    def spawn(kind, copy, go=None):
        i = len(clients)
        path = f"/f.txt?c={i}"
        exe = os.path.join(copy, "churn_client") if copy else a.client
        port = a.tls_port if kind == "tls" else a.plain_port
        argv = [exe, kind, port, path] + ([go] if go else [])
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        clients.append([proc.pid, kind, path, None])
        running[proc] = (i, copy)
        if copy:
            users[copy] = users.get(copy, 0) + 1

    def reap():
        for proc in [q for q in running if q.poll() is not None]:
            i, copy = running.pop(proc)
            clients[i][3] = proc.returncode
            if copy:
                users[copy] -= 1
                if users[copy] == 0 and copy not in (state["current"], (state["next"] or {}).get("dir")):
                    shutil.rmtree(copy)
                    del users[copy]

    def probed(d):
        try:
            with open(a.sensor_log, errors="replace") as f:
                needle = os.path.join(d, "libssl.so.3")
                return any("mapped after start-up" in l and needle in l for l in f)
        except OSError:
            return False

    def advance_copies(tls_served, new=True):
        """Starts the next copy's first client when the current copy has
        served --per-copy (with `new`); makes it current once the sensor
        probed it."""
        n = state["next"]
        if new and n is None and (state["current"] is None or tls_served[0] >= a.per_copy):
            d = new_copy()
            go = d + ".go"
            spawn("tls", d, go)
            state["next"] = {"dir": d, "go": go}
            if state["current"] is None:
                # The very first copy: nothing to go on with meanwhile.
                while not probed(d):
                    check_deadline()
                    time.sleep(0.005)
        n = state["next"]
        if n is not None and probed(n["dir"]):
            open(n["go"], "w").close()
            old = state["current"]
            state["current"], state["next"] = n["dir"], None
            tls_served[0] = 0
            if old and users.get(old, 0) == 0:
                shutil.rmtree(old)
                users.pop(old, None)

    def check_deadline():
        if time.monotonic() - started > a.deadline:
            raise SystemExit(f"churn.py: not done within {a.deadline} s")

    interval = 1.0 / a.rate
    tls_served = [0]
    next_at = time.monotonic()
    warm_done = False
    churn_started = None
    launched = 0
    while launched < a.count:
        check_deadline()
        reap()
        advance_copies(tls_served)
        if launched == a.warm and not warm_done:
            while running:
                reap()
                advance_copies(tls_served, new=False)
                time.sleep(0.005)
            open(a.warm_reached, "w").close()
            while not os.path.exists(a.warm_file):
                check_deadline()
                time.sleep(0.01)
            warm_done = True
            churn_started = time.monotonic()
            next_at = churn_started
        now = time.monotonic()
        if now < next_at or len(running) >= a.in_flight:
            time.sleep(min(max(next_at - now, 0), 0.002) or 0.0005)
            continue
        next_at += interval
        if launched % 2 == 0:
            spawn("plain", None)
        else:
            spawn("tls", state["current"])
            tls_served[0] += 1
        launched += 1
    while running or state["next"] is not None:
        check_deadline()
        reap()
        advance_copies(tls_served, new=False)
        time.sleep(0.005)
    seconds = time.monotonic() - (churn_started or started)
    for d in list(users):
        if users[d] == 0:
            shutil.rmtree(d, ignore_errors=True)
    with open(a.report, "w") as f:
        json.dump({"clients": clients, "seconds": seconds, "copies": state["copies"]}, f)


if __name__ == "__main__":
    main()
