#!/usr/bin/env python3
"""Test peer for nettap's busy-node tests: N TCP connections held open at
once, with two small exchanges on each.

  many_conns.py --count N --port P [--addr 127.0.0.1] [--hold SECS]

The server (a forked child) listens on ADDR:P; the client (this process)
opens all N connections one after the other and on each sends
`open-<i>` and reads `hello-<i>`. Once all N are open it sends `again-<i>`
on each and reads `back-<i>` (in the same order, so the oldest connections
are the ones idle longest), holds them all for SECS, then closes them; the
server reads each to its end and closes its side. Payloads are
`<word>-<i>` with i zero-padded to 6 digits and a newline.

Prints one JSON line: {"client_pid", "server_pid", "ports": [client port of
connection i, ...]}.
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
    a = ap.parse_args()
    raise_fd_limit(a.count)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((a.addr, a.port))
    listener.listen(4096)
    server = os.fork()
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
    for s in conns:
        s.close()
    _, status = os.waitpid(server, 0)
    if status != 0:
        sys.exit(f"server failed ({status})")
    print(json.dumps({"client_pid": os.getpid(), "server_pid": server, "ports": ports}))


if __name__ == "__main__":
    main()
