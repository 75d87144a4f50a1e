#!/usr/bin/env python3
"""A TCP relay in front of a Kafka listener that loses Produce acknowledgements.

  kafka_relay.py LISTEN_PORT BROKER_PORT CUTS READY

Forwards every connection on 127.0.0.1:LISTEN_PORT to 127.0.0.1:BROKER_PORT
byte for byte, reading the Kafka framing (4-byte size, then for requests
api_key, api_version, correlation_id; for responses correlation_id) to know
which response answers a Produce request. The first CUTS Produce responses
are not forwarded: the relay closes both sides instead, after the broker has
written the records. The producer sees its request fail in flight and sends
it again: a producer that is not idempotent writes those records twice.
Prints "cut CORRELATION_ID" per cut (flushed); creates READY once listening.
"""
import socket
import struct
import sys
import threading

PRODUCE = 0

listen_port, broker_port, cuts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ready = sys.argv[4]
lock = threading.Lock()


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:  # the other thread closed it, or the peer reset it
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def frames(sock):
    """Each frame (size prefix included) until the peer closes."""
    while True:
        head = read_exact(sock, 4)
        if head is None:
            return
        body = read_exact(sock, struct.unpack(">i", head)[0])
        if body is None:
            return
        yield head + body


def close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def upstream(client, broker, apis):
    for frame in frames(client):
        api_key, _, correlation = struct.unpack(">hhi", frame[4:12])
        apis[correlation] = api_key
        try:
            broker.sendall(frame)
        except OSError:
            break
    close(client, broker)


def downstream(client, broker, apis):
    global cuts
    for frame in frames(broker):
        correlation = struct.unpack(">i", frame[4:8])[0]
        if apis.pop(correlation, None) == PRODUCE:
            with lock:
                cut = cuts > 0
                cuts -= 1
            if cut:
                print(f"cut {correlation}", flush=True)
                break
        try:
            client.sendall(frame)
        except OSError:
            break
    close(client, broker)


def main():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(16)
    open(ready, "w").close()
    while True:
        client, _ = server.accept()
        broker = socket.create_connection(("127.0.0.1", broker_port))
        apis = {}
        for f in (upstream, downstream):
            threading.Thread(target=f, args=(client, broker, apis), daemon=True).start()


main()
