#!/usr/bin/env python3
"""Workloads for the real-node tests (tests/tests/k8s_node_bpf):

  node_load.py server --port P [--port P2]...
      HTTP/1.1 on 0.0.0.0: POST answers `ok:` + the request body.
  node_load.py client --connect IP --port P [--port P2]... --log FILE
                      [--count N] [--interval S] [--size B] [--run ID]
                      [--until-file F] [--max-seconds S]
      N POSTs, each on a new connection (ports taken in turn), body
      `nettap-nonce-<run>-<i>-` padded with `x` to B bytes; one JSON line per
      request to FILE (i, port, start time, ok), then a `done` line with the
      failures. Bounded by N and by --max-seconds.
  node_load.py hostile
      What a uid-0 process of a workload pod can reach of the sensor's node
      files: prints one JSON object.
"""
import argparse
import http.client
import http.server
import json
import os
import socket
import stat
import sys
import threading
import time


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = b"ok:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def server(args) -> None:
    servers = [http.server.ThreadingHTTPServer(("0.0.0.0", p), Echo) for p in args.port]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def nonce_body(run: str, i: int, size: int) -> bytes:
    b = f"nettap-nonce-{run}-{i}-".encode()
    return b + b"x" * max(0, size - len(b))


def client(args) -> None:
    failures = 0
    end = time.monotonic() + args.max_seconds
    with open(args.log, "a", buffering=1) as log:
        for i in range(args.count):
            if time.monotonic() > end or (args.until_file and os.path.exists(args.until_file)):
                break
            port = args.port[i % len(args.port)]
            body = nonce_body(args.run, i, args.size)
            start = time.time()
            ok = False
            try:
                c = http.client.HTTPConnection(args.connect, port, timeout=10)
                c.request("POST", f"/load/{i}", body=body)
                r = c.getresponse()
                ok = r.status == 200 and r.read() == b"ok:" + body
                c.close()
            except OSError as e:
                print(f"request {i}: {e}", file=sys.stderr)
            failures += not ok
            log.write(json.dumps({"i": i, "port": port, "t": start, "ok": ok}) + "\n")
            if args.interval:
                time.sleep(args.interval)
        log.write(json.dumps({"done": True, "failures": failures}) + "\n")


def hostile() -> None:
    """Everything of the sensor's a pod could use: its node paths, any
    socket or records file on the filesystem, the mounts it was given."""
    out = {"uid": os.getuid(), "paths": {}, "sockets": [], "jsonl": [], "mounts": [], "unix": []}
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            out["cap_eff"] = line.split()[1]
    for p in ["/run/nettap", "/run/nettap/api", "/run/nettap/api/api.sock", "/var/lib/nettap",
              "/var/lib/nettap/records", "/host"]:
        out["paths"][p] = os.path.exists(p)
    # sysfs has these directories; what matters is that nothing is in them.
    for p in ["/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/debug"]:
        try:
            out["listing:" + p] = os.listdir(p)
        except OSError as e:
            out["listing:" + p] = type(e).__name__
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("/run/nettap/api/api.sock")
        out["api_connect"] = "connected"
    except OSError as e:
        out["api_connect"] = type(e).__name__
    for root, dirs, files in os.walk("/"):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
        for f in files:
            p = os.path.join(root, f)
            try:
                m = os.lstat(p).st_mode
            except OSError:
                continue
            if stat.S_ISSOCK(m):
                out["sockets"].append(p)
            if f.endswith(".jsonl") or f.startswith("records-"):
                out["jsonl"].append(p)
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        # mount root (the source's path) and where it is mounted
        out["mounts"].append([f[3], f[4], f[f.index("-") + 1]])
    for line in list(open("/proc/net/unix"))[1:]:
        f = line.split()
        if len(f) > 7:
            out["unix"].append(f[7])
    print(json.dumps(out))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client", "hostile"])
    p.add_argument("--port", type=int, action="append", default=[])
    p.add_argument("--connect")
    p.add_argument("--log")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--run", default="0")
    p.add_argument("--until-file")
    p.add_argument("--max-seconds", type=float, default=120.0)
    args = p.parse_args()
    {"server": lambda: server(args), "client": lambda: client(args), "hostile": hostile}[args.mode]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
