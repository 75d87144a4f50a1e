#!/usr/bin/env python3
"""Bounded loopback load: writes COUNT buffers of SIZE bytes over one TCP
connection to a reader on 127.0.0.1:PORT, then exits.

  loopback_load.py PORT SIZE COUNT
"""
import socket
import sys
import threading
import time

port, size, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)


def sink():
    c, _ = srv.accept()
    while c.recv(1 << 20):
        pass


t = threading.Thread(target=sink)
t.start()
c = socket.create_connection(("127.0.0.1", port))
buf = b"x" * size
t0 = time.time()
for _ in range(count):
    c.sendall(buf)
c.close()
t.join()
print(f"offered {size * count / 1e6:.1f} MB in {time.time() - t0:.2f}s", file=sys.stderr)
