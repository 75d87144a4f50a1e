#!/usr/bin/env python3
"""Test peer: many threads blocked in recv(2) at the same time, as in a
thread-per-connection server. One process opens N loopback connections,
starts a thread per client socket that blocks in recv, waits until every
thread sleeps in the kernel's socket wait, then sends message i on server
socket i. Each thread reads its whole message. Prints one JSON object:
{"port": P, "conns": [[client local port, message], ...]} (message as text).

  blocked_readers.py --port P --count N --size BYTES
"""
import argparse
import json
import os
import socket
import threading
import time


def message(i: int, size: int) -> bytes:
    head = f"reader-{i:04d}-".encode()
    return head + bytes(ord("a") + (i + k) % 26 for k in range(size - len(head)))


def sleeping_in_recv(tids) -> int:
    n = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/wchan") as f:
                if f.read().strip() in ("wait_woken", "sk_wait_data", "sk_wait_event"):
                    n += 1
        except OSError:
            pass
    return n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--size", type=int, default=1000)
    a = p.parse_args()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", a.port))
    listener.listen(a.count)
    clients, servers = [], []
    for _ in range(a.count):
        c = socket.create_connection(("127.0.0.1", a.port))
        s, _ = listener.accept()
        clients.append(c)
        servers.append(s)

    got = [b""] * a.count
    tids = []

    def reader(i: int) -> None:
        tids.append(threading.get_native_id())
        buf = b""
        while len(buf) < a.size:
            chunk = clients[i].recv(a.size - len(buf))
            if not chunk:
                break
            buf += chunk
        got[i] = buf

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(a.count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sleeping_in_recv(list(tids)) < a.count and time.monotonic() < deadline:
        time.sleep(0.05)
    for i, s in enumerate(servers):
        s.sendall(message(i, a.size))
    for t in threads:
        t.join(60)
    conns = []
    for i, c in enumerate(clients):
        assert got[i] == message(i, a.size), f"reader {i} got {len(got[i])} bytes"
        conns.append([c.getsockname()[1], message(i, a.size).decode()])
    for sock in clients + servers + [listener]:
        sock.close()
    print(json.dumps({"port": a.port, "pid": os.getpid(), "conns": conns}))


if __name__ == "__main__":
    main()
