#!/usr/bin/env python3
"""Test peer for nettap's busy-node tests: N TCP connections held open at
once, with two small exchanges on each.

  many_conns.py --count N --port P [--addr 127.0.0.1] [--hold SECS]
                [--role both|server|client] [--ready FILE] [--hold-file FILE]

The server (a forked child, or with --role server this process, which
creates FILE once listening) listens on ADDR:P; the client (this process,
or with --role client only that) opens all N connections one after the
other and on each sends
`open-<i>` and reads `hello-<i>`. Once all N are open it sends `again-<i>`
on each and reads `back-<i>` (in the same order, so the oldest connections
are the ones idle longest), holds them all for SECS (with --hold-file, until
FILE exists, after creating FILE.held), then closes them; the
server reads each to its end and closes its side. Payloads are
`<word>-<i>` with i zero-padded to 6 digits and a newline.

The client prints one JSON line: {"client_pid", "server_pid" (absent with
--role client), "ports": [client port of connection i, ...]}.
"""
import argparse
import json
import os
import resource
import socket
import sys
import time


def msg(word: str, i: int) -> bytes:
    return f"{word}-{i:06d}\n".encode()


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"peer closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 64
    if soft < want:
        # Root may raise the hard limit up to fs.nr_open.
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))


def serve(listener: socket.socket, count: int) -> None:
    conns = []
    for i in range(count):
        c, _ = listener.accept()
        got = recv_exact(c, len(msg("open", i)))
        assert got == msg("open", i), (i, got)
        c.sendall(msg("hello", i))
        conns.append(c)
    for i, c in enumerate(conns):
        got = recv_exact(c, len(msg("again", i)))
        assert got == msg("again", i), (i, got)
        c.sendall(msg("back", i))
    for c in conns:
        assert c.recv(1) == b""
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--hold", type=float, default=0.5)
    ap.add_argument("--role", choices=["both", "server", "client"], default="both")
    ap.add_argument("--ready")
    ap.add_argument("--hold-file")
    a = ap.parse_args()
    raise_fd_limit(a.count)
    server = None
    if a.role != "client":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((a.addr, a.port))
        listener.listen(4096)
        if a.ready:
            open(a.ready, "w").close()
        server = os.fork() if a.role == "both" else 0
        if server == 0:
            try:
                serve(listener, a.count)
            except BaseException as e:  # the parent reports the failure
                print(f"server: {e!r}", file=sys.stderr)
                os._exit(1)
            os._exit(0)
        listener.close()
    conns = []
    for i in range(a.count):
        s = socket.create_connection((a.addr, a.port))
        s.sendall(msg("open", i))
        assert recv_exact(s, len(msg("hello", i))) == msg("hello", i)
        conns.append(s)
    for i, s in enumerate(conns):
        s.sendall(msg("again", i))
        assert recv_exact(s, len(msg("back", i))) == msg("back", i)
    ports = [s.getsockname()[1] for s in conns]
    time.sleep(a.hold)
    if a.hold_file:
        open(a.hold_file + ".held", "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(a.hold_file):
            if time.monotonic() > deadline:
                sys.exit("no go-ahead to close")
            time.sleep(0.05)
    for s in conns:
        s.close()
    out = {"client_pid": os.getpid(), "ports": ports}
    if server is not None:
        _, status = os.waitpid(server, 0)
        if status != 0:
            sys.exit(f"server failed ({status})")
        out["server_pid"] = server
    print(json.dumps(out))


if __name__ == "__main__":
    main()
